"""Partial statistics of a block of rows: exact, mergeable, float64 throughout.

A block's moments are computed with a corrected two-pass in float64 (mean, then deviations,
minus the rounding left in the mean) and blocks are merged with Chan et al.'s pairwise formulas,
extended to the third and fourth central moments by Pebay (2008). Never E[x^2] - E[x]^2 and
never a float32 accumulator: both lose every digit on offset data. Non-finite values (NaN,
+/-inf) are left out of the moments and counted.

The co-moment matrix for correlation uses, for each pair of features, the rows where both are
finite. A block with no non-finite value keeps per-feature means and M2 of shape (F, 1) (every
pair sees the same rows); a block with holes keeps them per pair, (F, F). Broadcasting makes
one set of merge formulas serve both forms.

Everything here is a pure function of its inputs; I/O lives in :mod:`chunkstore.stats.compute`
(Dask graphs over a store), :mod:`chunkstore.store.stats_io` (``stats/<scope>`` arrays) and
:mod:`chunkstore.ingest.task` (online statistics).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from functools import lru_cache, reduce
from typing import Any

import numpy as np
from numpy.typing import NDArray

from chunkstore.errors import IngestError

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]

ROW_BLOCK = 2048  # rows per two-pass block: bounds the float64 working copy
SUB_ROWS = 256  # rows per power-sum piece: keeps the temporaries in cache


def _ratio(num: NDArray[Any], den: NDArray[Any]) -> F64:
    """num / den where den > 0, else 0 (empty blocks carry zeros, never NaN)."""
    num, den = np.broadcast_arrays(np.asarray(num, np.float64), np.asarray(den, np.float64))
    return np.divide(num, den, out=np.zeros(num.shape), where=den > 0)


@dataclass(frozen=True)
class Moments:
    """Per feature: finite-value count, NaN and +/-inf counts, min, max, mean, M2, M3, M4.

    ``m2``, ``m3``, ``m4`` are sums of the 2nd, 3rd and 4th powers of deviations from the mean.
    """

    count: I64
    nan_count: I64
    inf_count: I64
    min: F64
    max: F64
    mean: F64
    m2: F64
    m3: F64
    m4: F64

    @classmethod
    def empty(cls, n_features: int) -> Moments:
        z = np.zeros(n_features, dtype=np.int64)
        f = np.zeros(n_features)
        return cls(z, z.copy(), z.copy(), np.full(n_features, np.inf),
                   np.full(n_features, -np.inf), f, f.copy(), f.copy(), f.copy())

    @classmethod
    def of_block(cls, x: NDArray[Any]) -> Moments:
        """Moments of a (rows, F) block, two-pass in float64, ``ROW_BLOCK`` rows at a time."""
        return block_stats(x, correlation=False)[0]

    def merge(self, other: Moments) -> Moments:
        """Chan/Pebay pairwise combination; exact up to rounding, independent of block sizes."""
        na, nb = self.count.astype(np.float64), other.count.astype(np.float64)
        n = na + nb
        wa, wb = _ratio(na, n), _ratio(nb, n)
        d = other.mean - self.mean
        d2 = d * d
        m2 = self.m2 + other.m2 + d2 * na * wb
        m3 = (self.m3 + other.m3 + d * d2 * na * wb * (wa - wb)
              + 3.0 * d * (wa * other.m2 - wb * self.m2))
        m4 = (self.m4 + other.m4 + d2 * d2 * na * wb * (wa * wa - wa * wb + wb * wb)
              + 6.0 * d2 * (wa * wa * other.m2 + wb * wb * self.m2)
              + 4.0 * d * (wa * other.m3 - wb * self.m3))
        return Moments(self.count + other.count, self.nan_count + other.nan_count,
                       self.inf_count + other.inf_count, np.minimum(self.min, other.min),
                       np.maximum(self.max, other.max), self.mean + d * wb, m2, m3, m4)

    @property
    def var(self) -> F64:
        """Population variance (ddof=0); NaN where there are no finite values."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.count > 0, self.m2 / self.count, np.nan)

    @property
    def std(self) -> F64:
        return np.sqrt(self.var)

    @property
    def skew(self) -> F64:
        """Population skewness g1 = sqrt(n) M3 / M2^1.5; NaN where the variance is 0."""
        n = self.count.astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.m2 > 0, np.sqrt(n) * self.m3 / self.m2 ** 1.5, np.nan)

    @property
    def kurtosis(self) -> F64:
        """Excess kurtosis g2 = n M4 / M2^2 - 3; NaN where the variance is 0."""
        n = self.count.astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.m2 > 0, n * self.m4 / (self.m2 * self.m2) - 3.0, np.nan)

    def to_arrays(self, prefix: str = "") -> dict[str, NDArray[Any]]:
        return {prefix + f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_arrays(cls, d: Mapping[str, NDArray[Any]], prefix: str = "") -> Moments:
        return cls(**{f.name: np.asarray(d[prefix + f.name]) for f in fields(cls)})


@lru_cache(maxsize=8)
def _triu(n: int) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    return np.triu_indices(n)


def pack_symmetric(a: NDArray[Any]) -> NDArray[Any]:
    """The upper triangle (diagonal included) of a symmetric (F, F) matrix, row by row."""
    return a[_triu(a.shape[0])]


def unpack_symmetric(packed: NDArray[Any], n: int) -> NDArray[Any]:
    """Inverse of :func:`pack_symmetric`."""
    out = np.empty((n, n), dtype=packed.dtype)
    iu = _triu(n)
    out[iu] = packed
    out.T[iu] = packed
    return out


@dataclass(frozen=True)
class CoMoments:
    """Co-moments for correlation over the rows where both features of a pair are finite.

    ``n``, ``mean`` and ``m2`` are (1, 1), (F, 1), (F, 1) while every row of every feature was
    finite, else (F, F): ``mean[i, j]`` and ``m2[i, j]`` are those of feature i over the rows
    where i and j are finite. ``c[i, j]`` is the sum of products of deviations.
    """

    n: I64
    mean: F64
    m2: F64
    c: F64

    @classmethod
    def empty(cls, n_features: int) -> CoMoments:
        col = np.zeros((n_features, 1))
        return cls(np.zeros((1, 1), np.int64), col, col.copy(), np.zeros((n_features,) * 2))

    @property
    def pairwise(self) -> bool:
        return self.n.shape != (1, 1)

    def merge(self, other: CoMoments) -> CoMoments:
        """Chan's update for co-moments; (F, 1) and (F, F) forms broadcast together."""
        na, nb = self.n.astype(np.float64), other.n.astype(np.float64)
        wb = _ratio(nb, na + nb)
        d = other.mean - self.mean
        naw = na * wb
        return CoMoments(self.n + other.n, self.mean + d * wb,
                         self.m2 + other.m2 + d * d * naw, self.c + other.c + d * d.T * naw)

    def correlation(self) -> F64:
        """Pearson correlation, clipped to [-1, 1]; NaN where a variance is 0 or no pair."""
        m2 = np.broadcast_to(self.m2, self.c.shape)
        den = np.sqrt(m2 * m2.T)
        with np.errstate(invalid="ignore", divide="ignore"):
            r = np.where(den > 0, self.c / den, np.nan)
        np.clip(r, -1.0, 1.0, out=r)
        diag = np.diagonal(m2) > 0
        r[np.diag_indices_from(r)] = np.where(diag, 1.0, np.nan)
        return r

    def pair_counts(self) -> I64:
        """Rows used by each pair, (F, F)."""
        return np.broadcast_to(self.n, self.c.shape).astype(np.int64)

    def to_arrays(self, prefix: str = "") -> dict[str, NDArray[Any]]:
        """Flat arrays for a journal record; symmetric matrices keep their upper triangle."""
        out = {prefix + "c": pack_symmetric(self.c), prefix + "mean": self.mean,
               prefix + "m2": self.m2}
        out[prefix + "n"] = pack_symmetric(self.n) if self.pairwise else self.n
        return out

    @classmethod
    def from_arrays(cls, d: Mapping[str, NDArray[Any]], prefix: str = "") -> CoMoments:
        mean = np.asarray(d[prefix + "mean"])
        f = mean.shape[0]
        n = np.asarray(d[prefix + "n"])
        if n.ndim == 1:
            n = unpack_symmetric(n, f)
        return cls(n, mean, np.asarray(d[prefix + "m2"]), unpack_symmetric(d[prefix + "c"], f))


def _power_sums(d: F64, tmp: F64, sums: F64) -> None:
    """Add the column sums of d, d^2, d^3, d^4 to ``sums`` (4, F), ``SUB_ROWS`` rows at a time.

    Small pieces keep the temporaries in cache; einsum fuses multiply and sum.
    """
    for i in range(0, d.shape[0], SUB_ROWS):
        di = d[i:i + SUB_ROWS]
        ti = tmp[:di.shape[0]]
        np.multiply(di, di, out=ti)
        sums[0] += di.sum(axis=0)
        sums[1] += ti.sum(axis=0)
        sums[2] += np.einsum("ij,ij->j", ti, di)
        sums[3] += np.einsum("ij,ij->j", ti, ti)


def _moments(count: I64, nan: I64, inf: I64, lo: F64, hi: F64, shift: F64, sums: F64
             ) -> Moments:
    """Moments from power sums of deviations from ``shift`` (the two-pass's first mean).

    The rounding left in the first mean, e = sum(d) / n, is taken out of every power sum.
    """
    n = count.astype(np.float64)
    s1, s2, s3, s4 = sums
    e = _ratio(s1, n)
    m2 = s2 - e * s1
    m3 = s3 - 3.0 * e * s2 + 2.0 * n * e ** 3
    m4 = s4 - 4.0 * e * s3 + 6.0 * e * e * s2 - 3.0 * n * e ** 4
    return Moments(count, nan, inf, lo, hi, shift + e, np.maximum(m2, 0.0), m3,
                   np.maximum(m4, 0.0))


def _dense_block(x: NDArray[Any], colsum: F64, correlation: bool
                 ) -> tuple[Moments, CoMoments | None]:
    """Two-pass statistics of a block whose values are all finite."""
    rows, f = x.shape
    shift = colsum / rows
    sums = np.zeros((4, f))
    prod = np.zeros((f, f)) if correlation else None
    d = np.empty((min(rows, ROW_BLOCK), f))
    tmp = np.empty((SUB_ROWS, f))
    for i in range(0, rows, ROW_BLOCK):
        di = d[:min(ROW_BLOCK, rows - i)]
        np.subtract(x[i:i + ROW_BLOCK], shift, out=di)
        _power_sums(di, tmp, sums)
        if prod is not None:
            prod += di.T @ di  # numpy uses syrk for a.T @ a
    count = np.full(f, rows, dtype=np.int64)
    zero = np.zeros(f, dtype=np.int64)
    m = _moments(count, zero, zero.copy(), x.min(axis=0).astype(np.float64),
                 x.max(axis=0).astype(np.float64), shift, sums)
    if prod is None:
        return m, None
    prod -= np.outer(sums[0], _ratio(sums[0], count))
    return m, CoMoments(np.full((1, 1), rows, np.int64), m.mean[:, None], m.m2[:, None], prod)


def _holey_block(x: NDArray[Any], correlation: bool) -> tuple[Moments, CoMoments | None]:
    """Two-pass statistics of a block with NaN or +/-inf values, which are left out.

    Co-moments are kept per pair: ``n``, sum and sum of squares of deviations over the rows
    where both features are finite (three extra products, only for row blocks with holes).
    """
    rows, f = x.shape
    count = np.zeros(f, np.int64)
    nan = np.zeros(f, np.int64)
    total = np.zeros(f)
    lo, hi = np.full(f, np.inf), np.full(f, -np.inf)
    for i in range(0, rows, ROW_BLOCK):
        xs = x[i:i + ROW_BLOCK]
        fin = np.isfinite(xs)
        count += fin.sum(axis=0)
        nan += np.isnan(xs).sum(axis=0)
        total += np.where(fin, xs, 0).sum(axis=0, dtype=np.float64)
        lo = np.minimum(lo, np.where(fin, xs, np.inf).min(axis=0))
        hi = np.maximum(hi, np.where(fin, xs, -np.inf).max(axis=0))
    shift = _ratio(total, count)
    sums = np.zeros((4, f))
    tmp = np.empty((SUB_ROWS, f))
    if correlation:
        prod, pn, ps, pq = (np.zeros((f, f)) for _ in range(4))
        full_rows, full_sums = 0, np.zeros((2, f))  # row blocks with no hole: rank-1 updates
    for i in range(0, rows, ROW_BLOCK):
        xs = x[i:i + ROW_BLOCK]
        fin = np.isfinite(xs)
        d = np.where(fin, xs - shift, 0.0)
        block = np.zeros((4, f))
        _power_sums(d, tmp, block)
        sums += block
        if not correlation:
            continue
        prod += d.T @ d
        if fin.all():
            full_rows += d.shape[0]
            full_sums += block[:2]
        else:
            w = fin.astype(np.float64)
            pn += w.T @ w
            ps += d.T @ w
            pq += (d * d).T @ w
    m = _moments(count, nan, rows - count - nan, lo, hi, shift, sums)
    if not correlation:
        return m, None
    pn += full_rows
    ps += full_sums[0][:, None]
    pq += full_sums[1][:, None]
    pe = _ratio(ps, pn)
    return m, CoMoments(np.rint(pn).astype(np.int64), shift[:, None] + pe,
                        np.maximum(pq - ps * pe, 0.0), prod - ps * pe.T)


def block_stats(x: NDArray[Any], *, correlation: bool) -> tuple[Moments, CoMoments | None]:
    """Moments (and co-moments when ``correlation``) of a (rows, F) block of any length.

    A corrected two-pass over the whole block in float64: pass 1 the column means, pass 2
    the power sums of deviations (and their cross products), ``ROW_BLOCK`` rows at a time so
    the float64 working copy stays small whatever the block length.
    """
    rows, f = x.shape
    if rows == 0:
        return Moments.empty(f), CoMoments.empty(f) if correlation else None
    # a column sum is finite exactly when every value is (float32/16 sums cannot overflow)
    with np.errstate(invalid="ignore"):  # inf + -inf
        colsum = x.sum(axis=0, dtype=np.float64)
    if np.isfinite(colsum).all():
        return _dense_block(x, colsum, correlation)
    return _holey_block(x, correlation)


def class_counts(labels: NDArray[Any], classes: int) -> I64:
    """Samples per class of one head; labels outside [0, classes) (unwritten rows) are left out."""
    lab = labels.astype(np.int64)
    return np.bincount(lab[(lab >= 0) & (lab < classes)], minlength=classes).astype(np.int64)


def mask_counts(masks: NDArray[Any]) -> I64:
    """Rows whose mask allows each class, (K,): a head's mask coverage times the row count."""
    return np.count_nonzero(masks, axis=0).astype(np.int64)


@dataclass(frozen=True)
class Partial:
    """Everything one block contributes: moments, co-moments, class and mask counts per head."""

    rows: int
    moments: Moments
    comoments: CoMoments | None
    class_counts: Mapping[str, I64]
    mask_counts: Mapping[str, I64]

    @classmethod
    def empty(cls, n_features: int, heads: Mapping[str, int], correlation: bool) -> Partial:
        z = {h: np.zeros(k, np.int64) for h, k in heads.items()}
        return cls(0, Moments.empty(n_features),
                   CoMoments.empty(n_features) if correlation else None, z, dict(z))

    @classmethod
    def of_block(cls, features: NDArray[Any], labels: Mapping[str, NDArray[Any]],
                 masks: Mapping[str, NDArray[Any]], heads: Mapping[str, int], *,
                 correlation: bool) -> Partial:
        """The partial statistics of one block of rows (features, and labels/masks per head)."""
        m, c = block_stats(features, correlation=correlation)
        return cls(features.shape[0], m, c,
                   {h: class_counts(labels[h], k) for h, k in heads.items()},
                   {h: mask_counts(masks[h]) for h in heads})

    def merge(self, other: Partial) -> Partial:
        if (self.comoments is None) != (other.comoments is None):
            raise IngestError("cannot merge partials with and without co-moments: task records "
                              "written with stats.correlation on and off are mixed; rebuild "
                              "with --overwrite, or recompute with chunkstore stats STORE")
        com = (None if self.comoments is None or other.comoments is None
               else self.comoments.merge(other.comoments))
        return Partial(self.rows + other.rows, self.moments.merge(other.moments), com,
                       {h: c + other.class_counts[h] for h, c in self.class_counts.items()},
                       {h: c + other.mask_counts[h] for h, c in self.mask_counts.items()})

    def to_arrays(self) -> dict[str, NDArray[Any]]:
        """Flat arrays (``moments/...``, ``comoments/...``, ``class_counts/<head>``, ...)."""
        out = self.moments.to_arrays("moments/")
        out["rows"] = np.array(self.rows, np.int64)
        if self.comoments is not None:
            out.update(self.comoments.to_arrays("comoments/"))
        out.update({f"class_counts/{h}": c for h, c in self.class_counts.items()})
        out.update({f"mask_counts/{h}": c for h, c in self.mask_counts.items()})
        return out

    @classmethod
    def from_arrays(cls, d: Mapping[str, NDArray[Any]]) -> Partial:
        def group(prefix: str) -> dict[str, I64]:
            return {k[len(prefix):]: np.asarray(v) for k, v in d.items() if k.startswith(prefix)}

        com = CoMoments.from_arrays(d, "comoments/") if "comoments/c" in d else None
        return cls(int(d["rows"]), Moments.from_arrays(d, "moments/"), com,
                   group("class_counts/"), group("mask_counts/"))


def merge_partials(parts: Iterable[Partial], empty: Partial) -> Partial:
    """Merge partials left to right onto ``empty``."""
    return reduce(Partial.merge, parts, empty)

