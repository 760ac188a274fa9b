"""The batch stream: an epoch's chunk plan, prefetch, resume and sharding.

The rows (or sequence windows) of one epoch form a *stream*: windows of chunks, each permuted,
one after the other. Batch ``k`` is items ``[k * batch_size, (k + 1) * batch_size)`` of the
stream (a batch may straddle two windows), so a position in the stream is all a resume needs.
By default (``elastic=True``) the stream is the epoch's global order
(:mod:`chunkstore.read.order`): the same for every world size and worker count, taken by
lockstep ranks batch by batch, with the global position as the state, so a state saved by any
rank resumes every rank of a new world size exactly, and every rank yields the same number of
batches (``remainder``). With ``elastic=False``, sharding (ranks, DataLoader workers) deals the
chunks of the permuted order round-robin instead, so each shard decodes only its own chunks,
but the order and a saved state belong to one world size.

:class:`BatchStream` is shared by the row loader (:mod:`chunkstore.read.loader`) and sequence
windows (:mod:`chunkstore.read.windows`).
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from functools import partial
from typing import Any, Self

import numpy as np
from numpy.typing import NDArray

from chunkstore.errors import ReadError
from chunkstore.read.elastic import OrderKey, Shard, concat, elastic_batches
from chunkstore.read.order import (
    Piece,
    Task,
    Window,
    check_remainder,
    position_after,
    rank_batches,
    steps,
)
from chunkstore.read.pipeline import pipelined
from chunkstore.read.prefetch import ahead

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
                 prefetch: int, drop_last: bool, threads: int, remainder: str | None = None,
                 elastic: bool = True) -> None:
        self.batch_size = _positive("batch_size", batch_size)
        self.seed = _positive("seed", seed, 0)
        self.window_chunks = _positive("window_chunks", window_chunks)
        self.prefetch = _positive("prefetch", prefetch, 0)
        self.threads = _positive("threads", threads)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.elastic = bool(elastic)
        self.remainder = check_remainder("drop" if remainder is None and drop_last
                                         else remainder or "even")
        self.epoch = 0
        self.rank, self.world_size = 0, 1
        self._position = 0  # stream rows yielded so far in this epoch
        self._resume = 0  # where the next iteration starts (set by load_state_dict)
        self.shared: Any = None  # DataLoader workers' shared windows (chunkstore.torch sets it)

    # -- subclass hooks ---------------------------------------------------------------------
    _counts: NDArray[np.int64]

    def _items(self, job: WindowJob) -> NDArray[np.int64]:
        raise NotImplementedError

    def _produce(self, job: WindowJob, pieces: list[NDArray[np.int64]]) -> list[Batch]:
        raise NotImplementedError

    def _pipeline_source(self) -> Any:
        """The stream as a :class:`chunkstore.read.pipeline.WindowSource`, or None to make
        each task's batches at once with ``_produce``."""
        return None

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

    def shard(self, rank: int, world_size: int) -> Self:
        """A copy that reads only shard ``rank`` of ``world_size`` (e.g. one per DDP rank).

        Elastic (default): rank ``r`` takes global batches ``r, r + world_size, ...`` of the
        epoch's global order; every rank yields the same number of batches (the last step
        follows ``remainder``), and a state saved by any rank after ``k`` batches loads into
        every rank of any new world size. Not elastic: shards get the chunks of the permuted
        order round-robin; their lengths differ by at most a few chunks' worth of items.
        Either way, inside a torch DataLoader worker each shard is split again between the
        workers automatically (elastic: worker ``j`` of ``k`` takes the rank's batches ``j,
        j + k, ...``, the order the DataLoader collects them in).
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
        """Items (rows or windows) this shard yields in a whole epoch (elastic: padding
        repeats included)."""
        if self.elastic:
            return sum(b.size for b in self._specs(0))
        jobs = self.plan()
        return jobs[-1].start + jobs[-1].count if jobs else 0

    def __len__(self) -> int:
        """Batches per epoch of this shard (elastic: the same for every rank)."""
        if self.elastic:
            worker, workers = torch_worker()
            n = steps(int(self._counts.sum()), start=0, batch_size=self.batch_size,
                      world_size=self.world_size, remainder=self.remainder)
            return len(range(worker, n, workers))
        n, b = self.n_items, self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def _specs(self, start: int) -> Any:
        worker, workers = torch_worker()
        return rank_batches(int(self._counts.sum()), start=start, batch_size=self.batch_size,
                            rank=self.rank, world_size=self.world_size,
                            remainder=self.remainder, workers=(worker, workers))

    def state_after(self, batches: int) -> dict[str, Any]:
        """The state once every rank has consumed ``batches`` batches from where this loader
        starts (its loaded state, else the epoch's start): for a loader iterated elsewhere,
        e.g. in DataLoader workers, whose position this process cannot see."""
        if not self.elastic:
            raise ReadError("state_after needs the elastic order (elastic=True)")
        done = _positive("batches", batches, 0)
        position = position_after(int(self._counts.sum()), start=self._resume,
                                  batch_size=self.batch_size, world_size=self.world_size,
                                  remainder=self.remainder, done=done)
        return {"epoch": self.epoch, "position": position, **self._fingerprint()}

    def state_dict(self) -> dict[str, Any]:
        """Where iteration stands: load it into a new loader to resume mid-epoch exactly.

        Elastic: the global position (items every rank together consumed), valid for any rank,
        world size, batch size and worker count of the resuming loaders.
        """
        return {"epoch": self.epoch, "position": self._position, **self._fingerprint()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict`: the next iteration yields the rest of that epoch.

        Raises
        ------
        ReadError
            If the state was saved by a loader with a different order (seed, shuffle, window,
            items, split; not elastic: also batch size and shard), since its stream would
            differ.
        """
        mine = self._fingerprint()
        diff = sorted(k for k in mine if state.get(k) != mine[k])
        if diff:
            raise ReadError("cannot resume: the saved state comes from a loader configured "
                            "differently in " + ", ".join(
                                f"{k} (saved {state.get(k)!r}, this loader {mine[k]!r})"
                                for k in diff))
        position = _positive("position", state["position"], 0)
        if self.elastic and position > int(self._counts.sum()):
            raise ReadError(f"resume position {position} is beyond this epoch's "
                            f"{int(self._counts.sum())} items")
        self.epoch = _positive("epoch", state["epoch"], 0)
        self._resume = self._position = position

    def _fingerprint(self) -> dict[str, Any]:
        order = {"kind": type(self).__name__, "seed": self.seed, "shuffle": self.shuffle,
                 "window_chunks": self.window_chunks, "items": int(self._counts.sum())}
        if self.elastic:
            return {**order, "order": "elastic"}
        return {**order, "batch_size": self.batch_size, "rank": self.rank,
                "world_size": self.world_size}

    def __iter__(self) -> Iterator[Batch]:
        if self.elastic:
            start, self._resume = self._resume, 0
            self._position = start
            return self._elastic(start)
        jobs = self.plan()
        total = jobs[-1].start + jobs[-1].count if jobs else 0
        start, self._resume = self._resume, 0
        if start > total or (start % self.batch_size and start != total):
            raise ReadError(f"resume position {start} is not a batch boundary of this epoch's "
                            f"{total} items")
        self._position = start
        jobs = [j for j in jobs if j.start + j.count > start]
        if self._pipeline_source() is not None:
            return self._run_pipelined(jobs, start, total, self.shard_key())
        return self._run(jobs, start, self.shard_key())

    def _elastic(self, start: int) -> Iterator[Batch]:
        worker, workers = torch_worker()
        total = int(self._counts.sum())
        key = OrderKey(self.seed, self.epoch, self.shuffle, self.window_chunks)
        for batch, step in elastic_batches(
                self._items, self._produce, self._counts, key, start=start,
                batch_size=self.batch_size, remainder=self.remainder, threads=self.threads,
                prefetch=self.prefetch, source=self._pipeline_source(),
                shared=self.shared,
                shard=Shard(self.rank, self.world_size, worker, workers)):
            self._position = position_after(total, start=start, batch_size=self.batch_size,
                                            world_size=self.world_size,
                                            remainder=self.remainder, done=step + 1)
            yield batch

    def _window_order(self, window: WindowJob | Window, key: tuple[int, int]
                      ) -> NDArray[np.int64]:
        """A window's rows in epoch order: shuffled by (seed, epoch, window, key)."""
        items = self._items(window)  # type: ignore[arg-type]  # a Window has a job's fields
        if self.shuffle:
            rng = np.random.default_rng(np.random.SeedSequence(
                [self.seed, self.epoch, 1, window.number, *key]))
            items = items[rng.permutation(len(items))]
        return items

    def _job(self, job: WindowJob, skip: int, key: tuple[int, int]) -> list[Batch]:
        items = self._window_order(job, key)
        pieces = [items[a:b] for a, b in cut(job.start, skip, job.count, self.batch_size)]
        return self._produce(job, pieces)

    def _run_pipelined(self, jobs: list[WindowJob], start: int, total: int,
                       key: tuple[int, int]) -> Iterator[Batch]:
        """Not elastic, through :mod:`chunkstore.read.pipeline` (one decoded window at a
        time, batches gathered on demand): the same batches as :meth:`_run`."""
        b = self.batch_size

        def todo() -> Iterator[Task]:
            for j in jobs:
                pieces = [Piece(lo, hi, True, 0 if (j.start + hi) % b == 0
                                or j.start + hi == total else -1)
                          for lo, hi in cut(j.start, max(0, start - j.start), j.count, b)]
                yield Task(Window(j.number, j.chunks, j.start, j.count), tuple(pieces))

        def order(w: Window) -> NDArray[np.int64]:
            return self._window_order(w, key)

        parts: list[Batch] = []
        for piece, part in pipelined(self._pipeline_source(), order, todo(),
                                     threads=self.threads, prefetch=self.prefetch):
            parts.append(part)
            if piece.ends >= 0:
                batch = concat(parts)
                parts, n = [], len(batch["index"])
                self._position += n
                if n == b or not self.drop_last:
                    yield batch

    def _run(self, jobs: list[WindowJob], start: int, key: tuple[int, int]
             ) -> Iterator[Batch]:
        # the window to consume next plus `prefetch` more are decoding meanwhile
        made = ahead((partial(self._job, job, max(0, start - job.start), key) for job in jobs),
                     depth=self.prefetch, threads=self.threads, name="chunkstore-loader")
        with closing(made):
            parts: list[Batch] = []
            have = 0
            for pieces in made:
                for piece in pieces:
                    parts.append(piece)
                    have += len(piece["index"])
                    if have == self.batch_size:
                        batch = concat(parts)
                        parts, have = [], 0
                        self._position += self.batch_size
                        yield batch
            if parts and not self.drop_last:
                batch = concat(parts)
                self._position += have
                yield batch
            elif parts:
                self._position += have


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
