"""Thin command line: each command parses its arguments and calls one public function.

Errors print their message and exit 1; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from chunkstore._version import __version__
from chunkstore.errors import ChunkstoreError
from chunkstore.runtime.messages import to_stderr


def _cmd_ingest(args: argparse.Namespace) -> None:
    from chunkstore.pipeline import ingest

    summary = ingest(args.config, workers=args.workers, overwrite=args.overwrite,
                     progress=not args.quiet, scheduler=args.scheduler, cluster=args.cluster)
    print(summary.format())


def _cmd_stats(args: argparse.Namespace) -> None:
    from chunkstore.runtime.dask import dask_scheduler
    from chunkstore.stats.compute import compute_stats

    with dask_scheduler(args.scheduler, args.cluster, args.workers) as address:
        stats = compute_stats(args.store, split=args.split, splits=args.splits, bins=args.bins,
                              correlation=not args.no_correlation, scheduler=address,
                              progress=not args.quiet)
    print(stats.format())


def _cmd_split(args: argparse.Namespace) -> None:
    from chunkstore.runtime.dask import dask_scheduler
    from chunkstore.splits.write import run_split

    with dask_scheduler(args.scheduler, args.cluster, args.workers) as address:
        summary = run_split(args.store, method=args.method, fractions=args.fractions,
                            seed=args.seed, by=args.by, name=args.name, k=args.k,
                            group=args.group, overwrite=args.overwrite, scheduler=address)
    print(summary.format())


def _cmd_export(args: argparse.Namespace) -> None:
    from chunkstore.interop.export import export

    summary = export(args.store, args.out, format=args.format, split=args.split,
                     splits=args.splits, compression=args.compression, level=args.level,
                     overwrite=args.overwrite)
    print(summary.format())


def _cmd_info(args: argparse.Namespace) -> None:
    import json

    from chunkstore.report.info import store_info

    info = store_info(args.store, names=args.names, top=args.top)
    print(json.dumps(info.to_dict(), indent=1) if args.json else info.format())


def _cmd_report(args: argparse.Namespace) -> None:
    from chunkstore.report.plots import write_report

    print(write_report(args.store, args.out, features=args.features, scope=args.scope).format())


def _add_cluster_options(p: argparse.ArgumentParser, workers: bool = True) -> None:
    """``--scheduler ADDR`` / ``--cluster local`` (and ``--workers``), shared by ingest, stats
    and split."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--scheduler", default=None,
                   help="run on the dask.distributed cluster at this address, e.g. "
                        "tcp://host:8786 (the dashboard link is printed)")
    g.add_argument("--cluster", choices=["local"], default=None,
                   help="start a dask.distributed LocalCluster of --workers processes (one "
                        "thread each) for this command")
    if workers:
        p.add_argument("--workers", type=int, default=None,
                       help="LocalCluster size with --cluster local (default: CPU count)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chunkstore", description=__doc__)
    parser.add_argument("--version", action="version", version=f"chunkstore {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("ingest", help="build or resume a store from a YAML config")
    p.add_argument("config", help="path of the YAML config")
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes (default: ingest.workers, else CPU count)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a store that was built from a different config")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_cluster_options(p, workers=False)
    p.set_defaults(func=_cmd_ingest)

    p = sub.add_parser("stats", help="compute exact statistics of a store (or one split) with "
                                     "Dask and write stats/<scope>/")
    p.add_argument("store", help="path of a complete store")
    p.add_argument("--split", default=None,
                   help="only this split's rows, e.g. train, looked up in --splits; writes "
                        "stats/<split> (default: all rows, writes stats/all)")
    p.add_argument("--splits", default="default",
                   help="split array holding --split's codes: splits/SPLITS (default: default); "
                        "another array writes stats/<SPLITS>/<split>")
    p.add_argument("--bins", type=int, default=32,
                   help="histogram bins per feature, also used for mutual information "
                        "(default: 32)")
    p.add_argument("--no-correlation", action="store_true",
                   help="skip the (F, F) correlation matrix")
    _add_cluster_options(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_stats)

    p = sub.add_parser("export", help="write a store (or one split) to HDF5 or to .npy/.npz "
                                      "files, streaming chunk by chunk")
    p.add_argument("store", help="path of a complete store")
    p.add_argument("out", help="OUT.h5 for hdf5; a directory for npy")
    p.add_argument("--format", choices=["hdf5", "npy"], default=None,
                   help="default: hdf5 if OUT ends in .h5/.hdf5, else npy")
    p.add_argument("--split", default=None,
                   help="export only this split's rows, e.g. train (names X_train.npy, ...)")
    p.add_argument("--splits", default="default",
                   help="split array holding --split's codes: splits/SPLITS (default: default)")
    p.add_argument("--compression", choices=["gzip", "lzf", "none"], default="gzip",
                   help="hdf5 only (default: gzip, readable by every HDF5 tool)")
    p.add_argument("--level", type=int, default=1, help="gzip level 0-9 (default: 1)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("split", help="write a train/val/test (or k-fold) split array "
                                     "splits/NAME, computed lazily over the store's chunks")
    p.add_argument("store", help="path of a complete store")
    p.add_argument("--method", default="random",
                   choices=["random", "group", "stratified", "stratified-group", "kfold",
                            "ordered"], help="how samples are assigned (default: random)")
    p.add_argument("--fractions", default=None,
                   help="parts and fractions summing to 1 (default: train=0.8,val=0.1,test=0.1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the assignment (default: 0)")
    p.add_argument("--by", default=None,
                   help="head whose classes to balance (stratified, stratified-group, kfold); "
                        "for ordered, an order key meta/NAME")
    p.add_argument("--name", default="default",
                   help="split array name: writes splits/NAME (default: default)")
    p.add_argument("--k", type=int, default=None, help="number of folds for --method kfold")
    p.add_argument("--group", action="store_true",
                   help="kfold only: keep each meta/group in one fold")
    p.add_argument("--overwrite", action="store_true", help="replace an existing splits/NAME")
    _add_cluster_options(p)
    p.set_defaults(func=_cmd_split)

    p = sub.add_parser("info", help="summarize a store: status (missing rows), shape, heads, "
                                    "chunking, codec, bytes, splits, statistics")
    p.add_argument("store", help="path of a store, complete or not")
    p.add_argument("--json", action="store_true",
                   help="print JSON (keys documented in the README) instead of text")
    p.add_argument("--names", type=int, default=5, help="feature names to show (default: 5)")
    p.add_argument("--top", type=int, default=5,
                   help="features per head by mutual information (default: 5)")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("report", help="write PNG plots and an index.html about a store "
                                      "(needs the 'report' extra: matplotlib)")
    p.add_argument("store", help="path of a store")
    p.add_argument("--out", required=True, help="output directory (created if absent)")
    p.add_argument("--features", type=int, default=12,
                   help="features shown in the distribution, correlation (F > 64) and MI plots "
                        "(default: 12)")
    p.add_argument("--scope", default="all",
                   help="statistics scope to plot, e.g. all or train (default: all)")
    p.set_defaults(func=_cmd_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    to_stderr()
    try:
        args.func(args)
    except (ChunkstoreError, KeyboardInterrupt) as e:
        if args.debug:
            raise
        msg = "interrupted; rerun the same command to resume" if isinstance(
            e, KeyboardInterrupt) else str(e)
        print(f"chunkstore: error: {msg}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
