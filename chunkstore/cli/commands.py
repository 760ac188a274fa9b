"""One small function per command: ``add_<command>`` declares its options, ``_<command>`` calls
one public function and returns the text to print on stdout (the app prints it)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from chunkstore.cli.options import (
    add_cluster_options,
    add_command,
    add_quiet,
    add_split_set,
    cluster,
    positive_int,
)
from chunkstore.errors import UsageError, VersionError

SPLIT_METHODS = ("random", "group", "stratified", "stratified-group", "kfold", "ordered")
SPLIT_SET_OF_PART = "split set holding --split's parts: the array splits/NAME"


def _ingest(args: argparse.Namespace) -> str:
    from chunkstore.pipeline import ingest

    return ingest(args.config, workers=args.workers, overwrite=args.overwrite,
                  progress=not args.quiet, scheduler=args.scheduler,
                  cluster=args.cluster).format()


def add_ingest(sub: Any) -> None:
    p = add_command(sub, "ingest", "build or resume a store from a YAML config",
                    "Build the store a YAML config describes, or resume an interrupted ingest: "
                    "completed tasks are kept, so rerunning the same command finishes the job.")
    p.add_argument("config", help="path of the YAML config")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a store that was built from a different config")
    add_cluster_options(p, "worker processes, or the size of --cluster local (default: "
                           "ingest.workers from the config, else the CPU count)")
    add_quiet(p)
    p.set_defaults(run=_ingest)


VERSION_HELP = ("read the store as it was at this version id or tag (`chunkstore log STORE` "
                "lists them): rows [0, N_v), its splits, statistics and heads")


def _stored_stats(args: argparse.Namespace) -> str:
    """``stats --version``: print the statistics a version saw; never recompute into it."""
    from chunkstore.store.stats_io import load_stats, scope_name
    from chunkstore.store.version_view import VersionView

    if args.bins is not None or args.no_correlation:
        raise UsageError("stats --version prints the statistics stored with that version; "
                         "it cannot recompute them (--bins/--no-correlation), because a "
                         "version never changes: run `chunkstore stats` without --version "
                         "to compute the latest")
    view = VersionView(args.store, args.version, warn=False)
    scope = scope_name(args.split, args.split_set)
    if scope not in view.version.stats:
        raise VersionError(f"version {view.version.id} of {args.store!r} holds no statistics "
                           f"for scope {scope!r}; it holds {sorted(view.version.stats) or 'none'}")
    v = view.version
    head = f"version {v.id} ({v.time}, {v.command!r}, {v.n_samples:,} rows)"
    return head + "\n" + load_stats(view, scope).format()


def _stats(args: argparse.Namespace) -> str:
    from chunkstore.stats.compute import DEFAULT_BINS, compute_stats

    if args.version is not None:
        return _stored_stats(args)
    with cluster(args) as address:
        return compute_stats(args.store, split=args.split, splits=args.split_set,
                             bins=DEFAULT_BINS if args.bins is None else args.bins,
                             correlation=False if args.no_correlation else None,
                             scheduler=address,
                             progress=not args.quiet).format()


def add_stats(sub: Any) -> None:
    p = add_command(sub, "stats", "compute a store's statistics (or one split's) with Dask",
                    "Compute exact statistics (moments, correlation, histograms, mutual "
                    "information) of every row, or of one split's rows, and write them to "
                    "stats/<scope>/ in the store.")
    p.add_argument("store", help="path or URL of a complete store")
    p.add_argument("--split", default=None, metavar="PART",
                   help="only this part's rows, e.g. train: writes stats/PART (default: all "
                        "rows, writes stats/all); a --split-set other than default writes "
                        "stats/NAME/PART")
    add_split_set(p, SPLIT_SET_OF_PART, old="--splits")
    p.add_argument("--bins", type=positive_int, default=None,
                   help="histogram bins per feature, also used for mutual information "
                        "(default: 32)")
    p.add_argument("--no-correlation", action="store_true",
                   help="skip the (F, F) correlation matrix")
    p.add_argument("--version", default=None, metavar="ID_OR_TAG",
                   help="print the statistics stored with this version id or tag (`chunkstore "
                        "log STORE` lists them) instead of computing; a version never changes")
    add_cluster_options(p, "threads of the local computation, or the size of --cluster local "
                           "(default: the CPU count)")
    add_quiet(p)
    p.set_defaults(run=_stats)


def _dedup_first(store: str, quiet: bool) -> str:
    """``split --dedup`` on a store without a current meta/duplicate_of: run the dedup."""
    from chunkstore.splits.duplicates import stale_reason
    from chunkstore.store.view import StoreView

    if stale_reason(StoreView(store, warn=False)) is None:
        return ""
    from chunkstore.dedup import dedup

    return dedup(store, progress=not quiet).format() + "\n"


def _split(args: argparse.Namespace) -> str:
    from chunkstore.splits.write import run_split

    first = _dedup_first(args.store, args.quiet) if args.dedup else ""
    with cluster(args) as address:
        return first + run_split(args.store, method=args.method, fractions=args.fractions,
                                 seed=args.seed, by=args.by, name=args.split_set, k=args.k,
                                 group=args.group, overwrite=args.overwrite, scheduler=address,
                                 progress=not args.quiet, dedup=args.dedup).format()


def add_split(sub: Any) -> None:
    p = add_command(sub, "split", "assign rows to train/val/test parts (or k folds)",
                    "Assign every row to a part (train/val/test, or k folds) and write the "
                    "codes as the split set splits/NAME, computed lazily over the store's "
                    "chunks; the same seed always gives the same assignment.")
    p.add_argument("store", help="path or URL of a complete store")
    p.add_argument("--method", default="random", choices=SPLIT_METHODS,
                   help="how rows are assigned (default: random)")
    p.add_argument("--fractions", default=None, metavar="PART=F,...",
                   help="parts and fractions summing to 1 (default: train=0.8,val=0.1,test=0.1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the assignment (default: 0)")
    p.add_argument("--by", default=None,
                   help="head whose classes to balance (stratified, stratified-group, kfold); "
                        "for ordered, an order key meta/NAME")
    add_split_set(p, "name of the split set to write: the array splits/NAME", old="--name")
    p.add_argument("--k", type=int, default=None, help="number of folds for --method kfold")
    p.add_argument("--group", action="store_true",
                   help="kfold only: keep each meta/group in one fold")
    p.add_argument("--dedup", action="store_true",
                   help="keep every exact duplicate group (meta/duplicate_of) in one part, "
                        "so no row has a copy in another part; runs `chunkstore dedup` first "
                        "if the store has no current meta/duplicate_of")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing split set of the same name")
    add_cluster_options(p, "threads of the local computation, or the size of --cluster local "
                           "(default: the CPU count)")
    add_quiet(p)
    p.set_defaults(run=_split)


def _export(args: argparse.Namespace) -> str:
    from chunkstore.interop.export import export

    # export shows no progress bar yet; --quiet is accepted so every long command takes it
    return export(args.store, args.out, format=args.format, split=args.split,
                  splits=args.split_set, compression=args.compression, level=args.level,
                  overwrite=args.overwrite, version=args.version).format()


def add_export(sub: Any) -> None:
    p = add_command(sub, "export", "write a store (or one split) to HDF5 or .npy files",
                    "Write a store, or one split's rows, to an HDF5 file or to .npy/.npz "
                    "files, streaming chunk by chunk (memory stays a few blocks).")
    p.add_argument("store", help="path or URL of a complete store")
    p.add_argument("out", help="OUT.h5 for hdf5; a directory for npy")
    p.add_argument("--format", choices=["hdf5", "npy"], default=None,
                   help="default: hdf5 if OUT ends in .h5/.hdf5, else npy")
    p.add_argument("--split", default=None, metavar="PART",
                   help="export only this part's rows, e.g. train (names X_train.npy, ...)")
    add_split_set(p, SPLIT_SET_OF_PART, old="--splits")
    p.add_argument("--compression", choices=["gzip", "lzf", "none"], default="gzip",
                   help="hdf5 only (default: gzip, readable by every HDF5 tool)")
    p.add_argument("--level", type=int, default=1, help="gzip level 0-9 (default: 1)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--version", default=None, metavar="ID_OR_TAG", help=VERSION_HELP)
    add_quiet(p)
    p.set_defaults(run=_export)


def _info(args: argparse.Namespace) -> str:
    from chunkstore.report.info import store_info

    info = store_info(args.store, names=args.names, top=args.top, version=args.version)
    return json.dumps(info.to_dict(), indent=1) if args.json else info.format()


def add_info(sub: Any) -> None:
    p = add_command(sub, "info", "summarize a store: status, shape, heads, splits, statistics",
                    "Summarize a store: status (and missing rows of an unfinished ingest), "
                    "shape, heads, chunking, codec, bytes, split sets and statistics.")
    p.add_argument("store", help="path or URL of a store, complete or not")
    p.add_argument("--json", action="store_true",
                   help="print JSON (keys documented in the README) instead of text")
    p.add_argument("--names", type=int, default=5, help="feature names to show (default: 5)")
    p.add_argument("--top", type=int, default=5,
                   help="features per head by mutual information (default: 5)")
    p.add_argument("--version", default=None, metavar="ID_OR_TAG", help=VERSION_HELP)
    p.set_defaults(run=_info)


def _report(args: argparse.Namespace) -> str:
    from chunkstore.report.plots import write_report

    return write_report(args.store, args.out, features=args.features, scope=args.scope).format()


def add_report(sub: Any) -> None:
    p = add_command(sub, "report", "write PNG plots and an index.html about a store",
                    "Write PNG plots of a store's statistics and splits, and an index.html "
                    "showing them (needs the 'report' extra: pip install 'chunkstore[report]').")
    p.add_argument("store", help="path or URL of a store")
    p.add_argument("--out", required=True, help="output directory (created if absent)")
    p.add_argument("--features", type=positive_int, default=12,
                   help="features shown in the distribution, correlation (F > 64) and MI plots "
                        "(default: 12)")
    p.add_argument("--scope", default="all",
                   help="statistics scope to plot, e.g. all or train (default: all)")
    p.set_defaults(run=_report)


def _config_schema(args: argparse.Namespace) -> str:
    from chunkstore.config import config_json_schema

    return json.dumps(config_json_schema(), indent=2)


def add_config_schema(sub: Any) -> None:
    p = add_command(sub, "config-schema", "print the JSON Schema of a YAML config",
                    "Print the JSON Schema of a chunkstore YAML config, for editors that "
                    "validate YAML (e.g. save it as chunkstore.schema.json and point the YAML "
                    "language server at it).")
    p.set_defaults(run=_config_schema)


COMMANDS: tuple[Callable[[Any], None], ...] = (
    add_ingest, add_stats, add_split, add_export, add_info, add_report, add_config_schema)
