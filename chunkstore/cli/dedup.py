"""``chunkstore`` commands of the dedup area; each ``add_<command>`` registers one subcommand."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from chunkstore.cli.options import add_command, add_quiet


def _dedup(args: argparse.Namespace) -> str:
    from chunkstore.dedup import dedup

    summary = dedup(args.store, by=args.by, progress=not args.quiet)
    return json.dumps(summary.to_dict(), indent=1) if args.json else summary.format()


def add_dedup(sub: Any) -> None:
    p = add_command(sub, "dedup", "find exact duplicate rows, write meta/duplicate_of",
                    "Find groups of identical rows (row hashes, then a byte-for-byte check, so "
                    "a hash collision never merges different rows) and write meta/duplicate_of "
                    "(-1 for a first occurrence, else the row of the first occurrence). Prints "
                    "duplicate rows and share, the largest groups and conflicting labels. "
                    "`chunkstore split --dedup` then keeps every copy in one part.")
    p.add_argument("store", help="path of a complete store")
    p.add_argument("--by", choices=["features", "features+labels"], default="features",
                   help="what makes two rows equal (default: features)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_quiet(p)
    p.set_defaults(run=_dedup)


COMMANDS: tuple[Callable[[Any], None], ...] = (add_dedup,)
