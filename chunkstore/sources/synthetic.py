"""``synthetic``: deterministic, seed-shaped imitation-learning data with no input files.

Items are episodes of varying length. Features mix sparse binary flags, small counts, slowly
varying quantized trajectories and full-precision Gaussian columns (so they compress roughly like
real game-state features); every head's label is a noisy argmax of a few Gaussian features (so
statistics and mutual information are meaningful); masks always allow the true label; the group
id of a row is its episode. Every value is a pure function of (seed, item, row).
"""

from __future__ import annotations

from functools import cached_property
from typing import Annotated, Any

import numpy as np
from numpy.typing import NDArray
from pydantic import Field, StrictFloat, StrictInt, model_validator

from chunkstore.core.schema import NonNegativeInt, PositiveInt, invalid
from chunkstore.sources.base import Batch, Source, SourceOptions

BINARY, COUNT, WALK, GAUSS = range(4)
KIND_SHARES = (0.45, 0.25, 0.22, 0.08)


class SyntheticOptions(SourceOptions):
    """``kind: synthetic``: ``n_samples`` rows in episodes of ``item_rows`` [min, max] rows."""

    n_samples: PositiveInt
    seed: NonNegativeInt = 0
    item_rows: tuple[PositiveInt, PositiveInt] = (100, 1000)
    nan_fraction: Annotated[StrictFloat | StrictInt, Field(ge=0.0, le=1.0)] = 0.0

    @model_validator(mode="after")
    def _rows_ordered(self) -> SyntheticOptions:
        lo, hi = self.item_rows
        if lo > hi:
            raise invalid(f"min {lo} is larger than max {hi}", "item_rows")
        return self

    def to_dict(self) -> dict[str, Any]:
        return {"n_samples": self.n_samples, "seed": self.seed,
                "item_rows": list(self.item_rows), "nan_fraction": float(self.nan_fraction)}


class SyntheticSource(Source):
    """Seeded episodes; ``counts()`` needs no generation, ``read`` generates one item."""

    Options = SyntheticOptions
    options: SyntheticOptions

    @property
    def has_group(self) -> bool:
        return True

    def describe(self, item: int) -> str:
        return f"synthetic episode {item} (seed {self.options.seed})"

    def counts(self) -> list[int]:
        o = self.options
        lo, hi = o.item_rows
        rng = np.random.default_rng([o.seed, 0])
        lengths = rng.integers(lo, hi + 1, size=o.n_samples // lo + 1)
        ends = np.cumsum(lengths)
        k = int(np.searchsorted(ends, o.n_samples))  # first item reaching n_samples
        counts = lengths[: k + 1].tolist()
        counts[-1] -= int(ends[k]) - o.n_samples
        return counts

    @cached_property
    def _columns(self) -> dict[str, Any]:
        """Per-column kind and parameters: a function of (seed, F) only."""
        f = self.schema.n_features
        rng = np.random.default_rng([self.options.seed, 1])
        kind = rng.choice(4, size=f, p=KIND_SHARES)
        gauss = np.flatnonzero(kind == GAUSS)
        informative = gauss if gauss.size else np.arange(f)
        heads = {}
        for h, head in enumerate(self.schema.heads):
            hr = np.random.default_rng([self.options.seed, 3, h])
            cols = hr.choice(informative, size=min(6, informative.size), replace=False)
            heads[head.name] = (cols, hr.normal(0.0, 1.5, size=(cols.size, head.classes)))
        return {
            "idx": [np.flatnonzero(kind == k) for k in range(4)],
            "p": rng.beta(0.5, 3.0, size=f).astype(np.float32),
            "lam": rng.uniform(0.2, 6.0, size=f),
            "step": rng.uniform(0.005, 0.05, size=f).astype(np.float32),
            "mu": rng.normal(0.0, 3.0, size=f).astype(np.float32),
            "sigma": rng.uniform(0.5, 2.0, size=f).astype(np.float32),
            "heads": heads,
        }

    def generate(self, item: int, n: int) -> Batch:
        """All ``n`` rows of ``item``."""
        c = self._columns
        rng = np.random.default_rng([self.options.seed, 2, item])
        x = np.empty((n, self.schema.n_features), dtype=np.float32)
        ib, ic, iw, ig = c["idx"]
        x[:, ib] = rng.random((n, ib.size), dtype=np.float32) < c["p"][ib]
        x[:, ic] = rng.poisson(c["lam"][ic], size=(n, ic.size))
        walk = rng.standard_normal((n, iw.size), dtype=np.float32) * c["step"][iw]
        if n:
            walk[0] += rng.standard_normal(iw.size, dtype=np.float32)
        x[:, iw] = np.round(np.cumsum(walk, axis=0) * 32.0) / 32.0
        gauss = rng.standard_normal((n, ig.size), dtype=np.float32) * c["sigma"][ig] + c["mu"][ig]
        x[:, ig] = np.round(gauss * 256.0) / 256.0  # sensor-like precision

        labels: dict[str, NDArray[Any]] = {}
        masks: dict[str, NDArray[Any]] = {}
        for head in self.schema.heads:
            cols, w = c["heads"][head.name]
            z = (x[:, cols] - c["mu"][cols]) / c["sigma"][cols]
            logits = z.astype(np.float64) @ w + rng.gumbel(size=(n, head.classes))
            label = np.argmax(logits, axis=1)
            mask = rng.random((n, head.classes)) < 0.3
            mask[np.arange(n), label] = True
            labels[head.name] = label
            masks[head.name] = mask.astype(np.int8)

        if self.options.nan_fraction > 0 and ig.size:
            holes = rng.random((n, ig.size)) < self.options.nan_fraction
            block = x[:, ig]
            block[holes] = np.nan
            x[:, ig] = block
        return Batch(x, labels, masks, np.full(n, item, dtype=np.int64))

    def read(self, item: int, start: int, stop: int) -> Batch:
        n = self._count(item)
        b = self.generate(item, n)
        if start == 0 and stop == n:
            return b
        return Batch(b.features[start:stop],
                     {k: v[start:stop] for k, v in b.labels.items()},
                     {k: v[start:stop] for k, v in b.masks.items()},
                     None if b.group is None else b.group[start:stop])

    @cached_property
    def _counts(self) -> list[int]:
        return self.counts()

    def _count(self, item: int) -> int:
        return int(self._counts[item])
