"""Background work that follows a known order: chunk decodes and in-order job results.

* :func:`ahead` is the readers' one bounded loop: it runs jobs in a thread pool, keeps ``depth``
  of them ahead of the consumer, and yields their results in order. The loader's window
  gathers (:mod:`chunkstore.read.pipeline`), whole-task batches (:mod:`chunkstore.read.elastic`,
  :mod:`chunkstore.read.stream`) and mixture batches all run through it.
* The rows a mixture yields next are known in advance (its order is a pure function of the
  position), so their chunks can be decoded ahead, in parallel threads, each chunk once:
  :class:`ChunkPrefetcher` keeps, per store, an LRU of *futures* of decoded chunks: asking for
  a chunk submits its decode to the decode pool the first time and returns the same future
  afterwards, so two batches that need one chunk never decode it twice. The mixture's gather
  jobs (which wait on those futures) run through :func:`ahead` in a second pool; the two pools
  keep a gather that waits for a decode from ever blocking the decode it waits for.

Memory (mixtures): ``keep`` decoded chunks per store (plus chunks that in-flight batches still
hold) and up to ``depth + 1`` gathered batches.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor, wait
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


def ahead(jobs: Iterator[Callable[[], T]], *, depth: int, threads: int = 1,
          pool: Executor | None = None, name: str = "chunkstore-gather"
          ) -> Generator[T, None, None]:
    """Results of ``jobs`` in order, each run in a pool thread, ``depth`` jobs ahead of the one
    being consumed (``depth + 1`` in flight).

    Jobs are taken from the iterator in the caller's thread (so the iterator itself may use
    state that is not thread-safe). The pool is ``pool`` when given, shared with other loops:
    on exit the jobs still queued are cancelled and the running ones waited for. Otherwise it
    is a new pool of ``threads`` threads named ``name``, owned by this loop: on exit it is
    stopped (:func:`~chunkstore.runtime.pool.stop_threads`). Close the generator (or exhaust
    it) to run that exit at a known point, e.g. ``with contextlib.closing(ahead(...))``.
    """
    own = pool is None
    if pool is None:
        pool = ThreadPoolExecutor(threads, thread_name_prefix=name)
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
        if own:
            stop_threads(pool)
        else:
            wait(pending)
