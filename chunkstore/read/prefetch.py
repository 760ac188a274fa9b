"""Background decode for row reads that follow a known order (mixtures of stores).

The rows a mixture yields next are known in advance (its order is a pure function of the
position), so their chunks can be decoded ahead, in parallel threads, each chunk once:

* :class:`ChunkPrefetcher` keeps, per store, an LRU of *futures* of decoded chunks: asking for
  a chunk submits its decode to the decode pool the first time and returns the same future
  afterwards, so two batches that need one chunk never decode it twice.
* :func:`ahead` runs gather jobs (which wait on those futures) in a second pool, ``depth``
  batches ahead of the consumer, and yields their results in order. The two pools keep a
  gather that waits for a decode from ever blocking the decode it waits for.

Memory: ``keep`` decoded chunks per store (plus chunks that in-flight batches still hold)
and ``depth`` gathered batches.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from chunkstore.runtime.pool import stop_threads
from chunkstore.store.chunkfiles import ChunkSource, read_chunk

T = TypeVar("T")
Decoded = dict[str, NDArray[Any]]


class ChunkPrefetcher:
    """Decoded chunks of several stores, each decoded once in the pool, LRU-bounded per store.

    ``need(k, chunks)`` is called from one thread (the consumer's); the futures it returns may
    be waited on from any thread.
    """

    def __init__(self, sources: Sequence[Mapping[str, ChunkSource]], keep: Sequence[int],
                 pool: ThreadPoolExecutor) -> None:
        self.sources = [dict(s) for s in sources]
        self.keep = list(keep)
        self.pool = pool
        self._chunks: list[OrderedDict[int, Future[Decoded]]] = [OrderedDict()
                                                                  for _ in self.sources]

    def _decode(self, k: int, c: int) -> Decoded:
        return {name: read_chunk(src, c) for name, src in self.sources[k].items()}

    def need(self, k: int, chunks: NDArray[np.int64]) -> dict[int, Future[Decoded]]:
        """Futures of the decoded ``chunks`` of store ``k`` (decodes submitted as needed)."""
        lru, out = self._chunks[k], {}
        for c in np.unique(chunks).tolist():
            f = lru.get(c)
            if f is None:
                f = lru[c] = self.pool.submit(self._decode, k, c)
                while len(lru) > self.keep[k]:
                    lru.popitem(last=False)  # in-flight gathers hold their own futures
            else:
                lru.move_to_end(c)
            out[c] = f
        return out


def ahead(jobs: Iterator[Callable[[], T]], *, threads: int, depth: int
          ) -> Generator[T, None, None]:
    """Results of ``jobs`` in order, each run in a pool thread, ``depth`` jobs ahead.

    Jobs are taken from the iterator in the caller's thread (so the iterator itself may use
    state that is not thread-safe).
    """
    pool = ThreadPoolExecutor(threads, thread_name_prefix="chunkstore-gather")
    pending: deque[Future[T]] = deque()
    try:
        while True:
            while len(pending) <= depth:
                job = next(jobs, None)
                if job is None:
                    break
                pending.append(pool.submit(job))
            if not pending:
                return
            yield pending.popleft().result()
    finally:
        for f in pending:
            f.cancel()
        stop_threads(pool)
