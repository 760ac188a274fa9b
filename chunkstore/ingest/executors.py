"""Where ingest tasks run: a local process pool, threads (``memory://`` stores), or a Dask cluster.

* :func:`executor` — the ``concurrent.futures`` executor ingest submits its tasks to. On Dask,
  tasks are submitted with retries, a worker plugin prepares every worker (also one that joins
  or is restarted later) exactly as the process pool's initializer does, and zarr's async
  concurrency is capped so that threads x concurrency stays bounded.
* :class:`SharedCounter` — the few atomic counters streaming ingest shares between workers:
  ``multiprocessing.Value`` for the pool, a ``distributed.Variable`` guarded by a
  ``distributed.Lock`` (both held by the scheduler) on a cluster.

Nothing large goes through the scheduler: a task is a small spec; workers open the store and
the source themselves.
"""

from __future__ import annotations

import functools
import multiprocessing
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from chunkstore.errors import ConfigError
from chunkstore.runtime.dask import dask_client
from chunkstore.runtime.pool import process_pool
from chunkstore.store import urls as storage

TASK_RETRIES = 2  # a task that raises is retried this often (a dead worker's task always is)
ZARR_IO_BUDGET = 16  # in-flight chunk operations per worker process, over all its threads


def with_storage(store: str, storage_options: Mapping[str, Any] | None,
                 initializer: Callable[..., None], *initargs: Any) -> None:
    """Worker initializer: storage options for the store's protocol, then ``initializer``."""
    storage.configure(store, storage_options)
    initializer(*initargs)


def tune_worker(threads: int) -> None:
    """Cap zarr's async concurrency so that ``threads`` x concurrency <= ZARR_IO_BUDGET
    (never above zarr's own default)."""
    import zarr

    default = int(zarr.config.get("async.concurrency") or 10)
    zarr.config.set({"async.concurrency": max(1, min(default, ZARR_IO_BUDGET // threads))})


def _worker_plugin(setup: Callable[[], None]) -> Any:
    from distributed import WorkerPlugin

    class Setup(WorkerPlugin):  # type: ignore[misc]
        """Runs on every worker, including those that join or restart after registration."""

        def setup(self, worker: Any) -> None:
            tune_worker(max(1, int(worker.state.nthreads)))
            setup()

    return Setup()


def check_reachable(store: str, scheduler: str) -> None:
    """ConfigError for a ``memory://`` store with a scheduler: Dask workers cannot see it."""
    if storage.in_process_only(store):
        raise ConfigError(
            f"store {store!r} lives in this process's memory, which the workers of the Dask "
            f"cluster at {scheduler!r} cannot see; use a store they can reach (s3://..., a "
            "shared file system) or run without a scheduler")


@contextmanager
def executor(workers: int, scheduler: str | None, initializer: Callable[..., None],
             initargs: tuple[Any, ...], *, store: str = "",
             storage_options: Mapping[str, Any] | None = None,
             retries: int = TASK_RETRIES) -> Iterator[Executor]:
    """The executor ingest runs its tasks on; ``initializer(*initargs)`` prepares each worker.

    * ``scheduler`` given: a ``distributed.Client``'s executor (a task that raises is retried
      ``retries`` times; a task of a worker that dies is rerun elsewhere by the scheduler).
    * a ``memory://`` store: threads of this process (the store exists only here).
    * otherwise: a process pool of ``workers`` spawned processes.

    Raises
    ------
    ConfigError
        For a ``memory://`` store with a scheduler.
    """
    setup = functools.partial(with_storage, store, dict(storage_options or {}), initializer,
                              *initargs)
    if scheduler:
        check_reachable(store, scheduler)
        with _dask_executor(scheduler, setup, retries) as ex:
            yield ex
        return
    pool: Executor
    if storage.in_process_only(store):
        pool = ThreadPoolExecutor(workers, initializer=setup)
    else:
        pool = process_pool(workers, setup)  # workers exit if we are killed
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@contextmanager
def _dask_executor(scheduler: str, setup: Callable[[], None], retries: int
                   ) -> Iterator[Executor]:
    name = "chunkstore-ingest"  # one at a time: a newer ingest replaces an older one's plugin
    with dask_client(scheduler, "running") as client:
        client.register_plugin(_worker_plugin(setup), name=name)
        try:
            yield client.get_executor(pure=False, retries=retries)
        finally:
            if client.status == "running":
                client.unregister_worker_plugin(name)


# ------------------------------------------------------------------ shared counters


class SharedCounter(Protocol):
    """An integer shared by every worker of one ingest."""

    def add(self, n: int = 1) -> int:
        """Add ``n`` atomically; return the value before."""

    def get(self) -> int: ...

    def set(self, value: int) -> None: ...

    def close(self) -> None: ...


class LocalCounter:
    """A ``multiprocessing.Value``: for a process pool (passed to the workers at start, by
    inheritance) and for threads."""

    def __init__(self) -> None:
        self.value = multiprocessing.get_context("spawn").Value("q", 0)

    def add(self, n: int = 1) -> int:
        with self.value.get_lock():
            before = int(self.value.value)
            self.value.value = before + n
        return before

    def get(self) -> int:
        return int(self.value.value)

    def set(self, value: int) -> None:
        self.value.value = value

    def close(self) -> None:
        pass


_DASK_PRIMITIVES: dict[str, tuple[Any, Any]] = {}  # name -> (Variable, Lock), per process


@dataclass(frozen=True)
class DaskCounter:
    """A ``distributed.Variable`` updated under a ``distributed.Lock``; both live on the
    scheduler, so the counter survives any worker. Only its name travels."""

    name: str

    def _primitives(self) -> tuple[Any, Any]:
        if self.name not in _DASK_PRIMITIVES:
            from distributed import Lock, Variable

            _DASK_PRIMITIVES[self.name] = (Variable(self.name), Lock(f"{self.name}-lock"))
        return _DASK_PRIMITIVES[self.name]

    def add(self, n: int = 1) -> int:
        var, lock = self._primitives()
        with lock:
            before = int(var.get())
            var.set(before + n)
        return before

    def get(self) -> int:
        return int(self._primitives()[0].get())

    def set(self, value: int) -> None:
        self._primitives()[0].set(value)

    def close(self) -> None:
        var, lock = _DASK_PRIMITIVES.pop(self.name, (None, None))
        if var is not None:
            var.delete()
            lock.close()


def make_counters(n: int, scheduler: str | None) -> tuple[SharedCounter, ...]:
    """``n`` counters at 0 (call ``set`` once the executor is up): Dask ones with a scheduler."""
    if not scheduler:
        return tuple(LocalCounter() for _ in range(n))
    run = uuid.uuid4().hex[:12]
    return tuple(DaskCounter(f"chunkstore-{run}-{i}") for i in range(n))
