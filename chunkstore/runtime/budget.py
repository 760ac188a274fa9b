"""Up-front size checks: refuse a config or plan that cannot fit, before anything is built.

Everything here is arithmetic on declared sizes (no allocation), so a config asking for a
billion features or 10^13 rows is refused in microseconds with the config key to change,
instead of a MemoryError (or a machine swapping) after the store was created.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

import psutil

from chunkstore.errors import ConfigError

MAX_FEATURES = 2**20  # a row of 2^20 float32 is 4 MiB: a chunk of one row is already large
MAX_CLASSES = 2**20
MAX_ROWS = 2**40  # streaming stores are created at this many rows: the most a store can hold
MAX_TASKS = 2**22  # the coordinator keeps O(tasks) state: a plan.json of ~4M tasks is ~0.5 GB
WORKING_COPIES = 3  # a task holds its buffers, the statistics' float64 copy and zarr's encode
COMOMENT_COPIES = 4  # the co-moment and pair-count matrices and their merge temporaries
DISK_SLACK = 20  # Blosc rarely beats 20x on real features: below raw/20 free it cannot fit
GIB = 2**30


def gib(n: float) -> str:
    return f"{n / GIB:,.1f} GiB"


def check_declared(where: str, *, features: int | None, classes: dict[str, int],
                   correlation: bool, rows: int | None = None) -> None:
    """Refuse declared sizes that cannot be built, naming the key (before any allocation)."""
    if features is not None and features > MAX_FEATURES:
        raise ConfigError(f"config {where}, key 'schema.features': {features:,} features; at "
                          f"most {MAX_FEATURES:,} are supported (one row of {features:,} float32 "
                          f"is {gib(4 * features)}); lower schema.features")
    for head, k in classes.items():
        if k > MAX_CLASSES:
            raise ConfigError(f"config {where}, key 'schema.heads.{head}': {k:,} classes; at "
                              f"most {MAX_CLASSES:,} (each row stores a mask of one byte per "
                              "class); lower it")
    if rows is not None and rows > MAX_ROWS:
        raise ConfigError(f"config {where}, key 'source.n_samples': {rows:,} rows; a store "
                          f"holds at most {MAX_ROWS:,}; lower source.n_samples")
    if features is not None and correlation:
        need = COMOMENT_COPIES * 8 * features * features
        if need > memory_bytes():
            raise ConfigError(
                f"config {where}, key 'stats.correlation': the co-moment matrix of {features:,} "
                f"features needs about {gib(need)} per worker, more than this machine's "
                f"{gib(memory_bytes())}; set stats.correlation: false (`chunkstore stats` "
                "computes correlation later) or lower schema.features")


def memory_bytes() -> int:
    """Memory this process may use: physical memory (a cgroup limit is not looked up)."""
    return int(psutil.virtual_memory().total)


@dataclass(frozen=True)
class PlanSize:
    """What a plan asks of the machine (all in bytes, rows or counts)."""

    rows: int
    row_bytes: int
    task_rows: int
    tasks: int
    workers: int
    features: int
    correlation: bool

    @property
    def worker_bytes(self) -> int:
        comoments = COMOMENT_COPIES * 8 * self.features ** 2 if self.correlation else 0
        return WORKING_COPIES * self.task_rows * self.row_bytes + comoments

    @property
    def raw_bytes(self) -> int:
        return self.rows * self.row_bytes


def check_plan(where: str, size: PlanSize, store_dir: str | None) -> None:
    """Refuse a plan whose workers cannot fit in memory, whose task list is too long for the
    coordinator, or whose data cannot fit on the store's disk; names the keys to change."""
    if size.tasks > MAX_TASKS:
        raise ConfigError(f"config {where}: the plan has {size.tasks:,} tasks (at most "
                          f"{MAX_TASKS:,}); raise ingest.task_chunks or ingest.chunk_rows")
    mem = memory_bytes()
    if size.worker_bytes * size.workers > mem:
        co = f", plus the co-moments of {size.features:,} features" if size.correlation else ""
        raise ConfigError(
            f"config {where}: {size.workers} workers x about {gib(size.worker_bytes)} each "
            f"(tasks of {size.task_rows:,} rows x {size.row_bytes:,} bytes{co}) exceed this "
            f"machine's {gib(mem)}; lower ingest.workers, ingest.task_chunks or "
            "ingest.chunk_rows" + (", or set stats.correlation: false" if co else ""))
    if store_dir is None:
        return
    free = free_bytes(store_dir)
    if free is not None and size.raw_bytes > DISK_SLACK * free:
        raise ConfigError(
            f"config {where}: {size.rows:,} rows x {size.row_bytes:,} bytes is "
            f"{gib(size.raw_bytes)} uncompressed, and {store_dir!r} has {gib(free)} free "
            f"(it cannot fit even at {DISK_SLACK}x compression); free space, or point 'store' "
            "at a larger disk")


def free_bytes(path: str) -> int | None:
    """Free bytes on the file system of ``path`` (its nearest existing parent)."""
    p = os.path.abspath(path)
    while not os.path.exists(p) and os.path.dirname(p) != p:
        p = os.path.dirname(p)
    try:
        return int(shutil.disk_usage(p).free)
    except OSError:
        return None
