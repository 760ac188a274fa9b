"""Second-pass statistics: fixed-edge histograms, quantiles, contingency tables, mutual information.

Edges come from the first pass (per-feature finite min and max), so every block bins with the
same edges and block histograms merge by integer addition: exact and order-independent. Each
feature is binned on a fine grid (at least ``FINE_BINS`` bins) for the quantiles; the ``bins``
coarse bins of the stored histogram and of the contingency tables are groups of fine bins, so
all three agree exactly. Bin ``k`` is ``[edge[k], edge[k+1])``, the last bin also holds the
maximum, as in ``numpy.histogram``.

Mutual information is the plug-in estimate from a feature-bin x class table, in nats. Its bias
is about (B - 1)(K - 1) / (2 N) (Miller 1955), recorded next to the estimate, not subtracted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from chunkstore.core.moments import F64, I64, Moments
from chunkstore.errors import ReadError

FINE_BINS = 1024  # quantile resolution: a quantile is exact to (max - min) / FINE_BINS
QUANTILE_PROBS = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
HIST_ROWS = 2048  # rows binned at once: bounds the (rows, F) int64 temporaries


@dataclass(frozen=True)
class Binning:
    """Per-feature equal-width bins over [lo, hi]: ``bins`` coarse, ``bins * factor`` fine."""

    lo: F64
    hi: F64
    bins: int
    factor: int

    @classmethod
    def from_moments(cls, m: Moments, bins: int) -> Binning:
        """Edges from the finite min and max; a feature with no finite value gets [0, 0]."""
        return cls.of_range(m.count > 0, m.min, m.max, bins)

    @classmethod
    def of_range(cls, seen: NDArray[np.bool_], lo: NDArray[Any], hi: NDArray[Any], bins: int
                 ) -> Binning:
        """Edges over [lo, hi] per feature; [0, 0] where ``seen`` is False."""
        if bins < 1:
            raise ReadError(f"bins must be >= 1, found {bins}")
        return cls(np.where(seen, lo, 0.0).astype(np.float64),
                   np.where(seen, hi, 0.0).astype(np.float64), bins,
                   max(1, -(-FINE_BINS // bins)))

    def same_as(self, other: Binning) -> bool:
        """Whether both give the same edges (so their histograms are the same)."""
        return (self.bins, self.factor) == (other.bins, other.factor) and bool(
            np.array_equal(self.lo, other.lo) and np.array_equal(self.hi, other.hi))

    @property
    def fine(self) -> int:
        return self.bins * self.factor

    def fine_edges(self) -> F64:
        """(F, fine + 1) monotone edges, first = lo and last = hi exactly."""
        width = self.hi - self.lo
        e = self.lo[:, None] + width[:, None] * (np.arange(self.fine + 1) / self.fine)
        e[:, -1] = self.hi
        return np.minimum(e, self.hi[:, None])

    def edges(self) -> F64:
        """(F, bins + 1) edges of the coarse bins (a subset of the fine edges)."""
        return self.fine_edges()[:, :: self.factor]

    def fine_index(self, x: NDArray[Any], finite: NDArray[np.bool_] | None,
                   fine_edges: F64) -> I64:
        """Fine bin of every value of a (rows, F) block; non-finite values get any bin.

        Bin k holds [edge k, edge k+1); the last bin also holds hi, and a constant feature
        (lo == hi) lands in the last bin: ``numpy.histogram``'s rule, including its one-step
        fix of floor((x - lo) * scale) against the edges as stored. The fix can only change
        values within rounding of an edge, so only those are compared with the edges.
        """
        y = x.astype(np.float64)
        if finite is not None:
            y[~finite] = self.lo[np.nonzero(~finite)[1]]
        width = self.hi - self.lo
        scale = np.divide(self.fine, width, out=np.zeros_like(width), where=width > 0)
        y -= self.lo
        y *= scale
        k = np.floor(y)
        np.clip(k, 0, self.fine - 1, out=k)
        const = width <= 0
        k[:, const] = self.fine - 1
        idx = k.astype(np.int64)
        # rounding of y and of the stored edges, in units of y (generous)
        tol = 8 * np.finfo(np.float64).eps * (
            (np.abs(self.lo) + np.abs(self.hi) + width) * scale + self.fine)
        frac = y - k
        near = (frac < tol) | (frac > 1 - tol)
        # x == lo is bin 0 unless edge 1 rounded down onto lo; x == hi is always the last bin
        inside = (y > 0) | (fine_edges[:, 1] <= self.lo)
        near &= inside & (y < self.fine) & ~const
        rows, cols = np.nonzero(near)
        if rows.size:
            v = x[rows, cols]
            kk = idx[rows, cols]
            kk -= v < fine_edges[cols, kk]
            kk += (v >= fine_edges[cols, kk + 1]) & (kk < self.fine - 1)
            idx[rows, cols] = kk
        return idx


@dataclass(frozen=True)
class HistPartial:
    """A block's fine histograms (F, fine) and per-head class x feature x bin tables (K, F, B)."""

    fine: I64
    tables: Mapping[str, I64]

    @classmethod
    def empty(cls, n_features: int, binning: Binning, heads: Mapping[str, int],
              dtype: type = np.int64) -> HistPartial:
        return cls(np.zeros((n_features, binning.fine), dtype),
                   {h: np.zeros((k, n_features, binning.bins), dtype) for h, k in heads.items()})

    @classmethod
    def of_block(cls, x: NDArray[Any], labels: Mapping[str, NDArray[Any]], binning: Binning,
                 heads: Mapping[str, int], dtype: type = np.int64) -> HistPartial:
        """Histograms and tables of a (rows, F) block, ``HIST_ROWS`` rows at a time.

        ``dtype`` of the counts: int32 halves the memory of the partials a Dask tree holds,
        and is enough while the merged total has fewer than 2**31 rows.
        """
        out = cls.empty(x.shape[1], binning, heads, dtype)
        fine_edges = binning.fine_edges()
        for i in range(0, x.shape[0], HIST_ROWS):
            sl = slice(i, i + HIST_ROWS)
            out._add(x[sl], {h: labels[h][sl] for h in heads}, binning, fine_edges)
        return out

    def _add(self, x: NDArray[Any], labels: Mapping[str, NDArray[Any]], binning: Binning,
             fine_edges: F64) -> None:
        """Accumulate one sub-block in place (only on a partial this module just created)."""
        f, fine_n = x.shape[1], binning.fine
        finite = np.isfinite(x)
        all_finite = bool(finite.all())
        idx = binning.fine_index(x, None if all_finite else finite, fine_edges)
        # one key per value: feature j's fine bin k is j * fine + k; a sentinel bucket past
        # the end swallows non-finite values. Dividing a key by `factor` gives j * bins + the
        # coarse bin (fine = bins * factor), the sentinel stays the coarse sentinel.
        idx += np.arange(f, dtype=np.int64) * fine_n
        if not all_finite:
            idx[~finite] = f * fine_n
        fine = np.bincount(idx.ravel(), minlength=f * fine_n + 1)[:-1]
        np.add(self.fine, fine.reshape(f, fine_n), out=self.fine)
        if binning.factor > 1:
            np.floor_divide(idx, binning.factor, out=idx)
        size = f * binning.bins + 1  # keys per class, the sentinel included
        for h, table in self.tables.items():
            k = table.shape[0]
            lab = np.asarray(labels[h]).astype(np.int64)
            ok = (lab >= 0) & (lab < k)
            keys = idx + (lab * size)[:, None]  # one table of all classes: a single bincount
            keys = keys.ravel() if ok.all() else keys[ok].ravel()
            counts = np.bincount(keys, minlength=k * size).reshape(k, size)[:, :-1]
            table += counts.reshape(k, f, binning.bins)

    def merge(self, other: HistPartial) -> HistPartial:
        return HistPartial(self.fine + other.fine,
                           {h: t + other.tables[h] for h, t in self.tables.items()})

    def hist(self, binning: Binning) -> I64:
        """(F, bins) counts of the coarse bins."""
        f = self.fine.shape[0]
        return self.fine.reshape(f, binning.bins, binning.factor).sum(axis=2, dtype=np.int64)

    def contingency(self, head: str) -> I64:
        """(F, bins, K) feature-bin x class counts of one head."""
        return np.ascontiguousarray(self.tables[head].transpose(1, 2, 0), dtype=np.int64)


def quantiles(fine_hist: I64, fine_edges: F64, probs: tuple[float, ...] = QUANTILE_PROBS
              ) -> F64:
    """Approximate quantiles (F, len(probs)) by linear interpolation inside histogram bins.

    Exact to one fine bin width; NaN for a feature with no finite value.
    """
    cum = np.cumsum(fine_hist, axis=1)
    n = cum[:, -1].astype(np.float64)
    out = np.full((fine_hist.shape[0], len(probs)), np.nan)
    rows = np.arange(fine_hist.shape[0])
    for j, p in enumerate(probs):
        target = p * n
        b = np.minimum((cum < target[:, None]).sum(axis=1), fine_hist.shape[1] - 1)
        before = np.where(b > 0, cum[rows, np.maximum(b - 1, 0)], 0)
        inbin = fine_hist[rows, b].astype(np.float64)
        frac = np.clip(np.divide(target - before, inbin, out=np.zeros_like(n), where=inbin > 0),
                       0.0, 1.0)
        lo, hi = fine_edges[rows, b], fine_edges[rows, b + 1]
        out[:, j] = np.where(n > 0, lo + frac * (hi - lo), np.nan)
    return out


def _xlogx(a: F64) -> F64:
    return np.where(a > 0, a * np.log(np.where(a > 0, a, 1.0)), 0.0)


def mutual_info(table: NDArray[Any]) -> F64:
    """Plug-in mutual information in nats of each feature's (bins, K) table, from (F, B, K).

    I = (sum n_bk ln n_bk - sum n_b ln n_b - sum n_k ln n_k + N ln N) / N; NaN when N = 0.
    """
    t = np.asarray(table, dtype=np.float64)
    n = t.sum(axis=(1, 2))
    total = (_xlogx(t).sum(axis=(1, 2)) - _xlogx(t.sum(axis=2)).sum(axis=1)
             - _xlogx(t.sum(axis=1)).sum(axis=1) + _xlogx(n))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.maximum(total / n, 0.0), np.nan)


def mi_bias(bins: int, classes: int, n: int) -> float:
    """First-order bias of the plug-in estimate, (B - 1)(K - 1) / (2 N) nats."""
    return (bins - 1) * (classes - 1) / (2.0 * n) if n > 0 else float("nan")
