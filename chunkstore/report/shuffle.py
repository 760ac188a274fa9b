"""How well does the loader shuffle? Measured against a truly random permutation.

A chunk-aware loader reads whole chunks and shuffles inside a window of them, so a batch draws
its rows from a few chunks. When the store is ordered (by episode, by file, by class), rows of
one chunk are alike and batches come out correlated: fewer distinct classes per batch than a
random permutation gives (the failure users of FFCV, MosaicML streaming and LitData report).

:func:`shuffle_report` runs one epoch of a loader, keeps only each batch's row indices, and
compares with a seeded random permutation of the same rows cut into the same batch sizes:

* **distinct classes per batch**, per head: mean and 5th percentile, overall and in the first,
  middle and last 10% of the epoch (where chunk-local shuffles degrade), and the ratio to the
  random permutation's mean (1.0 = as good as random);
* **chunks per batch**: distinct store chunks a batch reads from;
* **adjacent batches sharing a chunk**: the fraction of consecutive batch pairs that read a
  common chunk;
* **rank correlation** (Spearman) of stream position vs store row: ~0 when shuffled, 1 in
  store order.

Only the labels are read in full (``N`` small integers per head). With ``decode=True``
(default) the loader runs one epoch as in training (features decoded); ``decode=False``
computes the same order from the epoch's plan (:mod:`chunkstore.read.order`) without reading
any chunk, which takes milliseconds and is what the window sweeps use.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from chunkstore.read.loader import Loader
from chunkstore.read.order import global_items, global_windows
from chunkstore.store import layout
from chunkstore.store.view import StoreView

I64 = NDArray[np.int64]
SEGMENTS = {"first 10%": (0.0, 0.1), "middle 10%": (0.45, 0.55), "last 10%": (0.9, 1.0)}


@dataclass(frozen=True)
class OrderFigures:
    """Shuffle-quality figures of one order of rows (the loader's or a random one)."""

    batches: int
    distinct_classes: dict[str, dict[str, float]]  # head -> {"mean", "p5", "<segment>" ...}
    chunks_per_batch: float
    adjacent_share_chunk: float
    rank_correlation: float

    def to_dict(self) -> dict[str, Any]:
        return {"batches": self.batches, "distinct_classes": self.distinct_classes,
                "chunks_per_batch": self.chunks_per_batch,
                "adjacent_share_chunk": self.adjacent_share_chunk,
                "rank_correlation": self.rank_correlation}


@dataclass(frozen=True)
class ShuffleReport:
    """The loader's figures, a random permutation's, and their ratios (1.0 = as random)."""

    loader: OrderFigures
    random: OrderFigures
    settings: dict[str, Any] = field(default_factory=dict)

    def ratio(self, head: str, key: str = "mean") -> float:
        """Loader / random distinct classes per batch of ``head`` (``key``: mean, p5, or a
        segment such as ``"last 10%"``)."""
        mine, rand = (self.loader.distinct_classes[head][key],
                      self.random.distinct_classes[head][key])
        return mine / rand if rand else float("nan")

    def worst_ratio(self) -> float:
        """The lowest ratio over every head, overall mean and each segment."""
        keys = ["mean", *SEGMENTS]
        return min(self.ratio(h, k) for h in self.loader.distinct_classes for k in keys)

    def to_dict(self) -> dict[str, Any]:
        return {"settings": self.settings, "loader": self.loader.to_dict(),
                "random": self.random.to_dict(),
                "ratio": {h: {k: self.ratio(h, k) for k in ["mean", "p5", *SEGMENTS]}
                          for h in self.loader.distinct_classes}}

    def __str__(self) -> str:
        lines = [f"shuffle quality, {self.loader.batches} batches "
                 f"({', '.join(f'{k}={v}' for k, v in self.settings.items())}):",
                 f"  {'':24s} {'loader':>10s} {'random':>10s} {'ratio':>7s}"]
        for head, figs in self.loader.distinct_classes.items():
            for key in ["mean", "p5", *SEGMENTS]:
                rand = self.random.distinct_classes[head][key]
                lines.append(f"  {head + ' ' + key:24s} {figs[key]:10.2f} {rand:10.2f} "
                             f"{self.ratio(head, key):7.3f}")
        for name in ("chunks_per_batch", "adjacent_share_chunk", "rank_correlation"):
            mine, rand = getattr(self.loader, name), getattr(self.random, name)
            lines.append(f"  {name.replace('_', ' '):24s} {mine:10.3f} {rand:10.3f}")
        return "\n".join(lines)


def shuffle_report(dataset: StoreView, *, heads: Sequence[str] | None = None,
                   batch_size: int = 256, epoch: int = 0, seed: int = 0,
                   split: str | None = None, splits: str = layout.DEFAULT_SPLITS,
                   decode: bool = True, **loader_options: Any) -> ShuffleReport:
    """Run one epoch of ``dataset.loader(...)`` and measure its shuffle quality.

    Parameters
    ----------
    dataset : an open store.
    heads : the heads whose labels are counted; None = all.
    batch_size, seed, split, splits : as for the loader; ``epoch`` is the epoch measured.
    decode : run the loader for one epoch (True), or compute its one-rank order from the
        epoch's plan without reading chunks (False; the elastic loader's order).
    loader_options : any other loader option (``window_chunks``, ``prefetch``, ...).

    Examples
    --------
    >>> report = chunkstore.shuffle_report(ds, window_chunks=32)  # doctest: +SKIP
    >>> report.worst_ratio()  # doctest: +SKIP
    0.97
    """
    chosen = list(dataset.heads) if heads is None else list(heads)
    loader = Loader(dataset, batch_size=batch_size, split=split, splits=splits, seed=seed,
                    heads=chosen[:1], **loader_options)
    loader.set_epoch(epoch)
    batches = ([np.asarray(b["index"], np.int64) for b in loader] if decode
               else planned_batches(loader))
    labels = {h: np.asarray(dataset.labels[h][:]) for h in chosen}
    rows = np.concatenate(batches) if batches else np.zeros(0, np.int64)
    perm = np.random.default_rng([seed, epoch, 0x5EED]).permutation(np.sort(rows))
    cuts = np.cumsum([len(b) for b in batches])[:-1]
    settings = {"batch_size": batch_size, "seed": seed, "epoch": epoch, **loader_options}
    return ShuffleReport(order_figures(batches, labels, dataset.chunk_rows),
                         order_figures(np.split(perm, cuts), labels, dataset.chunk_rows),
                         settings)


def planned_batches(loader: Loader) -> list[I64]:
    """The store rows of each batch of ``loader``'s epoch for one rank, from the plan alone."""
    r = loader.dataset.chunk_rows
    windows = global_windows(loader._counts, seed=loader.seed, epoch=loader.epoch,
                             shuffle=loader.shuffle, window_chunks=loader.window_chunks)
    rows = []
    for w in windows:
        local = loader._items(w)  # type: ignore[arg-type]  # a Window is a WindowJob's shape
        rows.append(w.chunks[local // r] * r + local % r)
    order = global_items(windows, rows, seed=loader.seed, epoch=loader.epoch,
                         shuffle=loader.shuffle)
    b = loader.batch_size
    cut = len(order) // b * b if loader.drop_last else len(order)
    return [order[i:i + b] for i in range(0, cut, b)]


def order_figures(batches: Sequence[I64], labels: dict[str, NDArray[Any]],
                  chunk_rows: int) -> OrderFigures:
    """The figures of one order given as its batches of store row indices."""
    chunks = [np.unique(b // chunk_rows) for b in batches]
    shared = [len(np.intersect1d(a, b, assume_unique=True)) > 0
              for a, b in zip(chunks, chunks[1:], strict=False)]
    return OrderFigures(
        batches=len(batches),
        distinct_classes={h: _distinct(batches, y) for h, y in labels.items()},
        chunks_per_batch=float(np.mean([len(c) for c in chunks])) if chunks else 0.0,
        adjacent_share_chunk=float(np.mean(shared)) if shared else 0.0,
        rank_correlation=_spearman(np.concatenate(batches) if batches else np.zeros(0)))


def _distinct(batches: Sequence[I64], y: NDArray[Any]) -> dict[str, float]:
    counts = np.array([len(np.unique(y[b])) for b in batches], np.float64)
    out = {"mean": float(counts.mean()) if len(counts) else 0.0,
           "p5": float(np.percentile(counts, 5)) if len(counts) else 0.0}
    for name, (lo, hi) in SEGMENTS.items():
        part = counts[int(lo * len(counts)):max(int(hi * len(counts)), int(lo * len(counts)) + 1)]
        out[name] = float(part.mean()) if len(part) else 0.0
    return out


def _spearman(order: NDArray[Any]) -> float:
    """Rank correlation of stream position vs store row (rows are distinct: ranks, no ties)."""
    n = len(order)
    if n < 2:
        return 0.0
    ranks = np.empty(n, np.float64)
    ranks[np.argsort(order, kind="stable")] = np.arange(n, dtype=np.float64)
    return float(np.corrcoef(np.arange(n, dtype=np.float64), ranks)[0, 1])
