"""``chunkstore`` commands of the integrity area (one ``add_<command>`` each): verify, repair."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from chunkstore.cli.options import (
    add_cluster_options,
    add_command,
    add_quiet,
    cluster,
    positive_int,
)
from chunkstore.errors import IntegrityError


def _verify(args: argparse.Namespace) -> str:
    from chunkstore.integrity import verify

    with cluster(args) as address:
        report = verify(args.store, workers=None if address else args.workers,
                        scheduler=address)
    text = json.dumps(report.to_dict(), indent=1) if args.json else report.format()
    if report.ok:
        return text
    sys.stdout.write(text + "\n")  # the full listing is the result; the exit status says bad
    sys.stdout.flush()
    raise IntegrityError(f"store {args.store!r} has {len(report.problems)} problem(s), listed "
                         "above; `chunkstore repair CONFIG` rewrites bad or missing chunks")


def add_verify(sub: Any) -> None:
    p = add_command(sub, "verify", "check every chunk, shape, attr and count of a store",
                    "Read every chunk of every array in parallel (local processes, or a "
                    "Dask cluster with --scheduler/--cluster) and check that it exists, "
                    "decodes and passes its crc32c checksum; check that shapes, n_samples, "
                    "split arrays, the attrs digest and the stats counts agree. Exit 0 when "
                    "clean, 1 with every problem listed (array, chunk key, rows, writer).")
    p.add_argument("store", help="path or URL of the store")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    add_cluster_options(p, "processes reading chunks (default: the CPU count); with --cluster "
                           "local, the cluster's worker processes")
    p.set_defaults(run=_verify)


def _repair(args: argparse.Namespace) -> str:
    from chunkstore.pipeline import repair

    return repair(args.config, workers=args.workers, progress=not args.quiet).format()


def add_repair(sub: Any) -> None:
    p = add_command(sub, "repair", "rewrite a store's bad or missing chunks from the source",
                    "Verify the store of a config, then rewrite exactly the chunks found bad "
                    "or missing by rerunning the tasks (or, for a streaming store, the items) "
                    "that wrote them; resumable, and the result is byte-identical to a fresh "
                    "ingest.")
    p.add_argument("config", help="path of the YAML config the store was built from")
    p.add_argument("--workers", type=positive_int, default=None, metavar="N",
                   help="worker processes (default: ingest.workers, else the CPU count)")
    add_quiet(p)
    p.set_defaults(run=_repair)


COMMANDS: tuple[Callable[[Any], None], ...] = (add_verify, add_repair)
