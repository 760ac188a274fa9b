"""Sequence windows: ``Dataset.windows(lookback=W, horizon=H, by="group")``.

Each group's rows (an episode, a gene, a sensor run) are a time series. A window is ``W + H``
consecutive rows of one series: the first ``W`` are the lookback, the last ``H`` the horizon.
A series is a maximal run of consecutive rows with the same ``meta/<by>`` value (and, with
``split=``, all in that split), so a window never crosses a group. A series of ``n`` rows holds
``max(0, n - W - H + 1)`` windows; the global window index maps to (series, first row) by a
cumulative sum and ``searchsorted``, with nothing materialized per window.

Map-style reads (``w[i]``) go through a small LRU cache of decoded chunks. The shuffled loader
reuses the row loader's chunk-aware scheme: a window belongs to the chunk of its first row,
chunk order is permuted per epoch, and the windows of ``window_chunks`` chunks are permuted
together; a job decodes its chunks plus the one(s) its windows run into, then gathers all
their rows at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from chunkstore.errors import ReadError
from chunkstore.read.loader import (
    Batch,
    BatchStream,
    WindowJob,
    batch_views,
    normalize_,
    resolve_heads,
    sample_sources,
    split_membership,
    train_normalization,
)
from chunkstore.store.chunkfiles import ChunkCache, as_ids, read_chunk

if TYPE_CHECKING:
    from chunkstore.store.view import StoreView


@dataclass(frozen=True)
class WindowIndex:
    """The series of a store and where their windows start.

    Attributes
    ----------
    run_start, run_length, run_key : first row, rows and ``by`` value of each series.
    first : (series + 1,) global index of each series' first window; ``first[-1]`` = windows.
    length : rows per window, ``W + H``.
    """

    run_start: NDArray[np.int64]
    run_length: NDArray[np.int64]
    run_key: NDArray[np.int64]
    first: NDArray[np.int64]
    length: int

    def __len__(self) -> int:
        return int(self.first[-1])

    def locate(self, i: NDArray[np.int64]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """(series, first row) of global windows ``i`` (cumsum + searchsorted)."""
        run = np.searchsorted(self.first, i, side="right") - 1
        return run, self.run_start[run] + (i - self.first[run])

    def starts(self) -> NDArray[np.int64]:
        """First row of every window, in window order (increasing)."""
        return self.locate(np.arange(len(self), dtype=np.int64))[1]


def build_index(keys: NDArray[Any], length: int,
                member: NDArray[np.bool_] | None = None) -> WindowIndex:
    """Series = maximal runs of equal ``keys`` (within ``member`` rows when given).

    A series of ``n`` rows holds ``max(0, n - length + 1)`` windows.
    """
    n = len(keys)
    change = keys[1:] != keys[:-1]
    if member is not None:
        change |= member[1:] != member[:-1]
    bounds = np.concatenate([[0], np.flatnonzero(change) + 1, [n]]).astype(np.int64)
    start, size = bounds[:-1], np.diff(bounds)
    if n == 0:
        start = size = np.zeros(0, np.int64)
    if member is not None and n:
        keep = member[start]
        start, size = start[keep], size[keep]
    counts = np.maximum(0, size - length + 1)
    first = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    run_key = np.asarray(keys)[start].astype(np.int64) if n else np.zeros(0, np.int64)
    return WindowIndex(start, size, run_key, first, length)


class Windows:
    """Map-style access to the sequence windows of a store, and their shuffled loader.

    Use :meth:`chunkstore.Dataset.windows` to make one. ``w[i]`` is one window:
    ``{"features": (L, F), "labels": {head: (L,)}, "masks": {head: (L, K)}, "index": i,
    "start": first row, "group": group id}`` with ``L = lookback + horizon``; ``w[ids]`` adds a
    leading batch axis.
    """

    def __init__(self, dataset: StoreView, *, lookback: int, horizon: int = 0,
                 by: str | None = "group", split: str | None = None, splits: str = "default",
                 heads: Sequence[str] | None = None, cache_chunks: int = 4) -> None:
        if isinstance(lookback, bool) or not isinstance(lookback, int) or lookback < 1:
            raise ReadError(f"lookback must be an integer >= 1, found {lookback!r}")
        if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 0:
            raise ReadError(f"horizon must be an integer >= 0, found {horizon!r}")
        self.dataset, self.lookback, self.horizon = dataset, lookback, horizon
        self.splits = splits
        self.heads = resolve_heads(dataset, heads)
        if by is None:
            keys: NDArray[Any] = np.zeros(dataset.n_samples, np.int64)
        elif by in dataset.meta:
            keys = np.asarray(dataset.meta[by][:])
        else:
            raise ReadError(f"windows by={by!r} need the array 'meta/{by}' in "
                            f"{dataset.path!r}, which has {sorted(dataset.meta) or 'no meta'};"
                            " ingest a source with groups, or pass by=None to treat the whole "
                            "store as one series")
        if keys.ndim != 1:
            raise ReadError(f"'meta/{by}' must be one value per row, found shape {keys.shape}")
        self.index = build_index(keys, lookback + horizon,
                                 split_membership(dataset, split, splits))
        self.sources = sample_sources(dataset, self.heads)
        span = -(-(self.length - 1) // dataset.chunk_rows) + 1
        self._cache = ChunkCache(self.sources, max(cache_chunks, span))

    @property
    def length(self) -> int:
        """Rows per window: lookback + horizon."""
        return self.lookback + self.horizon

    def __len__(self) -> int:
        return len(self.index)

    def __repr__(self) -> str:
        return (f"<chunkstore.Windows {len(self):,} windows of {self.lookback}+{self.horizon} "
                f"rows over {len(self.index.run_start):,} series>")

    def __getitem__(self, key: Any) -> Batch:
        ids, scalar = as_ids(key, len(self))
        batch = read_windows(self._cache, self.index, ids, self.heads)
        if scalar:
            return _first(batch)
        return batch

    def loader(self, *, batch_size: int = 64, shuffle: bool = True, seed: int = 0,
               window_chunks: int = 8, prefetch: int = 2, drop_last: bool = False,
               normalize: bool = False, threads: int = 2, remainder: str | None = None,
               elastic: bool = True) -> WindowLoader:
        """Shuffled batches of windows, chunk-aware, like :meth:`Dataset.loader`.

        Every window is yielded once per epoch; ``set_epoch``, ``state_dict`` /
        ``load_state_dict``, ``shard`` and DataLoader-worker sharding behave as for the row
        loader. Each batch is ``w[ids]`` for the batch's window ids ``batch["index"]``.
        """
        return WindowLoader(self, batch_size=batch_size, shuffle=shuffle, seed=seed,
                            window_chunks=window_chunks, prefetch=prefetch,
                            drop_last=drop_last, normalize=normalize, threads=threads,
                            remainder=remainder, elastic=elastic)


def _first(batch: Batch) -> Batch:
    return {k: _first(v) if isinstance(v, dict) else v[0] for k, v in batch.items()}


def read_windows(cache: ChunkCache, index: WindowIndex, ids: NDArray[np.int64],
                 heads: Sequence[str], norm: tuple[NDArray[np.float32],
                                                   NDArray[np.float32]] | None = None) -> Batch:
    """The rows of windows ``ids`` through ``cache``, shaped ``(len(ids), L, ...)``."""
    run, start = index.locate(ids)
    rows = start[:, None] + np.arange(index.length, dtype=np.int64)
    names = ["features", *(f"labels/{h}" for h in heads), *(f"masks/{h}" for h in heads)]
    got = cache.gather(names, rows)
    shaped = {k: v.reshape(rows.shape + v.shape[1:]) for k, v in got.items()}
    features = shaped["features"] if norm is None else normalize_(shaped["features"], norm)
    return {
        "features": features,
        "labels": {h: shaped[f"labels/{h}"] for h in heads},
        "masks": {h: shaped[f"masks/{h}"] for h in heads},
        "index": ids,
        "start": start,
        "group": index.run_key[run],
    }


class WindowLoader(BatchStream):
    """Shuffled batches of sequence windows; see :meth:`Windows.loader`."""

    def __init__(self, windows: Windows, *, batch_size: int, shuffle: bool, seed: int,
                 window_chunks: int, prefetch: int, drop_last: bool, normalize: bool,
                 threads: int, remainder: str | None = None, elastic: bool = True) -> None:
        super().__init__(batch_size=batch_size, shuffle=shuffle, seed=seed,
                         window_chunks=window_chunks, prefetch=prefetch, drop_last=drop_last,
                         threads=threads, remainder=remainder, elastic=elastic)
        self.windows = windows
        r, n = windows.dataset.chunk_rows, windows.dataset.n_samples
        self._starts = windows.index.starts()
        self._counts = np.bincount(self._starts // r, minlength=-(-n // r)).astype(np.int64)
        self._first = np.concatenate([[0], np.cumsum(self._counts)]).astype(np.int64)
        self._norm = train_normalization(windows.dataset, windows.splits) if normalize else None

    def _fingerprint(self) -> dict[str, Any]:
        return {**super()._fingerprint(), "lookback": self.windows.lookback,
                "horizon": self.windows.horizon}

    def _items(self, job: WindowJob) -> NDArray[np.int64]:
        return np.concatenate([np.arange(self._first[c], self._first[c + 1], dtype=np.int64)
                               for c in job.chunks.tolist()])

    def _produce(self, job: WindowJob, pieces: list[NDArray[np.int64]]) -> list[Batch]:
        # Decode the job's chunks and the chunk(s) its windows run into, side by side, then
        # gather every window's rows at once; the batches are views of that gather.
        w, r = self.windows, self.windows.dataset.chunk_rows
        n_chunks = len(self._counts)
        span = -(-(w.length - 1) // r) + 1  # chunks one window can touch
        need = np.unique((job.chunks[:, None] + np.arange(span)).ravel())
        need = need[need < n_chunks]
        bufs = {name: np.empty((len(need) * r, *src.shape[1:]), src.dtype)
                for name, src in w.sources.items()}
        for slot, c in enumerate(need.tolist()):
            for name, src in w.sources.items():
                read_chunk(src, c, bufs[name][slot * r:(slot + 1) * r])
        slot_of = np.full(n_chunks, -1, dtype=np.int64)
        slot_of[need] = np.arange(len(need))
        ids = np.concatenate(pieces) if pieces else np.zeros(0, np.int64)
        run, start = w.index.locate(ids)
        rows = start[:, None] + np.arange(w.length, dtype=np.int64)
        local = (slot_of[rows // r] * r + rows % r).ravel()
        whole = {name: np.take(buf, local, axis=0).reshape(rows.shape + buf.shape[1:])
                 for name, buf in bufs.items()}
        if self._norm is not None:
            whole["features"] = normalize_(whole["features"], self._norm)
        return batch_views(whole, w.heads, pieces,
                           {"index": ids, "start": start, "group": w.index.run_key[run]})
