"""What ``chunkstore dedup`` found: a frozen summary, printed by the CLI, returned by the API."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from chunkstore.dedup.groups import Conflicts


@dataclass(frozen=True)
class DedupSummary:
    """Exact duplicates of a store (also in ``meta/duplicate_of``'s attrs).

    Attributes
    ----------
    store, by : the store and what rows were compared by (``features`` or ``features+labels``).
    rows : rows in the store.
    groups : groups of two or more identical rows.
    duplicate_rows : rows that repeat an earlier row (``meta/duplicate_of >= 0``).
    largest : the largest groups as ``(first row, rows)``.
    conflicts : head -> :class:`~chunkstore.dedup.groups.Conflicts` (``by="features"`` only):
        identical features, different labels.
    hash_source : ``meta/row_hash`` or ``computed`` (a store written before row hashes).
    """

    store: str
    by: str
    rows: int
    groups: int
    duplicate_rows: int
    largest: tuple[tuple[int, int], ...]
    conflicts: Mapping[str, Conflicts] = field(default_factory=dict)
    hash_source: str = "computed"
    wall_seconds: float = 0.0

    @property
    def share(self) -> float:
        """Duplicate rows / rows."""
        return self.duplicate_rows / self.rows if self.rows else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"store": self.store, "by": self.by, "rows": self.rows, "groups": self.groups,
                "duplicate_rows": self.duplicate_rows, "share": self.share,
                "largest": [list(g) for g in self.largest],
                "conflicts": {h: c.to_dict() for h, c in self.conflicts.items()},
                "hash_source": self.hash_source}

    def format(self) -> str:
        lines = [f"dedup            {self.store}  meta/duplicate_of  (by {self.by}, hashes "
                 f"{self.hash_source}, {self.wall_seconds:.1f} s)",
                 f"rows             {self.rows:,}",
                 f"duplicate rows   {self.duplicate_rows:,} ({self.share:.2%}) in "
                 f"{self.groups:,} groups of identical rows"]
        if self.largest:
            lines.append("largest groups   " + ", ".join(
                f"{n:,} rows (first row {r:,})" for r, n in self.largest))
        for head, c in self.conflicts.items():
            if not c.groups:
                lines.append(f"labels {head!r}: no conflicts (identical rows agree)")
                continue
            ex = "; ".join(", ".join(f"row {r} label {v}" for r, v in e) for e in c.examples)
            lines.append(f"labels {head!r}: {c.groups:,} groups of identical features have "
                         f"different labels ({c.rows:,} rows, {c.differing:,} differ from the "
                         f"first row), e.g. {ex}")
        return "\n".join(lines)
