"""Options several commands share, and how the command line refuses what it cannot do.

* :func:`add_command` — a subcommand parser with a one-line summary and ``--debug``.
* :func:`add_cluster_options` — ``--scheduler`` / ``--cluster`` / ``--workers``.
* :func:`add_split_set` — ``--split-set NAME``, one spelling in every command.
* :func:`renamed` — a hidden old option spelling that fails with the new one's name.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

from chunkstore.errors import UsageError
from chunkstore.runtime.dask import dask_scheduler

DEBUG_HELP = "show the traceback of an error (accepted before or after the command)"
DEFAULT_SPLIT_SET = "default"


def debug_option() -> argparse.ArgumentParser:
    """A parent parser holding ``--debug``, for the top level and every command.

    ``default=SUPPRESS``: a command's parser sets ``debug`` only when the flag is given after
    the command, so it never resets a ``--debug`` given before it.
    """
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help=DEBUG_HELP)
    return parent


def add_command(sub: Any, name: str, summary: str, description: str = ""
                ) -> argparse.ArgumentParser:
    """The parser of command ``name``: ``summary`` is its line in ``chunkstore --help``."""
    return sub.add_parser(name, help=summary, description=description or summary[:1].upper()
                          + summary[1:] + ".", parents=[debug_option()])


def positive_int(text: str) -> int:
    """argparse ``type=`` for counts such as ``--workers``: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, found {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, found {value}")
    return value


class _Renamed(argparse.Action):
    """An option that was renamed: using it is a usage error naming the new spelling."""

    def __init__(self, option_strings: Sequence[str], dest: str, *, new: str,
                 **kwargs: Any) -> None:
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kwargs)
        self.new = new

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        parser.error(f"{option_string} was renamed {self.new}: use {self.new} {values} (the split "
                     "set, the array splits/NAME, is named the same way in every command)")


def renamed(p: argparse.ArgumentParser, old: str, new: str) -> None:
    """Refuse option ``old`` (hidden from help) with a hint naming ``new``."""
    p.add_argument(old, action=_Renamed, new=new, dest=f"_renamed_{old.lstrip('-')}",
                   metavar="NAME")


def add_split_set(p: argparse.ArgumentParser, what: str, old: str) -> None:
    """``--split-set NAME`` (the array ``splits/NAME``); ``old`` is the refused old spelling."""
    p.add_argument("--split-set", default=DEFAULT_SPLIT_SET, metavar="NAME",
                   help=f"{what} (default: {DEFAULT_SPLIT_SET})")
    renamed(p, old, "--split-set")


def add_quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true",
                   help="no progress bars (messages such as a dashboard link still print)")


def add_cluster_options(p: argparse.ArgumentParser, workers_help: str) -> None:
    """``--scheduler ADDR`` | ``--cluster local``, and ``--workers N``."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--scheduler", default=None, metavar="ADDR",
                   help="run on the dask.distributed cluster at ADDR, e.g. tcp://host:8786 "
                        "(the dashboard link is printed)")
    g.add_argument("--cluster", choices=["local"], default=None,
                   help="start a dask.distributed LocalCluster of --workers processes (one "
                        "thread each) for this command")
    p.add_argument("--workers", type=positive_int, default=None, metavar="N", help=workers_help)


def cluster(args: argparse.Namespace) -> AbstractContextManager[str | None]:
    """The scheduler address to compute on for the cluster options (see ``dask_scheduler``).

    Raises
    ------
    UsageError
        ``--workers`` with ``--scheduler``: the cluster's size is set where it was started.
    """
    if args.scheduler and args.workers is not None:
        raise UsageError(f"--workers {args.workers} does not apply with --scheduler "
                         f"{args.scheduler}: that cluster has its own workers (set their number "
                         "where the cluster is started); drop --workers, or use --cluster local "
                         "--workers N for a local cluster of N processes")
    return dask_scheduler(args.scheduler, args.cluster, args.workers)
