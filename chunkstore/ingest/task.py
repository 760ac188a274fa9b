"""One write task, run inside a worker process: read, check, write whole chunks, commit.

The worker opens the store and the source itself; only the small :class:`TaskSpec` and
:class:`TaskResult` cross process boundaries. A task writes exactly the rows of its plan entry,
which are whole chunks, then writes its completion record. Killed anywhere before the record,
it is simply run again on resume (zarr's local store writes each chunk by rename, so no chunk
is ever torn).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from chunkstore.config import Config
from chunkstore.core.moments import Partial
from chunkstore.core.plan import WriteTask
from chunkstore.core.rowhash import row_hashes
from chunkstore.errors import ChunkstoreError, SourceError
from chunkstore.runtime.memory import peak_rss
from chunkstore.sources import Source, check_batch, open_source
from chunkstore.store import journal, layout
from chunkstore.store.urls import is_local, open_group
from chunkstore.store.writes import write_rows

ZARRS_PIPELINE = "zarrs.ZarrsCodecPipeline"
# zarrs encodes on threading.max_workers threads, and with more than one it lays a shard's inner
# chunks out in the order they finish: same data, other bytes. Parallelism comes from one
# worker process (or thread) per core instead.
ZARRS_SETTINGS = {"codec_pipeline.path": ZARRS_PIPELINE, "threading.max_workers": 1}


@dataclass(frozen=True)
class TaskSpec:
    """Everything a worker needs, small enough to send per task."""

    store: str
    config_json: str
    has_group: bool
    task: WriteTask


@dataclass(frozen=True)
class TaskResult:
    task_id: int
    rows: int
    seconds: float
    peak_rss: int  # bytes, the worker process's peak so far


_SOURCE: Source | None = None  # a source object sent once per worker (python sources)


def init_worker(blosc_threads: int, source: Source | None = None) -> None:
    """Worker initializer: one Blosc thread per worker process avoids oversubscription.

    ``source``, when given, is used instead of building one from the config: a python source
    carries the user's item list and callables, which a config's names cannot.
    """
    from numcodecs import blosc

    global _SOURCE
    blosc.set_nthreads(blosc_threads)
    _SOURCE = source


def _zarrs_wanted(store: str) -> bool:
    """Local store, ``zarrs`` installed, no pipeline chosen by the user, not turned off (read
    on every call: a cached answer would miss a changed ``CHUNKSTORE_ZARRS``)."""
    if (not is_local(store) or os.environ.get("CHUNKSTORE_ZARRS", "1") == "0"
            or "ZARR_CODEC_PIPELINE__PATH" in os.environ):
        return False
    try:
        import zarrs  # noqa: F401
    except ImportError:
        return False
    return True


@lru_cache(maxsize=1)  # a worker process switches once per store, not once per task
def use_zarrs(store: str) -> bool:
    """Switch this worker process to the zarrs (Rust) codec pipeline when it can help.

    Only in a worker process (a process-wide zarr setting must not leak into the caller; the
    caller's own threads use :func:`zarrs_while`), only for local stores (zarrs-python's
    native path is for file stores; others would warn and fall back), only when ``zarrs`` is
    installed and the user has not chosen a pipeline (``ZARR_CODEC_PIPELINE__PATH``). zarrs
    writes the same bytes as zarr-python's pipeline for our codecs (tests/ingest/
    test_zarrs.py), so the choice never changes a store. ``CHUNKSTORE_ZARRS=0`` turns it off.
    """
    if multiprocessing.parent_process() is None or not _zarrs_wanted(store):
        return False
    import zarr

    zarr.config.set(ZARRS_SETTINGS)
    return True


@contextmanager
def zarrs_while(store: str) -> Iterator[bool]:
    """The zarrs pipeline for arrays opened in this process while the block runs (tasks on
    threads of the caller's process), the caller's settings back after it; see
    :func:`use_zarrs` for when. Arrays the caller opened before keep their pipeline."""
    if not _zarrs_wanted(store):
        yield False
        return
    import zarr

    with zarr.config.set(ZARRS_SETTINGS):
        yield True


def worker_source() -> Source | None:
    """The source object this worker was given at start (python sources), if any."""
    return _SOURCE


@lru_cache(maxsize=4)
def worker_config_and_source(config_json: str) -> tuple[Config, Source]:
    d = json.loads(config_json)
    config = Config.from_dict(d["config"], file=d["file"])
    return config, _SOURCE or open_source(config.source, config.schema)


def assemble(task: WriteTask, config: Config, source: Source, has_group: bool
             ) -> dict[str, np.ndarray]:
    """Read and check the task's pieces into one buffer per array (store dtypes), with the
    rows' fingerprints (``meta/row_hash``) computed from the stored features."""
    schema = config.schema
    out = layout.sample_buffers(schema, task.rows, has_group)
    row = 0
    for p in task.pieces:
        where = source.describe(p.item)
        try:
            raw = source.read(p.item, p.item_start, p.item_stop)
        except ChunkstoreError:
            raise
        except Exception as e:  # a bug or I/O error in a source: name the item
            raise SourceError(f"{where}: reading rows [{p.item_start}, {p.item_stop}) failed: "
                              f"{type(e).__name__}: {e}") from e
        b = check_batch(raw, schema, where=where, item_start=p.item_start, rows=p.rows,
                        has_group=has_group, nan_policy=config.ingest.nan_policy)
        sl = slice(row, row + p.rows)
        out["features"][sl] = b.features
        for h in schema.heads:
            out[f"labels/{h.name}"][sl] = b.labels[h.name]
            out[f"masks/{h.name}"][sl] = b.masks[h.name]
        if b.group is not None:
            out["meta/group"][sl] = b.group
        row += p.rows
    out[layout.ROW_HASH][:] = row_hashes(out[layout.FEATURES])
    return out


def partial_stats(buffers: dict[str, np.ndarray], config: Config) -> dict[str, np.ndarray]:
    """The task's contribution to ``stats/all``, as flat arrays for its record.

    Moments, co-moments (when ``stats.correlation``), class and mask counts per head; nothing
    when ``stats.online`` is off.
    """
    if not config.stats.online:
        return {}
    from threadpoolctl import threadpool_limits

    heads = {h.name: h.classes for h in config.schema.heads}
    with threadpool_limits(1, user_api="blas"):  # the pool already has a process per core
        return Partial.of_block(
            buffers["features"], {h: buffers[f"labels/{h}"] for h in heads},
            {h: buffers[f"masks/{h}"] for h in heads}, heads,
            correlation=config.stats.correlation).to_arrays()


def run_task(spec: TaskSpec) -> TaskResult:
    """Run one write task end to end; raises SourceError naming the item on bad input."""
    t0 = time.perf_counter()
    config, source = worker_config_and_source(spec.config_json)
    task = spec.task
    buffers = assemble(task, config, source, spec.has_group)
    stats = partial_stats(buffers, config)
    use_zarrs(spec.store)
    group = open_group(spec.store, mode="r+")
    write_rows(group, buffers, task.start, task.stop)
    del buffers
    journal.write_record(spec.store, task.task_id,
                         {"task_id": task.task_id, "start": task.start, "stop": task.stop},
                         stats)
    return TaskResult(task.task_id, task.rows, time.perf_counter() - t0, peak_rss())
