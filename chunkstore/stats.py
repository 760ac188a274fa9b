"""Partial moments per feature: exact, mergeable, float64 throughout.

A block's moments are computed with a two-pass (mean, then squared deviations) in float64 and
blocks are merged with Chan et al.'s pairwise formulas. Never E[x^2] - E[x]^2 and never a
float32 accumulator: both lose every digit on offset data. Non-finite values (NaN, +/-inf) are
left out of the moments and counted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import reduce
from typing import Any

import numpy as np
from numpy.typing import NDArray

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]

ROW_BLOCK = 2048  # rows per two-pass block: bounds the float64 working copy


@dataclass(frozen=True)
class Moments:
    """Per-feature count of finite values, NaN and inf counts, min, max, mean and M2."""

    count: I64
    nan_count: I64
    inf_count: I64
    min: F64
    max: F64
    mean: F64
    m2: F64

    @classmethod
    def empty(cls, n_features: int) -> Moments:
        z = np.zeros(n_features, dtype=np.int64)
        return cls(z, z.copy(), z.copy(), np.full(n_features, np.inf),
                   np.full(n_features, -np.inf), np.zeros(n_features), np.zeros(n_features))

    @classmethod
    def of_block(cls, x: NDArray[Any]) -> Moments:
        """Moments of a (rows, F) block, two-pass in float64, ``ROW_BLOCK`` rows at a time."""
        if x.shape[0] > ROW_BLOCK:
            parts = (cls.of_block(x[i:i + ROW_BLOCK]) for i in range(0, x.shape[0], ROW_BLOCK))
            return merge_all(parts, x.shape[1])
        v = x.astype(np.float64)
        finite = np.isfinite(v)
        if finite.all():
            n = np.full(v.shape[1], v.shape[0], dtype=np.int64)
            mean = v.mean(axis=0) if v.shape[0] else np.zeros(v.shape[1])
            m2 = ((v - mean) ** 2).sum(axis=0)
            lo = v.min(axis=0, initial=np.inf)
            hi = v.max(axis=0, initial=-np.inf)
            z = np.zeros(v.shape[1], dtype=np.int64)
            return cls(n, z, z.copy(), lo, hi, mean, m2)
        n = finite.sum(axis=0)
        nan = np.isnan(v).sum(axis=0)
        vz = np.where(finite, v, 0.0)
        mean = np.divide(vz.sum(axis=0), n, out=np.zeros(v.shape[1]), where=n > 0)
        m2 = (np.where(finite, v - mean, 0.0) ** 2).sum(axis=0)
        lo = np.where(finite, v, np.inf).min(axis=0, initial=np.inf)
        hi = np.where(finite, v, -np.inf).max(axis=0, initial=-np.inf)
        return cls(n, nan, v.shape[0] - n - nan, lo, hi, mean, m2)

    def merge(self, other: Moments) -> Moments:
        """Chan's pairwise combination; exact up to rounding and independent of block sizes."""
        na, nb = self.count.astype(np.float64), other.count.astype(np.float64)
        n = na + nb
        delta = other.mean - self.mean
        with np.errstate(invalid="ignore", divide="ignore"):
            wb = np.where(n > 0, nb / n, 0.0)
            mean = self.mean + delta * wb
            m2 = self.m2 + other.m2 + np.where(n > 0, delta * delta * na * wb, 0.0)
        return Moments(self.count + other.count, self.nan_count + other.nan_count,
                       self.inf_count + other.inf_count, np.minimum(self.min, other.min),
                       np.maximum(self.max, other.max), mean, m2)

    @property
    def var(self) -> F64:
        """Population variance (ddof=0); NaN where there are no finite values."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.count > 0, self.m2 / self.count, np.nan)

    @property
    def std(self) -> F64:
        return np.sqrt(self.var)

    def to_arrays(self, prefix: str = "") -> dict[str, NDArray[Any]]:
        return {prefix + k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_arrays(cls, d: Mapping[str, NDArray[Any]], prefix: str = "") -> Moments:
        return cls(**{k: np.asarray(d[prefix + k]) for k in cls.__dataclass_fields__})


def merge_all(parts: Iterable[Moments], n_features: int) -> Moments:
    """Merge moments left to right (a fixed order gives bit-identical results)."""
    return reduce(Moments.merge, parts, Moments.empty(n_features))


def class_counts(labels: NDArray[Any], classes: int) -> I64:
    """Samples per class of one head."""
    return np.bincount(labels.astype(np.int64), minlength=classes).astype(np.int64)
