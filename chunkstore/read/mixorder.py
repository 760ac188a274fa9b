"""A mixture's order: exact proportions per block, and each store's own elastic order.

Pure functions of their arguments and the stores' item counts (see :mod:`chunkstore.read.mix`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from chunkstore.errors import ReadError
from chunkstore.read.order import global_windows, window_permutation

I64 = NDArray[np.int64]


def block_counts(weights: Sequence[float], block: int) -> I64:
    """Items per block of each source: ``weights`` (normalized) x ``block``, rounded by
    largest remainder so that they sum to ``block``."""
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or len(w) == 0 or not np.all(np.isfinite(w)) or (w < 0).any() or w.sum() <= 0:
        raise ReadError(f"weights must be non-negative numbers with a positive sum, one per "
                        f"store, found {list(weights)!r}")
    exact = w / w.sum() * block
    counts = np.floor(exact).astype(np.int64)
    extra = block - int(counts.sum())
    counts[np.argsort(-(exact - counts), kind="stable")[:extra]] += 1
    return counts


def block_pattern(counts: I64, *, seed: int, epoch: int, block: int) -> tuple[I64, I64]:
    """(source of each position of block ``block``, its rank among that source's items)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, epoch, 2, block]))
    source = np.repeat(np.arange(len(counts), dtype=np.int64), counts)[
        rng.permutation(int(counts.sum()))]
    within = np.empty_like(source)
    for k in range(len(counts)):
        at = np.flatnonzero(source == k)
        within[at] = np.arange(len(at))
    return source, within


def row_items(member: NDArray[np.bool_] | None, n: int, chunk_rows: int
              ) -> tuple[I64, Callable[[int], I64]]:
    """(items per chunk, the items of chunk ``c``) when the items are a store's rows (of
    ``member`` if given)."""
    r = chunk_rows
    starts = np.arange(0, n, r)
    if member is None:
        counts = np.minimum(r, n - starts)
    else:
        counts = np.add.reduceat(member.astype(np.int64), starts) if n else starts

    def items_of(c: int) -> I64:
        lo, hi = c * r, min(n, (c + 1) * r)
        rows = np.arange(lo, hi, dtype=np.int64)
        return rows if member is None else rows[member[lo:hi]]

    return np.asarray(counts, np.int64), items_of


def window_items(starts: I64, n: int, chunk_rows: int) -> tuple[I64, Callable[[int], I64]]:
    """(items per chunk, the items of chunk ``c``) when the items are sequence windows with
    first rows ``starts`` (increasing): a window belongs to the chunk of its first row."""
    counts = np.bincount(starts // chunk_rows, minlength=-(-n // chunk_rows)).astype(np.int64)
    first = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return counts, lambda c: np.arange(first[c], first[c + 1], dtype=np.int64)


class SourceOrder:
    """Items of one store's elastic global order, continued across its epochs.

    ``rows(q)`` maps cumulative positions ``q`` (epoch ``q // items``, offset ``q % items``)
    to item ids (store rows, or window ids), caching the last few windows' permuted items.
    """

    def __init__(self, counts: I64, items_of: Callable[[int], I64], *, seed: int,
                 window_chunks: int) -> None:
        self.items_of, self.seed, self.k = items_of, seed, window_chunks
        self.counts = np.asarray(counts, np.int64)
        self.items = int(self.counts.sum())
        self._windows: OrderedDict[int, Any] = OrderedDict()
        self._rows: OrderedDict[tuple[int, int], I64] = OrderedDict()

    def _epoch(self, epoch: int) -> Any:
        if epoch not in self._windows:
            ws = global_windows(self.counts, seed=self.seed, epoch=epoch, shuffle=True,
                                window_chunks=self.k)
            self._windows[epoch] = (ws, np.array([w.start for w in ws], np.int64))
            while len(self._windows) > 2:
                self._windows.popitem(last=False)
        return self._windows[epoch]

    def _window_rows(self, epoch: int, w: Any) -> I64:
        key = (epoch, w.number)
        if key not in self._rows:
            natural = np.concatenate([self.items_of(c) for c in w.chunks.tolist()])
            self._rows[key] = natural[window_permutation(len(natural), seed=self.seed,
                                                         epoch=epoch, number=w.number)]
            while len(self._rows) > 4:
                self._rows.popitem(last=False)
        return self._rows[key]

    def rows(self, q: I64) -> I64:
        out = np.empty(len(q), np.int64)
        epoch, offset = np.divmod(q, self.items)
        for e in np.unique(epoch).tolist():
            ws, starts = self._epoch(e)
            at = np.flatnonzero(epoch == e)
            win = np.searchsorted(starts, offset[at], side="right") - 1
            for w in np.unique(win).tolist():
                sel = at[win == w]
                out[sel] = self._window_rows(e, ws[w])[offset[sel] - ws[w].start]
        return out


