"""``chunkstore`` commands of the grow area; each ``add_<command>`` registers one subcommand.

``append`` (rows after N), ``add-head`` (a new label head), ``log`` / ``tag`` / ``gc``
(versions).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from chunkstore.cli.options import add_cluster_options, add_command, add_quiet, cluster
from chunkstore.errors import UsageError


def _append(args: argparse.Namespace) -> str:
    from chunkstore.ingest.append import append

    if args.scheduler or args.cluster:
        with cluster(args) as address:
            summary = append(args.config, workers=args.workers, scheduler=address,
                             pool=args.pool)
    else:  # no Dask here: importing it would be ~0.1 s of a small append's fixed cost
        summary = append(args.config, workers=args.workers, pool=args.pool)
    return json.dumps(summary.to_dict(), indent=1) if args.json else summary.format()


def add_append(sub: Any) -> None:
    p = add_command(sub, "append", "append the rows of a config's source to its store",
                    "Add the rows of the config's source after the last row of its existing, "
                    "complete store (same features, heads, dtypes, chunking). Statistics and "
                    "every stored split are extended; old rows never move. Rerun the same "
                    "command to resume an interrupted append.")
    p.add_argument("config", help="YAML config: 'store' names the store, 'source' the new rows")
    add_cluster_options(p, "workers (default: ingest.workers, else the CPU count)")
    p.add_argument("--pool", choices=["auto", "threads", "processes"], default="auto",
                   help="where the write tasks run without --scheduler: auto (default) uses "
                        "threads of this process for a file source adding at most 192 MiB "
                        "of features (no worker start-up), else worker processes")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_quiet(p)
    p.set_defaults(run=_append)


def _add_head(args: argparse.Namespace) -> str:
    import numpy as np

    from chunkstore.pipeline import add_head

    if (args.config is None) == (args.labels is None) or (args.config and args.masks):
        raise UsageError("add-head takes --labels (and --masks) .npy files, or --config "
                         "HEAD.yaml whose source's items line up with the store's rows")
    if args.config is not None:
        return add_head(args.store, args.name, args.classes, source=args.config,
                        workers=args.workers, progress=not args.quiet).format()
    if args.classes is None:
        raise UsageError("add-head --labels needs --classes K")
    labels = np.load(args.labels, mmap_mode="r")
    masks = None if args.masks is None else np.load(args.masks, mmap_mode="r")
    return add_head(args.store, args.name, args.classes, labels, masks,
                    workers=args.workers, progress=not args.quiet).format()


def add_add_head(sub: Any) -> None:
    p = add_command(sub, "add-head", "add a label head (labels/<name>, masks/<name>)",
                    "Write a new head's labels (and masks) beside the existing arrays, chunk "
                    "by chunk in parallel; no existing chunk file changes. Rerun the same "
                    "command to resume.")
    p.add_argument("store", help="path of a complete store")
    p.add_argument("name", help="the new head's name")
    p.add_argument("--classes", type=int, default=None,
                   help="number of classes (with --config: taken from its schema)")
    p.add_argument("--labels", default=None, help=".npy file of N labels in [0, classes)")
    p.add_argument("--masks", default=None, help=".npy file (N, classes); default: all ones")
    p.add_argument("--config", default=None, metavar="HEAD.yaml",
                   help="instead of --labels/--masks: a config declaring the head in "
                        "schema.heads, whose source's items line up with the store's rows "
                        "(its items, in order; or as meta/source records them)")
    p.add_argument("--workers", type=int, default=None, help="worker processes")
    add_quiet(p)
    p.set_defaults(run=_add_head)


def _log(args: argparse.Namespace) -> str:
    from chunkstore.store import versions

    kept, tags = versions.log(args.store), versions.tags(args.store)
    if args.json:
        return json.dumps([{**v.to_dict(), "tags": sorted(t for t, i in tags.items()
                                                           if i == v.id)} for v in kept],
                          indent=1)
    names = {i: sorted(t for t, j in tags.items() if j == i) for i in tags.values()}
    lines = [f"{'version':8} {'time':25} {'rows':>12}  {'command':40} tags"]
    lines += [f"{v.id:8} {v.time:25} {v.n_samples:>12,}  {v.command[:40]:40} "
              f"{', '.join(names.get(v.id, []))}" for v in kept]
    return "\n".join(lines)


def add_log(sub: Any) -> None:
    p = add_command(sub, "log", "list the versions of a store",
                    "Every completed ingest, append, add-head, split and stats run records a "
                    "version: rows, splits and statistics as they were.")
    p.add_argument("store", help="path of a store")
    p.add_argument("--json", action="store_true", help="print the versions as JSON")
    p.set_defaults(run=_log)


def _tag(args: argparse.Namespace) -> str:
    from chunkstore.store import versions

    v = versions.tag(args.store, args.name, args.version)
    return f"tagged version {v.id} ({v.n_samples:,} rows, {v.time}) as {args.name!r}"


def add_tag(sub: Any) -> None:
    p = add_command(sub, "tag", "name a version of a store (kept by gc)")
    p.add_argument("store", help="path of a store")
    p.add_argument("name", help="the tag, e.g. paper-2026")
    p.add_argument("--version", default=None, help="version id or tag (default: the latest)")
    p.set_defaults(run=_tag)


def _gc(args: argparse.Namespace) -> str:
    from chunkstore.store import versions

    from chunkstore.store.journal import StoreLock  # isort: skip

    with StoreLock(args.store):
        done = versions.gc(args.store)
    return (f"removed {done['versions_removed']} untagged versions and "
            f"{done['blobs_removed']} unreferenced copies; kept {done['versions_kept']} "
            "(every tagged version and the latest)")


def add_gc(sub: Any) -> None:
    p = add_command(sub, "gc", "drop untagged old versions and the copies only they used")
    p.add_argument("store", help="path of a store")
    p.set_defaults(run=_gc)


COMMANDS: tuple[Callable[[Any], None], ...] = (add_append, add_add_head, add_log, add_tag,
                                               add_gc)
