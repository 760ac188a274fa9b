"""Streaming placement: producers whose sample counts are unknown until they run.

Each worker loops: claim the next item (a shared counter), ``process`` it, append its rows to a
one-chunk buffer, and whenever the buffer is full claim the next free chunk index (another shared
counter), write that whole chunk to every array and commit a chunk record listing the
``(item, row_start, row_stop)`` runs it holds. At the end each worker hands back its partial
buffer (< one chunk); the coordinator packs these leftovers (at most workers x chunk rows) into
the last chunks and trims the arrays to the exact N (metadata only). ``meta/source`` holds
``(item, row within item)`` for every sample, so the order is recorded rather than fixed — or,
when the python source declares ``provenance: true``, the pairs its ``process`` returns (e.g.
(document, token offset)). Either way the buffers carry each row's (item, row) beside the
arrays (``ITEM_ROWS``), and chunk records keep them as runs: resume and repair use those.

Exactly once, even after SIGKILL: an item is *complete* when its item record (its row count)
exists and its rows in committed chunks add up to that count. On resume, complete items are
skipped; chunks holding rows of incomplete items are reclaimed (their complete items' rows are
re-packed as leftovers, the rest is redone); the holes left behind are filled by renaming the
last chunks' files into them.

Journal (under ``_chunkstore/``): ``tasks/<chunk>.npz`` (chunk records: the row range and the
item runs), ``items/<item>.json`` and ``workers/<loop>.npz``: each loop's running partial
statistics of the chunks it committed, one file per loop rather than one per chunk, merged
into ``merged.npz`` for finalize (see :mod:`chunkstore.ingest.worker_partials`).

The shared counters are :class:`~chunkstore.cluster.SharedCounter` objects: process-shared
values for the local pool, scheduler-held ones on a Dask cluster. On a cluster the scheduler
reruns the loop of a worker that dies, but that loop's item in progress and its partial chunk
are gone; :func:`check_complete` detects it after the loops, and a rerun recovers exactly as
after a crash. On object storage a chunk moves by server-side copy + delete instead of a hard
link (see :mod:`chunkstore.store.urls`). Resume analysis and compaction live in
:mod:`chunkstore.ingest.recovery`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr
from tqdm import tqdm
from zarr.core.sync import sync

from chunkstore.config import Config
from chunkstore.core.moments import Partial
from chunkstore.core.plan import Plan, WriteTask, choose_chunk_rows
from chunkstore.core.rowhash import row_hashes
from chunkstore.errors import ChunkstoreError, ConfigError, IngestError
from chunkstore.ingest.executors import SharedCounter, executor, make_counters
from chunkstore.ingest.recovery import (
    ITEM_ROWS,
    chunk_rows_of,
    compact,
    concat_rows,
    item_record,
    recover,
    stream_buffers,
)
from chunkstore.ingest.task import (
    init_worker,
    use_zarrs,
    worker_config_and_source,
    worker_source,
)
from chunkstore.ingest.worker_partials import (
    RunningPartial,
    block_partial,
    consolidate,
    save_merged,
)
from chunkstore.runtime.faults import pause_point
from chunkstore.runtime.memory import peak_rss
from chunkstore.sources import Source, check_batch
from chunkstore.sources.python import PythonSource
from chunkstore.store import journal, layout
from chunkstore.store.stats_io import node_array
from chunkstore.store.urls import open_group, store_path

CAPACITY = 2**40  # rows an array is created with; trimmed to N at the end (metadata only)


def python_source(source: Source | None) -> PythonSource:
    """``source`` as the python source that streaming placement and the counting pass need."""
    if not isinstance(source, PythonSource):
        raise ConfigError(
            "streaming placement and the counting pass run a python source's process(item); "
            f"found a {type(source).__name__}: use source kind 'python' for them")
    return source


# ---------------------------------------------------------------------------- worker side

_SHARED: tuple[SharedCounter, ...] = ()  # (next_item, next_chunk, stop, items_done, rows_done)


def init_stream_worker(blosc_threads: int, source: Any, shared: tuple[SharedCounter, ...]
                       ) -> None:
    global _SHARED
    init_worker(blosc_threads, source)
    _SHARED = shared


@dataclass(frozen=True)
class LoopSpec:
    store: str
    config_json: str
    n_items: int
    skip: frozenset[int]
    chunk_rows: int
    has_group: bool


@dataclass(frozen=True)
class LoopResult:
    leftovers: dict[str, np.ndarray]  # < chunk_rows rows, including ITEM_ROWS
    peak_rss: int


def batch_arrays(batch: Any, item: int, config: Config) -> dict[str, np.ndarray]:
    """A checked batch as ``{array path: rows}`` plus its rows' (item, row) (``ITEM_ROWS``);
    ``meta/source`` is the batch's own provenance when it has one, else the same pairs."""
    n = len(batch)
    out = {layout.FEATURES: batch.features}
    for h in config.schema.heads:
        out[layout.label_path(h.name)] = batch.labels[h.name]
        out[layout.mask_path(h.name)] = batch.masks[h.name]
    if batch.group is not None:
        out[layout.GROUP] = batch.group
    out[ITEM_ROWS] = np.stack([np.full(n, item, dtype=np.int64), np.arange(n, dtype=np.int64)],
                              axis=1)
    out[layout.SOURCE] = out[ITEM_ROWS] if batch.source is None else batch.source
    return out


def runs_of(source_rows: np.ndarray) -> np.ndarray:
    """(item, row_start, row_stop) runs of consecutive rows of one item, in chunk order."""
    if len(source_rows) == 0:
        return np.zeros((0, 3), dtype=np.int64)
    item, row = source_rows[:, 0], source_rows[:, 1]
    cut = np.flatnonzero((np.diff(item) != 0) | (np.diff(row) != 1)) + 1
    starts = np.concatenate([[0], cut])
    stops = np.concatenate([cut, [len(item)]])
    return np.stack([item[starts], row[starts], row[stops - 1] + 1], axis=1).astype(np.int64)


def write_chunk(group: zarr.Group, store: str, config: Config, chunk: int, rows: int,
                data: dict[str, np.ndarray], moved_from: int = -1) -> Partial | None:
    """Write one chunk (``rows`` <= chunk_rows) of every array, then commit its record;
    returns the chunk's partial statistics (None with ``stats.online: false``).

    ``meta/row_hash`` is computed here from the chunk's features, whatever ``data`` holds for
    it: the loops' buffers and the re-packed leftovers all pass through this one place. The
    record holds the chunk's item runs, not its statistics: the caller adds those to a
    worker's running partial (:mod:`chunkstore.ingest.worker_partials`).
    """
    r = chunk_rows_of(group)
    data = {**data, layout.ROW_HASH: row_hashes(data[layout.FEATURES][:rows])}
    for name, values in data.items():
        if name != ITEM_ROWS:  # (item, row) pairs go to the record's runs, not to an array
            node_array(group, name)[chunk * r:chunk * r + rows] = values[:rows]
    part = block_partial(data, rows, config)
    journal.write_record(store, chunk, {"task_id": chunk, "start": chunk * r,
                                        "stop": chunk * r + rows, "moved_from": moved_from},
                         {"runs": runs_of(data[ITEM_ROWS][:rows])})
    return part


def produce_item(spec: LoopSpec, config: Config, source: PythonSource, item: int
                 ) -> dict[str, np.ndarray]:
    """Run ``process(item)``, check its batch and record the item's row count."""
    raw = source.run(item)
    b = check_batch(raw, config.schema, where=source.describe(item), item_start=0,
                    rows=len(raw), has_group=spec.has_group, has_source=source.has_source,
                    nan_policy=config.ingest.nan_policy)
    journal.write_json(item_record(spec.store, item), {"rows": len(b)})
    return batch_arrays(b, item, config)


def stream_loop(spec: LoopSpec) -> LoopResult:
    """A worker's whole share of a streaming ingest; returns its partial last chunk."""
    config, source = worker_config_and_source(spec.config_json)
    python = python_source(source)
    next_item, next_chunk, stop, items_done, rows_done = _SHARED
    use_zarrs(spec.store)
    group = open_group(spec.store, mode="r+")
    r = spec.chunk_rows
    buf = stream_buffers(config, r, spec.has_group)
    fill = 0
    running = RunningPartial(spec.store, config)
    try:
        while not stop.get():
            k = next_item.add(1)
            if k >= spec.n_items:
                break
            if k in spec.skip:
                continue
            rows = produce_item(spec, config, python, k)
            n = len(rows[ITEM_ROWS])
            pos = 0
            while pos < n:
                take = min(r - fill, n - pos)
                for name, values in rows.items():
                    buf[name][fill:fill + take] = values[pos:pos + take]
                fill, pos = fill + take, pos + take
                if fill == r:
                    chunk = next_chunk.add(1)
                    running.add(chunk, write_chunk(group, spec.store, config, chunk, r, buf))
                    fill = 0
            rows_done.add(n)  # before items_done: see check_complete
            items_done.add(1)
    except BaseException:
        with suppress(Exception):  # it covers committed chunks only: the resume skips them
            running.flush()
        raise
    running.flush()
    return LoopResult({k: v[:fill].copy() for k, v in buf.items()}, peak_rss())


def count_item(item: int) -> int:
    """Worker side of the opt-in counting pass: rows ``process`` makes for ``item``."""
    return len(python_source(worker_source()).run(item))


# ---------------------------------------------------------------------------- coordinator side

@dataclass(frozen=True)
class StreamingResult:
    """What :func:`run_streaming` did."""

    rows: int  # N, the store's final row count
    items_run: int  # items processed by this run
    items_skipped: int  # items complete from an earlier run
    leftover_rows: int  # rows packed by the coordinator into the last chunks
    worker_peak_rss: int  # bytes, the largest worker's peak


def trim_rows(array: zarr.Array, rows: int) -> None:
    """Set ``array``'s row count to ``rows``, writing only its metadata.

    ``zarr.Array.resize`` deletes the chunks outside the new shape by enumerating every chunk
    coordinate of the old shape: 2**40 / chunk_rows of them for a streaming store, which never
    ends. The public async API (``Array.async_array.resize``) has the switch that skips it,
    ``delete_outside_chunks=False``; ``zarr.core.sync.sync`` (what zarr's own synchronous API
    wraps every coroutine in) runs it on zarr's event loop, the one the store's I/O is bound
    to. The chunks past the end are deleted by
    :func:`pack_and_trim`, which lists only the files that exist.
    """
    sync(array.async_array.resize((rows, *array.shape[1:]), delete_outside_chunks=False))


def pack_and_trim(store: str, config: Config, full_chunks: int,
                  leftovers: dict[str, np.ndarray], stats: Partial | None = None
                  ) -> tuple[int, Partial | None]:
    """Write leftovers (sorted by (item, row)) after the full chunks; trim arrays to N.
    Returns (N, ``stats`` merged with the partials of the chunks written here)."""
    group = open_group(store, mode="r+")
    r = chunk_rows_of(group)
    order = np.lexsort((leftovers[ITEM_ROWS][:, 1], leftovers[ITEM_ROWS][:, 0]))
    rows = {k: v[order] for k, v in leftovers.items()}
    total = len(order)
    for i, start in enumerate(range(0, total, r)):
        part = {k: v[start:start + r] for k, v in rows.items()}
        chunk_stats = write_chunk(group, store, config, full_chunks + i,
                                  len(part[ITEM_ROWS]), part)
        if stats is not None and chunk_stats is not None:
            stats = stats.merge(chunk_stats)
        pause_point("pack-mid", journal.journal_dir(store))
    n = full_chunks * r + total
    last = -(-n // r)
    for name in layout.stored_sample_arrays(group):
        for p in (store_path(store) / name / "c").iterdir():  # reclaimed chunks past the end
            if p.name.isdigit() and int(p.name) >= last:
                p.remove()
        trim_rows(node_array(group, name), n)
    return n, stats


def streaming_plan(n: int, chunk_rows: int) -> Plan:
    """One pseudo-task per chunk, so the ordered path's finalize and tools read the journal."""
    return Plan(n, chunk_rows, tuple(WriteTask(c, c * chunk_rows, min(n, (c + 1) * chunk_rows), ())
                                     for c in range(-(-n // chunk_rows))))


def run_streaming(config: Config, source: PythonSource, store: str, *, workers: int,
                  chunk_rows: int, progress: bool, scheduler: str | None) -> StreamingResult:
    """Recover what an earlier run left, run the worker loops, pack the leftovers, trim.

    Raises
    ------
    IngestError
        A worker loop failed or its process died; committed chunks and complete items are
        kept, and rerunning the same command resumes.
    """
    has_group = source.has_group
    kept, reclaimed, complete = recover(store, config, has_group)
    layout.remove_partials(store)  # temp files of writers killed mid-chunk
    pause_point("start", journal.journal_dir(store))
    spec = LoopSpec(store, json.dumps({"config": config.to_dict(), "file": config.file}),
                    len(source.items), frozenset(complete), chunk_rows, has_group)
    first_chunk = max(kept, default=-1) + 1
    results = run_loops(config, source, spec, workers=workers, scheduler=scheduler,
                        first_chunk=first_chunk, progress=progress)
    leftovers = concat_rows([reclaimed, *(r.leftovers for r in results)], config, has_group)
    pause_point("pack", journal.journal_dir(store))
    group = open_group(store, mode="r+")
    committed = sorted(journal.completed_tasks(store))
    # The loops' files merged into one, covering the chunk ids compaction leaves: valid once
    # it is done (a crash in between recomputes from the store, see worker_partials).
    stats = consolidate(store, group, config, chunk_rows, dict.fromkeys(committed, chunk_rows),
                        covers=range(len(committed)))
    full = compact(store, group, committed)
    n, stats = pack_and_trim(store, config, full, leftovers, stats)
    save_merged(store, stats, n, -(-n // chunk_rows))
    return StreamingResult(rows=n, items_run=spec.n_items - len(complete),
                           items_skipped=len(complete),
                           leftover_rows=len(leftovers[ITEM_ROWS]),
                           worker_peak_rss=max((r.peak_rss for r in results), default=0))


def run_loops(config: Config, source: PythonSource, spec: LoopSpec, *, workers: int,
              scheduler: str | None, first_chunk: int, progress: bool) -> list[LoopResult]:
    """Run the worker loops to the end of the items; check nothing was lost on the way."""
    todo = spec.n_items - len(spec.skip)
    shared = make_counters(5, scheduler)  # next_item, next_chunk, stop, items_done, rows_done
    loops = max(1, min(workers, todo))
    bar = tqdm(total=todo, unit="items", desc="ingest (streaming)", disable=not progress,
               dynamic_ncols=True)
    try:
        # No retries: a loop that raised lost its item; rerunning it would hide the error.
        with executor(loops, scheduler, init_stream_worker,
                      (config.ingest.blosc_threads, source, shared), store=spec.store,
                      storage_options=config.storage_options, retries=0) as ex, \
                counters_at(shared, (0, first_chunk, 0, 0, 0)):
            futures = [ex.submit(stream_loop, spec) for _ in range(loops)]
            watch(futures, shared, bar, spec.store)
            results: list[LoopResult] = [f.result() for f in futures]
            check_complete(spec.store, shared, todo, first_chunk, spec.chunk_rows,
                           sum(len(r.leftovers[ITEM_ROWS]) for r in results))
    finally:
        bar.close()
    return results


def watch(futures: list[Future[Any]], shared: tuple[SharedCounter, ...], bar: Any,
          store: str) -> None:
    """Show progress until every loop ends; at the first failure stop the others and raise."""
    t0 = time.perf_counter()
    pending = set(futures)
    while pending:
        done, pending = wait(pending, timeout=0.2, return_when=FIRST_EXCEPTION)
        bar.n = shared[3].get()
        rows, secs = shared[4].get(), time.perf_counter() - t0
        bar.set_postfix_str(f"{rows:,} rows, {rows / secs:,.0f} rows/s", refresh=True)
        failed = [f for f in done if f.exception() is not None]
        if failed:
            shared[2].set(1)  # stop the other loops at their next item
            wait(pending)
            raise loop_failure(failed[0].exception(), store) from failed[0].exception()


@contextmanager
def counters_at(shared: tuple[SharedCounter, ...], starts: tuple[int, ...]) -> Iterator[None]:
    """Set the counters for a run; close them at its end (while the executor is still up)."""
    for counter, start in zip(shared, starts, strict=True):
        counter.set(start)
    try:
        yield
    finally:
        for counter in shared:
            counter.close()


def check_complete(store: str, shared: tuple[SharedCounter, ...], todo: int, first_chunk: int,
                   chunk_rows: int, loop_leftovers: int) -> None:
    """After the loops: every item was buffered and every buffered row is in a committed chunk
    or a returned leftover. Fails when a loop died and was rerun (Dask reschedules the loop of a
    dead worker): its item in progress, an uncommitted chunk or its partial chunk is gone.

    A loop counts an item's rows, then the item, after buffering all of it: dying before
    either leaves ``items_done`` short; dying after both loses only its buffer, which then
    shows in the row balance.
    """
    claimed = range(first_chunk, shared[1].get())
    committed = sum(1 for c in journal.completed_tasks(store) if c in claimed)
    items, rows = shared[3].get(), shared[4].get()
    if items != todo or rows != committed * chunk_rows + loop_leftovers:
        raise IngestError(
            f"a streaming worker was lost during the ingest of {store!r} ({items} of {todo} "
            f"items buffered; {rows:,} rows produced, {committed * chunk_rows + loop_leftovers:,} "
            "committed or handed back); committed chunks and complete items are kept in the "
            "journal: rerun the same command to resume")


def loop_failure(e: BaseException | None, store: str) -> BaseException:
    """The error to show for a failed worker loop: what happened and how to resume."""
    tail = ("\n[committed chunks and completed items are kept in the journal; fix the problem "
            "and rerun the same command to resume]")
    if isinstance(e, ChunkstoreError):
        return type(e)(f"{e}{tail}")
    if isinstance(e, BrokenProcessPool):
        return IngestError(f"a streaming worker process died (killed, or out of memory) during "
                           f"the ingest of {store!r}; if it ran out of memory, lower "
                           f"ingest.workers or make process(item) return smaller batches{tail}")
    return IngestError(f"a streaming worker failed: {type(e).__name__}: {e}{tail}")


def streaming_chunk_rows(config: Config) -> int:
    feature_row = config.schema.n_features * np.dtype(config.schema.feature_dtype).itemsize
    return config.ingest.chunk_rows or choose_chunk_rows(
        feature_row, config.ingest.target_chunk_mib * 2**20)
