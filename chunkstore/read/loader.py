"""Chunk-aware shuffled batch loader: ``Dataset.loader(...)``.

Random single-row reads from compressed chunks decode a whole chunk per row, ~1000x slower than
a memmap. The loader instead shuffles at two levels, which reads every chunk once per epoch:

1. the epoch's chunks form *windows* of ``window_chunks`` chunks drawn from (seed, epoch),
   stratified across the store (:mod:`chunkstore.read.order`); by default the window is a byte
   budget (``window_bytes`` of decoded arrays), so narrow rows get many chunks per window;
2. a window is decoded once into a window buffer, its chunks split between background threads
   (Blosc releases the GIL), and the window's rows that belong to the split are permuted and
   gathered into batches on demand while the next window decodes
   (:mod:`chunkstore.read.pipeline`): ``1 + prefetch`` decoded windows at a time.

The rows of one epoch form a *stream*: the windows' permuted rows one after the other. Batch
``k`` is rows ``[k * batch_size, (k + 1) * batch_size)`` of the stream (a batch may straddle two
windows), so a position in the stream is all a resume needs; ranks and DataLoader workers take
batches of that one global order in lockstep (:mod:`chunkstore.read.stream`), and the workers
of a rank decode each window together in shared memory (:mod:`chunkstore.read.shared`).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import xxhash
from numpy.typing import NDArray

from chunkstore.errors import ReadError
from chunkstore.read.order import Window
from chunkstore.read.pipeline import JOB_ROWS, WindowSource
from chunkstore.read.slabs import SlabPool
from chunkstore.read.small import SmallArrays
from chunkstore.read.stream import Batch, BatchStream, WindowJob, batch_views
from chunkstore.store import layout
from chunkstore.store.chunkfiles import ChunkSource, chunk_source, read_chunk
from chunkstore.store.stats_io import normalization
from chunkstore.store.view import StoreView

# Default decoded bytes of one window: 64 chunks of 1,024 rows x 893 float32 features, enough
# for a label constant over a chunk with 12 classes to mix like a random permutation (balanced
# windows hold between half and all of it); two windows live (prefetch 1) stay under a third
# of the page cache a memmap of the 547K x 893 store needs.
WINDOW_BYTES = 224 << 20


def window_chunks_for(window_chunks: int | None, window_bytes: int,
                      sources: dict[str, ChunkSource], chunk_rows: int, n_chunks: int) -> int:
    """The window in chunks: ``window_chunks`` when given, else as many chunks as fit
    ``window_bytes`` of decoded arrays (``sources``), at least 1 and at most ``n_chunks``."""
    if window_chunks is not None:
        return window_chunks
    if isinstance(window_bytes, bool) or not isinstance(window_bytes, (int, np.integer)) \
            or window_bytes < 1:
        raise ReadError(f"window_bytes must be an integer >= 1, found {window_bytes!r}")
    row = sum(int(np.prod(s.shape[1:], dtype=np.int64)) * s.dtype.itemsize
              for s in sources.values())
    per_chunk = max(1, row * chunk_rows)
    return int(max(1, min(max(1, n_chunks), int(window_bytes) // per_chunk)))


def resolve_heads(dataset: StoreView, heads: Sequence[str] | None) -> list[str]:
    """The heads to read: all of them when ``heads`` is None."""
    if heads is None:
        return list(dataset.heads)
    if isinstance(heads, str):
        heads = [heads]
    unknown = [h for h in heads if h not in dataset.heads]
    if unknown:
        raise ReadError(f"unknown head(s) {unknown} for store {dataset.path!r}; its heads are "
                        f"{list(dataset.heads)}")
    return list(heads)


def sample_sources(dataset: StoreView, heads: Sequence[str]) -> dict[str, ChunkSource]:
    """How to read ``features`` and the labels and masks of ``heads``, keyed by array path."""
    arrays = {"features": dataset.features, **{f"labels/{h}": dataset.labels[h] for h in heads},
              **{f"masks/{h}": dataset.masks[h] for h in heads}}
    # n_samples, not the arrays' shape: an unfinished streaming store is preallocated far
    # beyond its committed rows (it reads as 0 rows)
    return {name: chunk_source(name, a, dataset.n_samples) for name, a in arrays.items()}


def split_membership(dataset: StoreView, split: str | None,
                     splits: str = layout.DEFAULT_SPLITS) -> NDArray[np.bool_] | None:
    """Boolean (N,) membership of ``split`` in ``splits/<splits>``; None for all rows."""
    if split is None:
        return None
    return dataset.split_array(splits).mask(split)


DUPLICATE_OF = "meta/duplicate_of"


def unique_membership(dataset: StoreView) -> NDArray[np.bool_]:
    """Boolean (N,) of the rows that are first occurrences (``meta/duplicate_of == -1``)."""
    try:
        dup = dataset.array(DUPLICATE_OF)
    except KeyError:
        raise ReadError(f"unique=True needs {DUPLICATE_OF!r} in store {dataset.path!r}, which "
                        "has none: run `chunkstore dedup STORE` first") from None
    if tuple(dup.shape) != (dataset.n_samples,):
        raise ReadError(f"{DUPLICATE_OF!r} of store {dataset.path!r} has shape {dup.shape}, "
                        f"expected ({dataset.n_samples},): rerun `chunkstore dedup STORE` "
                        "(the store grew since it ran)")
    return np.asarray(dup[...]) == -1


def _rows_digest(rows: NDArray[np.bool_], n: int) -> str:
    """A short digest of an explicit row membership (part of the resume fingerprint)."""
    rows = np.asarray(rows)
    if rows.dtype != np.bool_ or rows.shape != (n,):
        raise ReadError(f"rows= must be a boolean array of the store's {n} rows, found "
                        f"{rows.dtype} {rows.shape}")
    return format(xxhash.xxh3_64_intdigest(np.packbits(rows).tobytes()), "016x")


def row_membership(dataset: StoreView, split: str | None, splits: str, unique: bool
                   ) -> NDArray[np.bool_] | None:
    """The rows a loader reads: of ``split`` (all if None), first occurrences only if
    ``unique``; None for every row."""
    member = split_membership(dataset, split, splits)
    if not unique:
        return member
    first = unique_membership(dataset)
    return first if member is None else member & first


def train_normalization(dataset: StoreView, splits: str = layout.DEFAULT_SPLITS
                        ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """(mean, 1 / std) as float32 from the train part's statistics of split set ``splits``
    (``stats/train`` for the default set, ``stats/<splits>/train`` otherwise, as ``chunkstore
    stats --split train --split-set <splits>`` writes them), guarded like
    ``stats.normalization``: a zero, tiny or undefined std counts as 1, an undefined mean as 0."""
    scope = "train" if splits == layout.DEFAULT_SPLITS else f"{splits}/train"
    try:
        mean = np.asarray(dataset.array(f"stats/{scope}/mean")[:], dtype=np.float64)
        std = np.asarray(dataset.array(f"stats/{scope}/std")[:], dtype=np.float64)
    except KeyError:
        option = "" if splits == layout.DEFAULT_SPLITS else f" --split-set {splits}"
        raise ReadError(f"normalize=True needs 'stats/{scope}/mean' and 'stats/{scope}/std' in "
                        f"{dataset.path!r}, which has none; compute them with `chunkstore "
                        f"stats STORE --split train{option}` (normalizing with statistics that "
                        "saw validation rows would leak them)") from None
    n = len(dataset.feature_names)
    if mean.shape != (n,) or std.shape != (n,):
        raise ReadError(f"stats/{scope}/mean and std of {dataset.path!r} have shapes "
                        f"{mean.shape} and {std.shape}, expected ({n},)")
    norm = normalization(mean, std)
    return norm.mean, (1.0 / norm.std).astype(np.float32)


def normalize_(features: NDArray[Any], norm: tuple[NDArray[np.float32], NDArray[np.float32]]
               ) -> NDArray[np.float32]:
    """``(x - mean) / std`` as float32, in place when ``features`` already is float32."""
    out = features.astype(np.float32, copy=False)
    out -= norm[0]
    out *= norm[1]
    return out


class Loader(BatchStream, WindowSource):
    """Shuffled dict batches over all rows or one split; see the module docstring.

    Use :meth:`chunkstore.reader.StoreView.loader` to make one. Each batch is
    ``{"features": (b, F), "labels": {head: (b,)}, "masks": {head: (b, K)}, "index": (b,)}``
    with ``index`` the store rows. ``unique=True`` skips the rows that ``chunkstore dedup``
    marked as duplicates (``meta/duplicate_of != -1``). The window is ``window_chunks`` chunks,
    or (``window_chunks=None``, the default) as many chunks as fit ``window_bytes`` of decoded
    arrays (labels and masks kept decoded whole do not count). Memory: ``1 + prefetch``
    decoded windows plus a few gathered batches.
    """

    def __init__(self, dataset: StoreView, *, batch_size: int = 256, split: str | None = None,
                 shuffle: bool = True, seed: int = 0, window_chunks: int | None = None,
                 window_bytes: int = WINDOW_BYTES, prefetch: int = 1, drop_last: bool = False,
                 normalize: bool = False, heads: Sequence[str] | None = None,
                 splits: str = "default", threads: int = 2, unique: bool = False,
                 rows: NDArray[np.bool_] | None = None,
                 remainder: str | None = None, elastic: bool = True) -> None:
        self.dataset = dataset
        self.heads = resolve_heads(dataset, heads)
        self.sources = sample_sources(dataset, self.heads)
        self._small = self._new_small()
        super().__init__(batch_size=batch_size, shuffle=shuffle, seed=seed,
                         window_chunks=window_chunks_for(
                             window_chunks, window_bytes, self._decoded(), dataset.chunk_rows,
                             -(-dataset.n_samples // dataset.chunk_rows)),
                         prefetch=prefetch, drop_last=drop_last,
                         remainder=remainder, elastic=elastic, threads=threads)
        self.window_bytes = window_bytes
        self.split = split
        self.unique = bool(unique)
        if normalize and np.dtype(dataset.features.dtype).kind in "iu":
            raise ReadError(f"normalize=True is for float features; the features of "
                            f"{dataset.path!r} are {dataset.features.dtype} (token ids or "
                            "codes), which are used as they are (e.g. by an embedding)")
        self._norm = train_normalization(dataset, splits) if normalize else None
        r, n = dataset.chunk_rows, dataset.n_samples
        self._member = row_membership(dataset, split, splits, self.unique)
        self._rows_digest = None if rows is None else _rows_digest(rows, n)
        if rows is not None:
            self._member = rows if self._member is None else self._member & rows
        if self._member is None:
            per_chunk = np.full(-(-n // r), r, dtype=np.int64)
            per_chunk[-1:] = n - r * (len(per_chunk) - 1)
            self._counts = per_chunk if n else np.zeros(0, np.int64)
        else:
            self._counts = np.add.reduceat(self._member.astype(np.int64),
                                           np.arange(0, n, r)) if n else np.zeros(0, np.int64)
        self._job_slabs = self._new_slabs()
        self._n_decoded, self._decode_lock = 0, threading.Lock()  # chunks decoded, for stats

    @property
    def chunks_decoded(self) -> int:
        """Row-chunks this loader decoded so far (one per chunk and epoch in one process; a
        DataLoader worker decodes its share of each window)."""
        return self._n_decoded

    def _new_small(self) -> SmallArrays | None:
        """Labels and masks kept decoded across epochs when they are small (see read.small)."""
        small = {k: s for k, s in self.sources.items() if k != "features"}
        return SmallArrays(small) if small and SmallArrays.fits(small) else None

    def _new_slabs(self) -> SlabPool:
        """Recycled output buffers of one gather job (read.pipeline)."""
        rows = JOB_ROWS + self.batch_size
        shapes = {k: ((rows, *s.shape[1:]), s.dtype) for k, s in self.sources.items()}
        return SlabPool(lambda: {k: np.empty(*v) for k, v in shapes.items()},
                        keep=self.threads + 4)  # gathers in flight, and what the caller holds

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_small"], state["_job_slabs"], state["_decode_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._job_slabs = self._new_slabs()
        self._decode_lock = threading.Lock()
        self._small = self._new_small()

    def shard(self, rank: int, world_size: int) -> Loader:
        other = super().shard(rank, world_size)
        other._job_slabs = other._new_slabs()
        other._n_decoded, other._decode_lock = 0, threading.Lock()
        other._small = self._small  # one decoded copy per process, whatever the shard
        return other

    def _fingerprint(self) -> dict[str, Any]:
        # "unique" only when set, so states saved before the option existed still load
        return {**super()._fingerprint(), "split": self.split,
                **({"unique": True} if self.unique else {}),
                **({"rows": self._rows_digest} if self._rows_digest else {})}

    def _items(self, job: WindowJob) -> NDArray[np.int64]:
        r, n = self.dataset.chunk_rows, self.dataset.n_samples
        parts = []
        for slot, c in enumerate(job.chunks.tolist()):
            lo, hi = c * r, min(n, (c + 1) * r)
            local = (np.arange(hi - lo) if self._member is None
                     else np.flatnonzero(self._member[lo:hi]))
            parts.append(local + slot * r)
        return np.concatenate(parts).astype(np.int64)

    def _decoded(self) -> dict[str, ChunkSource]:
        """The arrays decoded per window: all, or only features when the rest is kept."""
        if self._small is None:
            return self.sources
        return {k: s for k, s in self.sources.items() if k not in self._small.sources}

    # -- the pipeline's hooks (read.pipeline): one decoded window, batches gathered on demand;
    # the window buffers are this process's own, so the other hooks keep WindowSource's defaults
    def _pipeline_source(self) -> Loader:
        return self

    def window_layout(self) -> dict[str, tuple[tuple[int, ...], Any]]:
        """Shape and dtype of each array of one decoded window."""
        rows = self.window_chunks * self.dataset.chunk_rows
        return {k: ((rows, *s.shape[1:]), s.dtype) for k, s in self._decoded().items()}

    def window_buffers(self) -> dict[str, NDArray[Any]]:
        return {k: np.empty(*v) for k, v in self.window_layout().items()}

    def ensure_small(self, window: Window) -> None:
        """Labels and masks of all the window's chunks in the kept decoded copies."""
        if self._small is not None:
            self._small.ensure(window.chunks)

    def decode(self, buffers: dict[str, NDArray[Any]], window: Window, slots: list[int]
               ) -> None:
        r = self.dataset.chunk_rows
        decoded = self._decoded()
        for slot in slots:
            c = int(window.chunks[slot])
            for name, src in decoded.items():
                read_chunk(src, c, buffers[name][slot * r:(slot + 1) * r])
        if self._small is not None:
            self._small.ensure(window.chunks[slots])
        with self._decode_lock:
            self._n_decoded += len(slots)

    def gather(self, buffers: dict[str, NDArray[Any]], window: Window, items: NDArray[np.int64],
               sizes: list[int]) -> list[Batch]:
        r, n = self.dataset.chunk_rows, len(items)
        index = window.chunks[items // r] * r + items % r
        slab = self._job_slabs.acquire()
        try:
            if n > len(next(iter(slab.values()))):  # never with the pipeline's job sizes
                slab = {k: np.empty((n, *v.shape[1:]), v.dtype) for k, v in slab.items()}
            # mode="clip": unbuffered (rows are in range), straight into the slab
            whole = {name: np.take(buf, items, axis=0, out=slab[name][:n], mode="clip")
                     for name, buf in buffers.items()}
            if self._small is not None:
                whole.update(self._small.take(index, slab))
        finally:
            self._job_slabs.release(slab)
        if self._norm is not None:
            whole["features"] = normalize_(whole["features"], self._norm)
        pieces = np.split(index, np.cumsum(sizes)[:-1])
        return batch_views(whole, self.heads, pieces, {"index": index})
