"""Read every stored unit (chunk, or shard) of the sample arrays and say which are bad.

A *unit* is what one file holds along rows: a chunk, or a whole shard for a sharded array. Each
is checked for existence and read through zarr (so any codec or sharding layout works, and the
crc32c codec's checksum is verified), in a pool of processes that exit if we die, or by the
workers of a Dask cluster (``scheduler``). Memory is bounded: a process holds one unit at a
time and at most two batches per worker (or cluster thread) are in flight.
Along the way the workers sum what ``stats/all`` counts (finite/NaN/inf values per feature,
classes per head, mask ones per class), so the statistics can be checked against the data.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zarr
from numpy.typing import NDArray
from zarr.core.sync import sync

from chunkstore.errors import ConfigError
from chunkstore.runtime.dask import dask_client
from chunkstore.runtime.pool import process_pool
from chunkstore.store import urls
from chunkstore.store.stats_io import node_array
from chunkstore.store.urls import open_group

BATCH_BYTES = 32 * 2**20  # uncompressed bytes of one batch of units sent to a worker
PROCESS_MIN_BYTES = 256 * 2**20  # below this, threads: starting processes costs more than it saves


@dataclass(frozen=True)
class Unit:
    """One file's worth of rows of one array: index along rows, rows ``[start, stop)``, key."""

    array: str
    index: int
    start: int
    stop: int
    key: str


@dataclass
class UnitResult:
    """What a worker found in a batch: bad units, and the sums of the good ones."""

    missing: list[Unit] = field(default_factory=list)
    corrupt: list[tuple[Unit, str]] = field(default_factory=list)
    sums: dict[str, NDArray[np.int64]] = field(default_factory=dict)
    stored_bytes: int = 0
    units: int = 0

    def add(self, other: UnitResult) -> None:
        self.missing += other.missing
        self.corrupt += other.corrupt
        for k, v in other.sums.items():
            self.sums[k] = self.sums[k] + v if k in self.sums else v
        self.stored_bytes += other.stored_bytes
        self.units += other.units


def unit_rows(array: zarr.Array) -> int:
    """Rows per stored unit: the shard's rows for a sharded array, else the chunk's."""
    shards = getattr(array, "shards", None)
    return int((shards or array.chunks)[0])


def units_of(array: zarr.Array, name: str, n_rows: int, indices: list[int] | None = None
             ) -> list[Unit]:
    """The units of ``array`` holding rows ``[0, n_rows)`` (all, or those at ``indices``)."""
    r = unit_rows(array)
    n = min(int(array.shape[0]), n_rows)
    count = -(-n // r)
    tail = [0] * (array.ndim - 1)
    out = []
    for i in indices if indices is not None else range(count):
        if 0 <= i < count:
            key = f"{array.path}/{array.metadata.encode_chunk_key((i, *tail))}"
            out.append(Unit(name, i, i * r, min(n, (i + 1) * r), key))
    return out


def batches(units: list[Unit], row_bytes: int) -> Iterator[list[Unit]]:
    """Consecutive units in groups of about :data:`BATCH_BYTES` uncompressed."""
    batch: list[Unit] = []
    size = 0
    for u in units:
        batch.append(u)
        size += (u.stop - u.start) * row_bytes
        if size >= BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _sums(name: str, data: NDArray[Any], classes: int) -> dict[str, NDArray[np.int64]]:
    """What ``stats/all`` counts for these rows of array ``name``."""
    if name == "features":
        x = np.asarray(data, dtype=np.float32)
        nan = np.isnan(x).sum(axis=0, dtype=np.int64)
        inf = np.isinf(x).sum(axis=0, dtype=np.int64)
        return {"count": len(x) - nan - inf, "nan_count": nan, "inf_count": inf}
    if name.startswith("labels/") and classes:
        ok = (data >= 0) & (data < classes)
        return {f"class_counts/{name[7:]}": np.bincount(data[ok].astype(np.int64),
                                                        minlength=classes).astype(np.int64)}
    if name.startswith("masks/"):
        return {f"mask_counts/{name[6:]}": data.astype(bool).sum(axis=0, dtype=np.int64)}
    return {}


def _exists(array: zarr.Array, key: str) -> tuple[bool, int]:
    store = array.store
    if not sync(store.exists(key)):
        return False, 0
    try:
        size = int(sync(store.getsize(key)))
    except (NotImplementedError, OSError):
        size = 0
    return True, size


def check_batch(store: str, units: list[Unit], classes: int) -> UnitResult:
    """Check ``units`` (all of one array): exists, decodes, passes its checksum; sum the rows."""
    array = node_array(open_group(store, mode="r"), units[0].array)
    result = UnitResult()
    for u in units:
        result.units += 1
        found, size = _exists(array, u.key)
        if not found:
            result.missing.append(u)
            data = None
        else:
            result.stored_bytes += size
            try:
                data = array[u.start:u.stop]
            except Exception as e:  # any decode failure: checksum, Blosc, truncated file
                result.corrupt.append((u, f"{type(e).__name__}: {e}".splitlines()[0][:300]))
                continue
        if data is None:
            data = array[u.start:u.stop]  # fill values: counted, so stats show what is lost
        result.add(UnitResult(sums=_sums(u.array, np.asarray(data), classes)))
    return result


@contextmanager
def make_pool(store: str, workers: int, nbytes: int, scheduler: str | None = None
              ) -> Iterator[tuple[Executor, int]]:
    """(executor, how many batches it runs at once) for the checks.

    On the Dask cluster at ``scheduler`` (its worker threads), else processes that exit with
    us, or threads for a small store (``nbytes`` uncompressed) or one that lives in this process
    only (Blosc and crc32c release the GIL).

    Raises
    ------
    ConfigError
        A ``memory://`` store with a scheduler: the cluster's workers cannot see it.
    """
    if scheduler:
        if urls.in_process_only(store):
            raise ConfigError(
                f"store {store!r} lives in this process's memory, which the workers of the "
                f"Dask cluster at {scheduler!r} cannot see; verify it without --scheduler")
        with dask_client(scheduler, f"verifying {store!r}") as client:
            threads = sum(int(w.get("nthreads", 1))
                          for w in client.scheduler_info()["workers"].values())
            yield client.get_executor(pure=False), max(1, threads)
        return
    pool: Executor
    if urls.in_process_only(store) or nbytes < PROCESS_MIN_BYTES:
        pool = ThreadPoolExecutor(workers)
    else:
        options = urls.storage_options(store)
        pool = process_pool(workers, urls.configure, (store, options or None))
    with pool:
        yield pool, workers


def check_configured(options: dict[str, Any], store: str, units: list[Unit], classes: int
                     ) -> UnitResult:
    """:func:`check_batch` on a Dask worker, which first learns the store's storage options."""
    urls.configure(store, options or None)
    return check_batch(store, units, classes)


def run_checks(store: str, jobs: list[tuple[list[Unit], int]], workers: int, nbytes: int,
               on_done: Callable[[int], None] | None = None, scheduler: str | None = None
               ) -> UnitResult:
    """Run :func:`check_batch` over ``jobs`` ((units, classes) each), two per worker (or
    cluster thread) in flight; ``nbytes``: their uncompressed size."""
    total = UnitResult()
    if not jobs:
        return total
    workers = max(1, min(workers, len(jobs)))
    check: Callable[..., UnitResult] = check_batch
    if scheduler:
        check = functools.partial(check_configured, dict(urls.storage_options(store) or {}))
    with make_pool(store, workers, nbytes, scheduler) as (pool, slots):
        running: set[Future[UnitResult]] = set()
        for units, classes in jobs:
            running.add(pool.submit(check, store, units, classes))
            if len(running) >= 2 * slots:
                done, running = _collect(running, total, on_done)
        while running:
            done, running = _collect(running, total, on_done)
    return total


def _collect(running: set[Future[UnitResult]], total: UnitResult,
             on_done: Callable[[int], None] | None) -> tuple[Any, set[Future[UnitResult]]]:
    done, pending = wait(running, return_when=FIRST_COMPLETED)
    for f in done:
        r = f.result()
        total.add(r)
        if on_done is not None:
            on_done(r.units)
    return done, set(pending)


def default_workers() -> int:
    return os.cpu_count() or 1


def expected_sums(stats: Mapping[str, NDArray[Any]], names: list[str]) -> dict[str, Any]:
    """The ``stats/all`` arrays the scan's sums are compared with (those present)."""
    return {k: np.asarray(stats[k]) for k in names if k in stats}
