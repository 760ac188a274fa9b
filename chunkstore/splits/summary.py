"""What a split wrote: per-block tallies (rows, class counts, groups per part), their merge,
and :class:`SplitSummary` -- printed by ``chunkstore split`` and stored as the array's attrs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from chunkstore.core import assign as splits
from chunkstore.core.splitspec import SplitSpec
from chunkstore.splits.graphs import sum_all
from chunkstore.store import layout

SPLIT_FORMAT = 1


# ----------------------------------------------------------------------- tally, summary --

@dataclass(frozen=True)
class Tally:
    """Rows per part, class counts per part (of one head) and (group, part, rows) pairs."""

    rows: np.ndarray
    classes: np.ndarray | None
    groups: splits.PairCounts | None

    def merge(self, *others: Tally) -> Tally:
        parts = (self, *others)
        return Tally(
            sum_all(*[p.rows for p in parts]),
            None if self.classes is None else sum_all(*[p.classes for p in parts]),
            None if self.groups is None else splits.merge_pair_counts(
                *[p.groups for p in parts if p.groups is not None]),
        )


def tally_block(codes: np.ndarray, labels: np.ndarray | None, groups: np.ndarray | None,
                 n_parts: int, n_classes: int) -> Tally:
    c = codes.astype(np.int64)
    rows = np.bincount(c, minlength=n_parts)
    classes = None if labels is None else np.bincount(
        c * n_classes + labels.astype(np.int64), minlength=n_parts * n_classes
    ).reshape(n_parts, n_classes)
    return Tally(rows, classes, None if groups is None else splits.pair_counts(groups, c))


def tally_table(table: splits.PairCounts, assignment: tuple[np.ndarray, np.ndarray],
                 n_parts: int, n_classes: int, with_classes: bool) -> Tally:
    """The tally of a grouped split, straight from its (group, class, rows) table: no reads."""
    g, cls, cnt = table
    code = splits.lookup(assignment[0], assignment[1], g).astype(np.int64)
    rows = np.bincount(code, weights=cnt, minlength=n_parts).astype(np.int64)
    classes = None
    if with_classes:
        classes = np.bincount(code * n_classes + cls, weights=cnt,
                              minlength=n_parts * n_classes).astype(np.int64)
        classes = classes.reshape(n_parts, n_classes)
    return Tally(rows, classes, splits.merge_pair_counts((g, code, cnt)))


@dataclass(frozen=True)
class SplitSummary:
    """What ``chunkstore split`` wrote: part sizes, group counts and class balance."""

    store: str
    spec: SplitSpec
    n_samples: int
    key: str
    rows: tuple[int, ...]
    head: str | None
    class_counts: tuple[tuple[int, ...], ...] | None  # (parts, classes) of `head`
    groups: tuple[int, ...] | None  # distinct groups per part
    groups_total: int | None
    groups_shared: int | None  # groups found in more than one part
    wall_seconds: float
    # rows of each part with an exact duplicate in the first part (None: no meta/duplicate_of)
    leaked: tuple[int, ...] | None = None

    @classmethod
    def of(cls, store: str, spec: SplitSpec, n: int, key: str, head: str | None, t: Tally,
           wall: float, leaked: tuple[int, ...] | None = None) -> SplitSummary:
        groups = total = shared = None
        if t.groups is not None:
            g, code, _ = t.groups
            groups = tuple(int(x) for x in np.bincount(code, minlength=len(spec.names)))
            distinct, per_group = np.unique(g, return_counts=True)
            total, shared = int(distinct.size), int((per_group > 1).sum())
        cc = None if t.classes is None else tuple(tuple(int(x) for x in r) for r in t.classes)
        return cls(store, spec, n, key, tuple(int(x) for x in t.rows), head, cc, groups, total,
                   shared, wall, leaked)

    def to_attrs(self) -> dict[str, Any]:
        names = list(self.spec.names)
        attrs: dict[str, Any] = {
            "format": SPLIT_FORMAT, "names": names, **self.spec.to_dict(),
            "fractions": dict(self.spec.fractions), "spec": self.spec.to_dict(),
            "key": self.key, "n_samples": self.n_samples,
            "rows": dict(zip(names, self.rows, strict=True)),
            "groups": None if self.groups is None else dict(zip(names, self.groups, strict=True)),
            "groups_total": self.groups_total, "groups_shared": self.groups_shared,
            "class_counts": None if self.class_counts is None else {
                "head": self.head, **{n: list(c) for n, c in zip(names, self.class_counts,
                                                                strict=True)}},
            "leaked": None if self.leaked is None else dict(zip(names, self.leaked,
                                                                 strict=True)),
            "created": layout.now_iso(), "complete": True,
        }
        return attrs

    def format(self) -> str:
        s, names = self.spec, self.spec.names
        by = f", by {s.by}" if s.by else ""
        lines = [f"split            {self.store}  splits/{s.name}  ({s.method}, seed {s.seed}{by}, "
                 f"keyed by {self.key})",
                 f"rows             {self.n_samples:,}"
                 + (f" in {self.groups_total:,} groups" if self.groups_total is not None else "")]
        w = max(6, *(len(n) for n in names))
        head = f"{'part':<{w}} {'rows':>11} {'share':>8} {'target':>8}"
        head += f" {'groups':>8}" if self.groups else ""
        lines.append(head)
        for i, n in enumerate(names):
            share = self.rows[i] / self.n_samples if self.n_samples else 0.0
            line = f"{n:<{w}} {self.rows[i]:>11,} {share:>8.2%} {s.fractions[i][1]:>8.2%}"
            line += f" {self.groups[i]:>8,}" if self.groups else ""
            lines.append(line)
        if self.groups_shared:
            lines.append(f"groups in more than one part: {self.groups_shared:,} of "
                         f"{self.groups_total:,} (use a grouped method to keep groups together)")
        lines.append(self._format_leakage())
        if self.class_counts is not None:
            lines += _format_balance(self.head or "", names, np.array(self.class_counts))
        return "\n".join(lines)


    def _format_leakage(self) -> str:
        names = self.spec.names
        if self.leaked is None:
            return ("duplicates       not checked (no meta/duplicate_of: run chunkstore dedup "
                    "STORE, then split again to see rows shared across parts)")
        if len(names) < 2:
            return "duplicates       one part: nothing can leak"
        parts = ", ".join(f"{n} {x:,}" for n, x in zip(names[1:], self.leaked[1:], strict=True))
        fix = ("" if not any(self.leaked) or self.spec.dedup
               else " (--dedup keeps every copy in one part)")
        line = f"rows with an exact duplicate in {names[0]}: {parts}{fix}"
        empty = [n for n, r, (_, f) in zip(names, self.rows, self.spec.fractions, strict=True)
                 if f > 0 and r == 0]
        if self.spec.dedup and self.groups_total is not None and empty:
            line += (f"\n--dedup merged the groups that share duplicates into "
                     f"{self.groups_total:,}, leaving {', '.join(empty)} empty: the duplicates "
                     "link most groups (a per-row method with --dedup, or training on first "
                     "occurrences only, avoids this)")
        return line


def _format_balance(head: str, names: Sequence[str], cc: np.ndarray, show: int = 16
                    ) -> list[str]:
    total = cc.sum(axis=0)
    overall = total / max(total.sum(), 1)
    share = cc / np.maximum(cc.sum(axis=1, keepdims=True), 1)
    dev = np.abs(share - overall).max(axis=1)
    lines = [f"class balance of head {head!r} (% of each part's rows; largest deviation from "
             "the whole: " + ", ".join(f"{n} {d * 100:.2f} pp" for n, d in zip(names, dev,
                                                                               strict=True)) + ")"]
    order = np.argsort(-total, kind="stable")[:show]
    w = max(6, *(len(n) for n in names))
    lines.append(f"{'class':>6} {'all':>7} " + " ".join(f"{n:>{w}}" for n in names))
    for c in order:
        lines.append(f"{c:>6} {overall[c]:>7.2%} "
                     + " ".join(f"{share[i, c]:>{w}.2%}" for i in range(len(names))))
    if total.size > show:
        lines.append(f"({show} most frequent of {total.size} classes shown)")
    return lines
