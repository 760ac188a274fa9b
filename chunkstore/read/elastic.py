"""Running the elastic order (:mod:`chunkstore.read.order`) on a batch stream.

A stream (the row loader or sequence windows) supplies two hooks: ``_items(window)``, the
window's item ids in natural order, and ``_produce(window, pieces)``, one batch dict per piece
of item ids (decoding the window's chunks once). This module plans one shard's tasks from the
global order, decodes them in background threads ``prefetch`` tasks ahead, and assembles the
pieces into the shard's batches, each with the step it completes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
from numpy.typing import NDArray

from chunkstore.errors import ReadError
from chunkstore.read.order import (
    Piece,
    Task,
    Window,
    check_remainder,
    global_windows,
    rank_batches,
    tasks,
    window_permutation,
)
from chunkstore.read.pipeline import WindowSource, pipelined
from chunkstore.read.prefetch import ahead
from chunkstore.read.shared import (
    MAX_WORKERS,
    SharedWindows,
    WorkerShare,
    iteration_seed,
    rank_tasks,
)

Batch = dict[str, Any]
Items = Callable[[Any], NDArray[np.int64]]
Produce = Callable[[Any, list[NDArray[np.int64]]], list[Batch]]


@dataclass(frozen=True)
class Shard:
    """Who reads: ``rank`` of ``world_size`` lockstep ranks, and DataLoader worker
    ``worker`` of ``workers`` inside that rank."""

    rank: int = 0
    world_size: int = 1
    worker: int = 0
    workers: int = 1


@dataclass(frozen=True)
class OrderKey:
    """What the global order depends on (besides the items per chunk)."""

    seed: int
    epoch: int
    shuffle: bool
    window_chunks: int


def epoch_windows(counts: NDArray[np.int64], key: OrderKey) -> tuple[list[Window], int]:
    """The epoch's windows and its total number of items."""
    windows = global_windows(counts, seed=key.seed, epoch=key.epoch, shuffle=key.shuffle,
                             window_chunks=key.window_chunks)
    return windows, (windows[-1].start + windows[-1].count if windows else 0)


def concat(parts: Sequence[Batch]) -> Batch:
    """Concatenate batch pieces (nested dicts of arrays) along the first axis."""
    if len(parts) == 1:
        return parts[0]
    return {k: concat([p[k] for p in parts]) if isinstance(v, dict)
            else np.concatenate([p[k] for p in parts]) for k, v in parts[0].items()}


def elastic_batches(items: Items, produce: Produce | None, counts: NDArray[np.int64], key: OrderKey,
                    *, start: int, batch_size: int, shard: Shard, remainder: str,
                    threads: int = 2, prefetch: int = 2, source: WindowSource | None = None,
                    shared: SharedWindows | None = None) -> Iterator[tuple[Batch, int]]:
    """One shard's batches from global position ``start``: (batch, step completed) pairs.

    ``step`` counts the rank's steps from ``start`` (0 = the first step after it). With the
    "pad" remainder every batch has ``valid`` (bool per item; False marks padding repeats).
    With a ``source`` (:mod:`chunkstore.read.pipeline`), a window is decoded once into a
    window buffer and its batches gathered on demand (``1 + prefetch`` window buffers);
    otherwise ``produce`` makes all of a task's batches at once in a background thread.
    With ``shared`` windows inside a DataLoader worker, the rank's workers decode each window
    together (:mod:`chunkstore.read.shared`).
    """
    check_remainder(remainder)
    windows, total = epoch_windows(counts, key)
    specs = rank_batches(total, start=start, batch_size=batch_size, rank=shard.rank,
                         world_size=shard.world_size, remainder=remainder,
                         workers=(shard.worker, shard.workers))
    todo = tasks(windows, specs)
    seed = iteration_seed()
    if (source is not None and shared is not None and 1 < shard.workers <= MAX_WORKERS
            and seed is not None):  # more workers than the shared flags hold: each decodes alone
        every = rank_batches(total, start=start, batch_size=batch_size, rank=shard.rank,
                             world_size=shard.world_size, remainder=remainder)
        todo = rank_tasks(tasks(windows, every), shard.worker, shard.workers)
        source = WorkerShare(shared, source, worker=shard.worker, workers=shard.workers,
                             seed=seed)

    def order(window: Window) -> NDArray[np.int64]:
        got = items(window)
        if key.shuffle:
            got = got[window_permutation(len(got), seed=key.seed, epoch=key.epoch,
                                         number=window.number)]
        return got

    if source is not None:
        pieces = pipelined(source, order, todo, threads=threads, prefetch=prefetch)
    elif produce is not None:
        pieces = _produced(produce, order, todo, threads, prefetch)
    else:
        raise ReadError("elastic_batches needs a produce hook or a window source")
    parts: list[Batch] = []
    for piece, part in pieces:
        if remainder == "pad":
            part = {**part, "valid": np.full(piece.hi - piece.lo, piece.valid)}
        parts.append(part)
        if piece.ends >= 0:
            yield concat(parts), piece.ends
            parts = []


def _produced(produce: Produce, order: Callable[[Window], NDArray[np.int64]],
              todo: Iterator[Task], threads: int, prefetch: int
              ) -> Iterator[tuple[Piece, Batch]]:
    """Each task's pieces made at once by ``produce`` in a background thread, ``prefetch``
    tasks ahead."""

    def run(task: Task) -> tuple[tuple[Piece, ...], list[Batch]]:
        got = order(task.window)
        return task.pieces, produce(task.window, [got[p.lo:p.hi] for p in task.pieces])

    made = ahead((partial(run, task) for task in todo), depth=prefetch, threads=threads,
                 name="chunkstore-elastic")
    with closing(made):
        for pieces, batches in made:
            yield from zip(pieces, batches, strict=True)
