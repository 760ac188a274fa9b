"""DataLoader workers of one rank share the decode of each window (issue 18).

With the elastic order, every DataLoader worker of a rank takes batches from every window, so
without sharing each of ``k`` workers would decode the whole epoch. Instead the rank's workers
decode each window once, together, into shared memory:

* The training process maps ``1 + prefetch`` window *slots* of anonymous shared memory
  (:class:`SharedWindows`) before the DataLoader forks its workers, which inherit the mapping
  (pages are only allocated when written, so the mapping costs nothing until then). With the
  ``spawn`` start method nothing is inherited and every worker decodes on its own, as before.
* Every worker walks the same list of windows -- the windows the *rank's* batches need -- and
  window ``i`` of that list lives in slot ``i % slots``. Worker ``j`` of ``k`` decodes the
  window's chunks ``j, j + k, ...`` into the slot, flags them decoded, waits until all ``k``
  workers have, gathers its own batches from the whole window, and flags it done. A worker
  reuses a slot only once every worker is done with its previous window.
* Flags are 64-bit keys of (iteration, window), one per slot and worker, each written by its
  own worker only. The iteration is the DataLoader iterator's base seed (drawn anew for every
  iterator, the same in all its workers) with a per-process count of iterations (for
  persistent workers), so flags of an earlier iteration never match.

The order is untouched: which process decodes a chunk changes nothing in what any batch holds.
"""

from __future__ import annotations

import mmap
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
from numpy.typing import NDArray

from chunkstore.errors import ReadError
from chunkstore.read.order import Task, Window
from chunkstore.read.pipeline import WindowSource

MAX_WORKERS = 64
POLL_S = 0.0005


def iteration_seed() -> int | None:
    """The DataLoader iterator's base seed inside a worker (None outside one)."""
    torch = sys.modules.get("torch")
    info = None if torch is None else torch.utils.data.get_worker_info()
    return None if info is None else int(info.seed) - int(info.id)


class SharedWindows:
    """``slots`` window buffers and their flags in one anonymous shared mapping.

    ``layout`` is ``{name: (shape of one window, dtype)}`` of the arrays decoded per window.
    """

    def __init__(self, layout: dict[str, tuple[tuple[int, ...], Any]], slots: int) -> None:
        self.layout, self.slots = layout, slots
        self._window = sum(-(-int(np.prod(s)) * np.dtype(d).itemsize // 64) * 64
                           for s, d in layout.values())
        n_flags = (slots * 2 + 1) * MAX_WORKERS
        self._flags = -(-n_flags * 8 // mmap.PAGESIZE) * mmap.PAGESIZE
        self._map = mmap.mmap(-1, self._flags + slots * self._window,
                              flags=mmap.MAP_SHARED | getattr(mmap, "MAP_ANONYMOUS", 0x20))
        self.flags = np.frombuffer(self._map, np.int64, slots * MAX_WORKERS * 2
                                   ).reshape(slots, 2, MAX_WORKERS)  # [slot, decoded|done, j]
        # the iteration each worker left early: the others stop waiting for it
        self.aborts = np.frombuffer(self._map, np.int64, MAX_WORKERS, slots * MAX_WORKERS * 16)
        self.iterations = 0  # per process: iterations started (persistent workers)

    def buffers(self, slot: int) -> dict[str, NDArray[Any]]:
        """Views of slot ``slot``'s window arrays."""
        out, offset = {}, self._flags + slot * self._window
        for name, (shape, dtype) in self.layout.items():
            n = int(np.prod(shape))
            out[name] = np.frombuffer(self._map, np.dtype(dtype), n, offset).reshape(shape)
            offset += -(-n * np.dtype(dtype).itemsize // 64) * 64
        return out

    def __getstate__(self) -> dict[str, Any]:
        raise TypeError("SharedWindows is inherited by forked DataLoader workers, not pickled")


def shared_windows(layout: dict[str, tuple[tuple[int, ...], Any]], slots: int
                   ) -> SharedWindows | None:
    """:class:`SharedWindows`, or None where an anonymous shared mapping cannot be made
    (Windows; strict overcommit refusing the address space): workers then decode alone."""
    try:
        return SharedWindows(layout, slots)
    except (OSError, TypeError, ValueError, AttributeError):
        return None


def _key(iteration: int, seq: int) -> int:
    return (iteration * 0x9E3779B97F4A7C15 + seq * 0xBF58476D1CE4E5B9 + 1) % (1 << 62) + 1


class WorkerShare(WindowSource):
    """One worker's side of :class:`SharedWindows` for one iteration (a pipeline source
    wrapper: the pipeline's hooks go to ``source``, the slot bookkeeping is done here)."""

    def __init__(self, shared: SharedWindows, source: Any, *, worker: int, workers: int,
                 seed: int) -> None:
        self.shared, self.source, self.worker, self.workers = shared, source, worker, workers
        shared.iterations += 1
        self.iteration = seed * 1_000_003 + shared.iterations
        self._calls = 0
        self._aborted = False

    def window_buffers(self) -> Any:
        seq = self._calls
        self._calls += 1
        return seq  # the pipeline hands it back per window: window number seq of the list

    def recycle(self, buffers: Any) -> Any:
        return self.window_buffers()  # the next window goes to the next slot in turn

    def share(self, window: Window) -> list[int]:
        return list(range(self.worker, len(window.chunks), self.workers))

    def ensure_small(self, window: Window) -> None:
        self.source.ensure_small(window)

    def claim(self, seq: int) -> None:
        """Wait until every worker is done with the slot's previous window."""
        s = seq % self.shared.slots
        if seq >= self.shared.slots:
            self._wait(s, 1, _key(self.iteration, seq - self.shared.slots))

    def decode(self, seq: int, window: Window, slots: list[int]) -> None:
        self.source.decode(self.shared.buffers(seq % self.shared.slots), window, slots)

    def decoded(self, seq: int, window: Window) -> None:
        """Flag this worker's share decoded; wait for the others'."""
        self.source.ensure_small(window)  # labels/masks kept per process: all chunks
        s = seq % self.shared.slots
        self.shared.flags[s, 0, self.worker] = _key(self.iteration, seq)
        self._wait(s, 0, _key(self.iteration, seq))

    def gather(self, seq: int, window: Window, items: NDArray[np.int64], sizes: list[int]
               ) -> list[Any]:
        return self.source.gather(self.shared.buffers(seq % self.shared.slots), window, items,
                                  sizes)  # type: ignore[no-any-return]

    def done(self, seq: int) -> None:
        self.shared.flags[seq % self.shared.slots, 1, self.worker] = _key(self.iteration, seq)

    def abort(self) -> None:
        """This worker's iteration ends: its waits end, and so do the other workers' waits
        for it (a worker shut down mid-epoch never flags its remaining windows)."""
        self._aborted = True
        self.shared.aborts[self.worker] = _key(self.iteration, -1)

    def _wait(self, slot: int, kind: int, key: int) -> None:
        flags = self.shared.flags[slot, kind, :self.workers]
        left = _key(self.iteration, -1)
        while not (flags == key).all():
            if self._aborted or (self.shared.aborts[:self.workers] == left).any():
                if (flags == key).all():  # a worker flagged its share, then ended its
                    return  # iteration, between this loop's two checks: nothing is missing
                raise ReadError("shared window decode abandoned: a DataLoader worker of this "
                                "iteration stopped before the epoch's end")
            time.sleep(POLL_S)


def rank_tasks(rank: Iterator[Task], worker: int, workers: int) -> Iterator[Task]:
    """Every window the rank's batches need (``rank``), with only the pieces of worker
    ``worker``'s batches (steps ``worker, worker + workers, ...``), possibly none."""
    for t in rank:
        yield Task(t.window, tuple(p for p in t.pieces if p.step % workers == worker))
