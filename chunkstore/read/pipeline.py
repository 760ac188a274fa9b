"""Decode a window once, gather its batches on demand: the loader's background pipeline.

A window of the epoch's order is decoded into one window-sized buffer, its chunks split between
the ``threads`` decode threads; the batches are then gathered from that buffer a few at a time
(a *job* of about ``JOB_ROWS`` rows) by gather threads, just ahead of the consumer. While one
window is being gathered, the next ``prefetch`` windows decode. So the decoded memory is
``(1 + prefetch)`` window buffers plus a few jobs' worth of gathered rows, whatever the window
size -- the window can be large (many chunks per batch, a better shuffle) at the cost of two
buffers, not one per thread and per prefetched window.

A source supplies the hooks of :class:`WindowSource`, chiefly a new window buffer, decoding some
of a window's chunks into it, and gathering rows of it into batches. The window's items and their
permutation come from the caller (:mod:`chunkstore.read.elastic`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import closing
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
from numpy.typing import NDArray

from chunkstore.read.order import Piece, Task, Window
from chunkstore.read.prefetch import ahead
from chunkstore.runtime.pool import stop_threads

Batch = dict[str, Any]
I64 = NDArray[np.int64]
JOB_ROWS = 1024  # rows gathered per background job (a few batches)


class WindowSource:
    """What the pipeline needs from a stream (the row loader is one).

    A source gives :meth:`window_buffers`, :meth:`decode` and :meth:`gather`. The other hooks
    default to a source whose buffers belong to this process alone (reused as they are, every
    chunk decoded here, nothing to wait for); :class:`chunkstore.read.shared.WorkerShare`
    overrides them to share each window between DataLoader workers.
    """

    def window_buffers(self) -> Any:
        """A new buffer for one decoded window (reused for later windows)."""
        raise NotImplementedError

    def decode(self, buffers: Any, window: Window, slots: list[int]) -> None:
        """Decode the window's chunks at ``slots`` (positions in ``window.chunks``)."""
        raise NotImplementedError

    def gather(self, buffers: Any, window: Window, items: I64, sizes: list[int]
               ) -> list[Batch]:
        """Batch pieces of ``sizes`` items each, from the window's ``items`` in order."""
        raise NotImplementedError

    def recycle(self, buffers: Any) -> Any:
        """The buffers of a consumed window, to be used for the next window."""
        return buffers

    def share(self, window: Window) -> list[int]:
        """The window's chunk slots this process decodes (all, unless shared)."""
        return list(range(len(window.chunks)))

    def claim(self, buffers: Any) -> None:
        """Before decoding into ``buffers`` (a decode thread; may wait for other readers)."""

    def decoded(self, buffers: Any, window: Window) -> None:
        """After this process's decode, before gathering (may wait for other processes')."""

    def done(self, buffers: Any) -> None:
        """After the last gather from ``buffers`` for this window."""

    def abort(self) -> None:
        """The iteration ends early: stop waiting for other processes."""


@dataclass
class _Decoding:
    task: Task
    buffers: Any
    jobs: list[Future[Any]]

    def order(self) -> I64:
        """Wait for the decode; the window's items in stream order (raises decode errors)."""
        wait(self.jobs)
        for job in self.jobs[1:]:
            job.result()
        return self.jobs[0].result()  # type: ignore[no-any-return]


def _start(pool: ThreadPoolExecutor, source: WindowSource, order: Callable[[Window], I64],
           task: Task, buffers: Any, threads: int) -> _Decoding:
    w = task.window
    share = np.asarray(source.share(w), np.int64)
    slots = [s.tolist() for s in np.array_split(share, threads) if len(s)] or [[]]

    def decode(part: list[int]) -> None:
        source.claim(buffers)
        if part:
            source.decode(buffers, w, part)

    def first(part: list[int]) -> I64:
        decode(part)
        return order(w)

    jobs: list[Future[Any]] = [pool.submit(first, slots[0])]
    jobs += [pool.submit(decode, part) for part in slots[1:]]
    return _Decoding(task, buffers, jobs)


def _jobs(pieces: tuple[Piece, ...], rows: int) -> Iterator[list[Piece]]:
    """Consecutive pieces in groups of at least ``rows`` items (the last may be smaller)."""
    group: list[Piece] = []
    have = 0
    for p in pieces:
        group.append(p)
        have += p.hi - p.lo
        if have >= rows:
            yield group
            group, have = [], 0
    if group:
        yield group


def _gathered(pool: ThreadPoolExecutor, source: WindowSource, d: _Decoding, order: I64,
              depth: int) -> Iterator[tuple[Piece, Batch]]:
    """The decoded window's pieces with their batches, gathered in the shared ``pool`` a job
    of about ``JOB_ROWS`` items at a time, ``depth`` jobs ahead of the consumer."""

    def gather(pieces: list[Piece], items: I64) -> tuple[list[Piece], list[Batch]]:
        sizes = [p.hi - p.lo for p in pieces]
        return pieces, source.gather(d.buffers, d.task.window, items, sizes)

    jobs = (partial(gather, job, np.concatenate([order[p.lo:p.hi] for p in job]))
            for job in _jobs(d.task.pieces, JOB_ROWS))
    with closing(ahead(jobs, depth=depth, pool=pool)) as gathered:
        for pieces, batches in gathered:
            yield from zip(pieces, batches, strict=True)


def pipelined(source: WindowSource, order: Callable[[Window], I64], todo: Iterator[Task], *,
              threads: int, prefetch: int) -> Iterator[tuple[Piece, Batch]]:
    """Every piece of the ``todo`` tasks with its batch part, in order.

    ``order(window)`` gives the window's items in stream order (indices into the window
    buffer); it runs in a decode thread. At most ``1 + prefetch`` window buffers exist.
    """
    decode = ThreadPoolExecutor(threads, thread_name_prefix="chunkstore-decode")
    gather = ThreadPoolExecutor(threads, thread_name_prefix="chunkstore-gather")
    free: list[Any] = []
    decoding: deque[_Decoding] = deque()
    try:
        while True:
            while len(decoding) <= prefetch:
                task = next(todo, None)
                if task is None:
                    break
                buffers = source.recycle(free.pop()) if free else source.window_buffers()
                decoding.append(_start(decode, source, order, task, buffers, threads))
            if not decoding:
                return
            d = decoding.popleft()
            items = d.order()
            source.decoded(d.buffers, d.task.window)
            # a gather job per thread ahead of the one consumed
            yield from _gathered(gather, source, d, items, threads)
            source.done(d.buffers)
            free.append(d.buffers)
    finally:
        source.abort()
        for d in decoding:
            for f in d.jobs:
                f.cancel()
        stop_threads(decode, gather)
