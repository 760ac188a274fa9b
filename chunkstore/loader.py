"""Chunk-aware shuffled batch loader: ``Dataset.loader(...)``.

Random single-row reads from compressed chunks decode a whole chunk per row, ~1000x slower than
a memmap. The loader instead shuffles at two levels, which reads every chunk once per epoch:

1. the order of the chunks is a permutation drawn from (seed, epoch);
2. consecutive chunks of that order form *windows* of ``window_chunks`` chunks; a window is
   decoded at once in a background thread (Blosc releases the GIL) and the window's rows that
   belong to the split are permuted and cut into batches, while the next windows are prefetched.

The rows of one epoch form a *stream*: the windows' permuted rows one after the other. Batch
``k`` is rows ``[k * batch_size, (k + 1) * batch_size)`` of the stream (a batch may straddle two
windows), so a position in the stream is all a resume needs. Sharding (ranks, DataLoader
workers) deals the chunks of the permuted order round-robin, so the shards are disjoint, cover
every row once, and each shard decodes only its own chunks.

:class:`BatchStream` holds the plan, prefetch, resume and sharding logic shared with sequence
windows (:mod:`chunkstore.windows`); :class:`Loader` is the row loader.
"""

from __future__ import annotations

import copy
import sys
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from .chunks import ChunkSource, SlabPool, chunk_source, read_chunk
from .errors import ReadError
from .stats_store import normalization

if TYPE_CHECKING:
    from .reader import Dataset

Batch = dict[str, Any]


@dataclass(frozen=True)
class WindowJob:
    """One window of an epoch's plan: which chunks, and where its items sit in the stream."""

    number: int  # position of the window in this shard's epoch
    chunks: NDArray[np.int64]
    start: int  # stream offset of the window's first item
    count: int  # items (rows, or sequence windows) the window contributes


def chunk_order(n_chunks: int, *, seed: int, epoch: int, shuffle: bool) -> NDArray[np.int64]:
    """The epoch's chunk order: a permutation drawn from (seed, epoch), or 0..n-1."""
    if not shuffle:
        return np.arange(n_chunks, dtype=np.int64)
    rng = np.random.default_rng(np.random.SeedSequence([seed, epoch, 0]))
    return rng.permutation(n_chunks).astype(np.int64)


def plan_epoch(counts: NDArray[np.int64], *, seed: int, epoch: int, shuffle: bool,
               window_chunks: int, rank: int = 0, world_size: int = 1) -> list[WindowJob]:
    """Windows of one shard's epoch, in stream order.

    ``counts[c]`` is the number of items chunk ``c`` contributes (0 skips the chunk: it is
    never read). The non-empty chunks of the epoch's order are dealt round-robin to the
    ``world_size`` shards, then grouped into windows of ``window_chunks``.
    """
    order = chunk_order(len(counts), seed=seed, epoch=epoch, shuffle=shuffle)
    mine = order[counts[order] > 0][rank::world_size]
    jobs, start = [], 0
    for number, i in enumerate(range(0, len(mine), window_chunks)):
        chunks = mine[i:i + window_chunks]
        n = int(counts[chunks].sum())
        jobs.append(WindowJob(number, chunks, start, n))
        start += n
    return jobs


def cut(start: int, skip: int, count: int, batch_size: int) -> list[tuple[int, int]]:
    """Ranges ``[a, b)`` of a window's items ``[skip, count)`` cut on the stream's batch grid.

    The window's item ``i`` is stream row ``start + i``; a range never crosses a multiple of
    ``batch_size``, so every range belongs to exactly one batch.
    """
    out, a = [], skip
    while a < count:
        b = min(count, ((start + a) // batch_size + 1) * batch_size - start)
        out.append((a, b))
        a = b
    return out


def concat_batches(parts: Sequence[Batch]) -> Batch:
    """Concatenate batch pieces (nested dicts of arrays) along the first axis."""
    if len(parts) == 1:
        return parts[0]
    return {k: concat_batches([p[k] for p in parts]) if isinstance(v, dict)
            else np.concatenate([p[k] for p in parts]) for k, v in parts[0].items()}


def torch_worker() -> tuple[int, int]:
    """(worker id, number of workers) inside a torch DataLoader worker, else (0, 1)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return 0, 1
    info = torch.utils.data.get_worker_info()
    return (0, 1) if info is None else (int(info.id), int(info.num_workers))


def _positive(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ReadError(f"{name} must be an integer >= {minimum}, found {value!r}")
    return int(value)


class BatchStream:
    """Plan, prefetch, resume and sharding shared by the row loader and sequence windows.

    Subclasses give ``_counts`` (items per chunk), ``_items(job)`` (the window's item ids in
    natural order) and ``_produce(job, pieces)`` (read the items of each piece into a batch).
    """

    def __init__(self, *, batch_size: int, shuffle: bool, seed: int, window_chunks: int,
                 prefetch: int, drop_last: bool, threads: int) -> None:
        self.batch_size = _positive("batch_size", batch_size)
        self.seed = _positive("seed", seed, 0)
        self.window_chunks = _positive("window_chunks", window_chunks)
        self.prefetch = _positive("prefetch", prefetch, 0)
        self.threads = _positive("threads", threads)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.epoch = 0
        self.rank, self.world_size = 0, 1
        self._position = 0  # stream rows yielded so far in this epoch
        self._resume = 0  # where the next iteration starts (set by load_state_dict)

    # -- subclass hooks ---------------------------------------------------------------------
    _counts: NDArray[np.int64]

    def _items(self, job: WindowJob) -> NDArray[np.int64]:
        raise NotImplementedError

    def _produce(self, job: WindowJob, pieces: list[NDArray[np.int64]]) -> list[Batch]:
        raise NotImplementedError

    # -- public API -------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch`` from now on (call it at the start of every epoch).

        A resume position loaded with :meth:`load_state_dict` is kept when ``epoch`` is the
        epoch it was saved in, and dropped otherwise.
        """
        epoch = _positive("epoch", epoch, 0)
        if epoch != self.epoch:
            self._resume = 0
        self.epoch = epoch

    def shard(self, rank: int, world_size: int) -> BatchStream:
        """A copy that reads only shard ``rank`` of ``world_size`` (e.g. one per DDP rank).

        Shards are disjoint and together hold every item once per epoch; their lengths differ
        by at most a few chunks' worth of items. Inside a torch DataLoader worker each shard is
        split again between the workers automatically.
        """
        world_size = _positive("world_size", world_size)
        if not 0 <= rank < world_size:
            raise ReadError(f"rank must be in [0, {world_size}), found {rank!r}")
        other = copy.copy(self)
        other.rank, other.world_size = int(rank), world_size
        other._position = other._resume = 0
        return other

    def shard_key(self) -> tuple[int, int]:
        """(shard, shards) actually read: ``shard()``'s rank split between DataLoader workers."""
        worker, workers = torch_worker()
        return self.rank * workers + worker, self.world_size * workers

    def plan(self) -> list[WindowJob]:
        """This shard's windows for the current epoch (sharded across DataLoader workers too)."""
        rank, world_size = self.shard_key()
        return plan_epoch(self._counts, seed=self.seed, epoch=self.epoch, shuffle=self.shuffle,
                          window_chunks=self.window_chunks, rank=rank, world_size=world_size)

    @property
    def n_items(self) -> int:
        """Items (rows or windows) of this shard's epoch."""
        jobs = self.plan()
        return jobs[-1].start + jobs[-1].count if jobs else 0

    def __len__(self) -> int:
        """Batches per epoch of this shard."""
        n, b = self.n_items, self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def state_dict(self) -> dict[str, Any]:
        """Where iteration stands: load it into a new loader to resume mid-epoch exactly."""
        return {"epoch": self.epoch, "position": self._position, **self._fingerprint()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict`: the next iteration yields the rest of that epoch.

        Raises
        ------
        ReadError
            If the state was saved by a loader with a different configuration (batch size,
            seed, shuffle, window, shard or items), since its stream would differ.
        """
        mine = self._fingerprint()
        diff = sorted(k for k in mine if state.get(k) != mine[k])
        if diff:
            raise ReadError("cannot resume: the saved state comes from a loader configured "
                            "differently in " + ", ".join(
                                f"{k} (saved {state.get(k)!r}, this loader {mine[k]!r})"
                                for k in diff))
        position = _positive("position", state["position"], 0)
        self.epoch = _positive("epoch", state["epoch"], 0)
        self._resume = self._position = position

    def _fingerprint(self) -> dict[str, Any]:
        return {"kind": type(self).__name__, "batch_size": self.batch_size, "seed": self.seed,
                "shuffle": self.shuffle, "window_chunks": self.window_chunks,
                "rank": self.rank, "world_size": self.world_size,
                "items": int(self._counts.sum())}

    def __iter__(self) -> Iterator[Batch]:
        jobs = self.plan()
        total = jobs[-1].start + jobs[-1].count if jobs else 0
        start, self._resume = self._resume, 0
        if start > total or (start % self.batch_size and start != total):
            raise ReadError(f"resume position {start} is not a batch boundary of this epoch's "
                            f"{total} items")
        self._position = start
        jobs = [j for j in jobs if j.start + j.count > start]
        return self._run(jobs, start, self.shard_key())

    def _job(self, job: WindowJob, skip: int, key: tuple[int, int]) -> list[Batch]:
        items = self._items(job)
        if self.shuffle:
            rng = np.random.default_rng(np.random.SeedSequence(
                [self.seed, self.epoch, 1, job.number, *key]))
            items = items[rng.permutation(len(items))]
        pieces = [items[a:b] for a, b in cut(job.start, skip, job.count, self.batch_size)]
        return self._produce(job, pieces)

    def _run(self, jobs: list[WindowJob], start: int, key: tuple[int, int]
             ) -> Iterator[Batch]:
        pool = ThreadPoolExecutor(self.threads, thread_name_prefix="chunkstore-loader")
        pending: deque[Future[list[Batch]]] = deque()
        todo = iter(jobs)

        def submit() -> bool:
            job = next(todo, None)
            if job is not None:
                pending.append(pool.submit(self._job, job, max(0, start - job.start), key))
            return job is not None

        try:
            parts: list[Batch] = []
            have = 0
            while True:
                # the window to consume next plus `prefetch` more are decoding meanwhile
                while len(pending) <= self.prefetch and submit():
                    pass
                if not pending:
                    break
                pieces = pending.popleft().result()
                for piece in pieces:
                    parts.append(piece)
                    have += len(piece["index"])
                    if have == self.batch_size:
                        batch = concat_batches(parts)
                        parts, have = [], 0
                        self._position += self.batch_size
                        yield batch
            if parts and not self.drop_last:
                batch = concat_batches(parts)
                self._position += have
                yield batch
            elif parts:
                self._position += have
        finally:
            for f in pending:
                f.cancel()
            pool.shutdown(wait=True, cancel_futures=True)


def batch_views(whole: dict[str, NDArray[Any]], heads: Sequence[str],
                pieces: list[NDArray[np.int64]], extra: dict[str, NDArray[Any]]) -> list[Batch]:
    """One batch dict per piece, as views of a window's gathered arrays (pieces in order)."""
    out, a = [], 0
    for piece in pieces:
        b = a + len(piece)
        out.append({"features": whole["features"][a:b],
                    "labels": {h: whole[f"labels/{h}"][a:b] for h in heads},
                    "masks": {h: whole[f"masks/{h}"][a:b] for h in heads},
                    **{k: v[a:b] for k, v in extra.items()}})
        a = b
    return out


def resolve_heads(dataset: Dataset, heads: Sequence[str] | None) -> list[str]:
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


def sample_sources(dataset: Dataset, heads: Sequence[str]) -> dict[str, ChunkSource]:
    """How to read ``features`` and the labels and masks of ``heads``, keyed by array path."""
    arrays = {"features": dataset.features, **{f"labels/{h}": dataset.labels[h] for h in heads},
              **{f"masks/{h}": dataset.masks[h] for h in heads}}
    return {name: chunk_source(name, a) for name, a in arrays.items()}


def split_membership(dataset: Dataset, split: str | None, splits: str = "default"
                     ) -> NDArray[np.bool_] | None:
    """Boolean (N,) membership of ``split`` read from ``splits/<splits>``; None for all rows.

    ``splits/<splits>`` holds one int8 code per row and attrs ``{"names": [...]}``: code ``i``
    means split ``names[i]``.
    """
    if split is None:
        return None
    try:
        arr = dataset.array(f"splits/{splits}")
    except KeyError:
        raise ReadError(f"store {dataset.path!r} has no split array 'splits/{splits}' (needed "
                        f"for split={split!r}); compute the splits first, or pass splits=NAME "
                        "to use another split array") from None
    names = list(arr.attrs.get("names", []))  # type: ignore[arg-type]
    if not arr.attrs.get("complete", True):
        raise ReadError(f"split array 'splits/{splits}' of {dataset.path!r} is incomplete (its "
                        "writer stopped); rewrite it before reading a split")
    if split not in names:
        raise ReadError(f"split {split!r} is not in 'splits/{splits}' of {dataset.path!r}, "
                        f"whose splits are {names}")
    codes = np.asarray(arr[:])
    if codes.shape != (dataset.n_samples,):
        raise ReadError(f"'splits/{splits}' of {dataset.path!r} has shape {codes.shape}, "
                        f"expected ({dataset.n_samples},)")
    return codes == names.index(split)


def train_normalization(dataset: Dataset) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """(mean, 1 / std) as float32 from ``stats/train``, guarded like ``stats.normalization``:
    a zero, tiny or undefined std counts as 1 and an undefined mean as 0."""
    try:
        mean = np.asarray(dataset.array("stats/train/mean")[:], dtype=np.float64)
        std = np.asarray(dataset.array("stats/train/std")[:], dtype=np.float64)
    except KeyError:
        raise ReadError(f"normalize=True needs 'stats/train/mean' and 'stats/train/std' in "
                        f"{dataset.path!r}, which has none; compute them with `chunkstore "
                        "stats STORE --split train` (normalizing with statistics that saw "
                        "validation rows would leak them)") from None
    n = len(dataset.feature_names)
    if mean.shape != (n,) or std.shape != (n,):
        raise ReadError(f"stats/train/mean and std of {dataset.path!r} have shapes "
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


class Loader(BatchStream):
    """Shuffled dict batches over all rows or one split; see the module docstring.

    Use :meth:`chunkstore.reader.Dataset.loader` to make one. Each batch is
    ``{"features": (b, F), "labels": {head: (b,)}, "masks": {head: (b, K)}, "index": (b,)}``
    with ``index`` the store rows. Memory: about ``(threads + prefetch + 2) x window_chunks``
    decoded chunks of all arrays read.
    """

    def __init__(self, dataset: Dataset, *, batch_size: int = 256, split: str | None = None,
                 shuffle: bool = True, seed: int = 0, window_chunks: int = 8,
                 prefetch: int = 2, drop_last: bool = False, normalize: bool = False,
                 heads: Sequence[str] | None = None, splits: str = "default",
                 threads: int = 2) -> None:
        super().__init__(batch_size=batch_size, shuffle=shuffle, seed=seed,
                         window_chunks=window_chunks, prefetch=prefetch, drop_last=drop_last,
                         threads=threads)
        self.dataset = dataset
        self.split = split
        self.heads = resolve_heads(dataset, heads)
        self.sources = sample_sources(dataset, self.heads)
        self._norm = train_normalization(dataset) if normalize else None
        r, n = dataset.chunk_rows, dataset.n_samples
        self._member = split_membership(dataset, split, splits)
        if self._member is None:
            rows = np.full(-(-n // r), r, dtype=np.int64)
            rows[-1:] = n - r * (len(rows) - 1)
            self._counts = rows if n else np.zeros(0, np.int64)
        else:
            self._counts = np.add.reduceat(self._member.astype(np.int64),
                                           np.arange(0, n, r)) if n else np.zeros(0, np.int64)
        self._local = threading.local()
        self._slabs = self._new_slabs()

    def _new_slabs(self) -> SlabPool:
        rows = self.window_chunks * self.dataset.chunk_rows
        shapes = {k: ((rows, *s.shape[1:]), s.dtype) for k, s in self.sources.items()}
        return SlabPool(lambda: {k: np.empty(*v) for k, v in shapes.items()},
                        keep=self.threads + self.prefetch + 2)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_local"], state["_slabs"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._local = threading.local()
        self._slabs = self._new_slabs()

    def shard(self, rank: int, world_size: int) -> Loader:
        other = super().shard(rank, world_size)
        assert isinstance(other, Loader)
        other._local, other._slabs = threading.local(), other._new_slabs()
        return other

    def _fingerprint(self) -> dict[str, Any]:
        return {**super()._fingerprint(), "split": self.split}

    def _items(self, job: WindowJob) -> NDArray[np.int64]:
        r, n = self.dataset.chunk_rows, self.dataset.n_samples
        parts = []
        for slot, c in enumerate(job.chunks.tolist()):
            lo, hi = c * r, min(n, (c + 1) * r)
            local = (np.arange(hi - lo) if self._member is None
                     else np.flatnonzero(self._member[lo:hi]))
            parts.append(local + slot * r)
        return np.concatenate(parts).astype(np.int64)

    def _buffers(self) -> dict[str, NDArray[Any]]:
        """This thread's decode buffers for one window (reused: no page faults per window)."""
        bufs = getattr(self._local, "bufs", None)
        if bufs is None:
            rows = self.window_chunks * self.dataset.chunk_rows
            bufs = {k: np.empty((rows, *s.shape[1:]), s.dtype) for k, s in self.sources.items()}
            self._local.bufs = bufs
        return bufs

    def _produce(self, job: WindowJob, pieces: list[NDArray[np.int64]]) -> list[Batch]:
        r = self.dataset.chunk_rows
        bufs = self._buffers()
        for slot, c in enumerate(job.chunks.tolist()):
            for name, src in self.sources.items():
                read_chunk(src, c, bufs[name][slot * r:(slot + 1) * r])
        # One gather per array for the whole window (its rows in stream order); the batches
        # are views of these arrays, which live as long as any of their batches.
        local = np.concatenate(pieces) if pieces else np.zeros(0, np.int64)
        n = len(local)
        slab = self._slabs.acquire()
        try:
            # mode="clip": unbuffered (rows are in range), straight into the slab
            whole = {name: np.take(buf, local, axis=0, out=slab[name][:n], mode="clip")
                     for name, buf in bufs.items()}
        finally:
            self._slabs.release(slab)
        if self._norm is not None:
            whole["features"] = normalize_(whole["features"], self._norm)
        index = job.chunks[local // r] * r + local % r
        return batch_views(whole, self.heads, pieces, {"index": index})
