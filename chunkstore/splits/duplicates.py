"""Duplicates in splits: ``meta/duplicate_of`` (written by ``chunkstore dedup``) read as a
sparse table, the leakage a split leaves, and the merged group keys of ``--dedup``.

A split reads ``meta/duplicate_of`` only when the store has it and it covers every row (an
append after the dedup makes it stale: leakage is then not reported, and ``--dedup`` asks for
a new ``chunkstore dedup``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from chunkstore.core import assign
from chunkstore.errors import SplitError

if TYPE_CHECKING:
    from chunkstore.store.view import StoreView

DUPLICATE_OF = "duplicate_of"  # under meta/

I64 = NDArray[np.int64]


@dataclass(frozen=True)
class Duplicates:
    """``rows`` that repeat an earlier row, sorted, and ``roots``: their first occurrences."""

    rows: I64
    roots: I64

    def leakage(self, codes: NDArray[np.int8], n_parts: int) -> tuple[int, ...]:
        """Rows of each part with an exact duplicate in part 0 (0 for part 0)."""
        return tuple(int(x) for x in assign.leakage(codes, self.rows, self.roots, n_parts))

    def fix_codes(self, codes: NDArray[np.int8]) -> None:
        """Give every copy its first occurrence's code (roots are never copies themselves)."""
        codes[self.rows] = codes[self.roots]


def stale_reason(ds: StoreView) -> str | None:
    """Why the store's ``meta/duplicate_of`` cannot be used, or None if it can."""
    arr = ds.meta.get(DUPLICATE_OF)
    if arr is None:
        return "the store has no meta/duplicate_of"
    if arr.shape != (ds.n_samples,) or arr.attrs.get("rows") != ds.n_samples:
        return (f"meta/duplicate_of covers {arr.attrs.get('rows')} rows but the store has "
                f"{ds.n_samples:,} (rows were appended after the dedup)")
    return None


def load_duplicates(ds: StoreView, required: bool = False) -> Duplicates | None:
    """The store's duplicates, or None when it has no usable ``meta/duplicate_of``.

    Raises SplitError when ``required`` (``--dedup``) and there is none.
    """
    why = stale_reason(ds)
    if why is not None:
        if required:
            raise SplitError(f"--dedup needs exact duplicate groups, but {why}; run "
                             f"`chunkstore dedup {ds.path}` first")
        return None
    dup = np.asarray(ds.meta[DUPLICATE_OF][:], dtype=np.int64)
    rows = np.flatnonzero(dup >= 0).astype(np.int64)
    return Duplicates(rows, dup[rows])


def group_components(ds: StoreView, dups: Duplicates) -> tuple[I64, I64]:
    """``(group ids, merged id)`` for every group that shares a duplicate with another group:
    groups linked by a copy and its first occurrence merge (transitively) into the smallest
    group id among them. Groups not listed keep their id."""
    if dups.rows.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    idx = np.unique(np.r_[dups.rows, dups.roots])
    g = np.asarray(ds.meta["group"].get_coordinate_selection(idx), dtype=np.int64)
    at = np.searchsorted(idx, dups.rows), np.searchsorted(idx, dups.roots)
    a, b = g[at[0]], g[at[1]]
    linked = a != b
    return assign.merge_keys(a[linked], b[linked])
