"""Streaming placement: producers whose sample counts are unknown until they run.

Each worker loops: claim the next item (a shared counter), ``process`` it, append its rows to a
one-chunk buffer, and whenever the buffer is full claim the next free chunk index (another shared
counter), write that whole chunk to every array and commit a chunk record listing the
``(item, row_start, row_stop)`` runs it holds. At the end each worker hands back its partial
buffer (< one chunk); the coordinator packs these leftovers (at most workers x chunk rows) into
the last chunks and trims the arrays to the exact N (metadata only). ``meta/source`` holds
``(item, row within item)`` for every sample, so the order is recorded rather than fixed.

Exactly once, even after SIGKILL: an item is *complete* when its item record (its row count)
exists and its rows in committed chunks add up to that count. On resume, complete items are
skipped; chunks holding rows of incomplete items are reclaimed (their complete items' rows are
re-packed as leftovers, the rest is redone); the holes left behind are filled by renaming the
last chunks' files into them.

Journal (under ``_chunkstore/``): ``tasks/<chunk>.npz`` (chunk records, the same format as task
records, so statistics are merged by the same code) and ``items/<item>.json``.

The shared counters are :class:`~chunkstore.cluster.SharedCounter` objects: process-shared
values for the local pool, scheduler-held ones on a Dask cluster. On a cluster the scheduler
reruns the loop of a worker that dies, but that loop's item in progress and its partial chunk
are gone; :func:`check_complete` detects it after the loops, and a rerun recovers exactly as
after a crash. On object storage a chunk moves by server-side copy + delete instead of a hard
link (see :mod:`chunkstore.storage`).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, wait
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr
from tqdm import tqdm
from zarr.core.sync import sync

from chunkstore.config import Config
from chunkstore.core.plan import Plan, WriteTask, choose_chunk_rows
from chunkstore.errors import ChunkstoreError, IngestError
from chunkstore.ingest.executors import SharedCounter, executor, make_counters
from chunkstore.ingest.task import (
    init_worker,
    partial_stats,
    worker_config_and_source,
    worker_source,
)
from chunkstore.runtime.faults import pause_point
from chunkstore.runtime.memory import peak_rss
from chunkstore.sources import check_batch
from chunkstore.sources.python import PythonSource
from chunkstore.store import journal, layout
from chunkstore.store.urls import StorePath, open_group, store_path

CAPACITY = 2**40  # rows an array is created with; trimmed to N at the end (metadata only)
ITEMS = "items"


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
    leftovers: dict[str, np.ndarray]  # < chunk_rows rows, including "meta/source"
    peak_rss: int


def empty_buffers(config: Config, rows: int, has_group: bool) -> dict[str, np.ndarray]:
    return layout.sample_buffers(config.schema, rows, has_group, has_source=True)


def batch_arrays(batch: Any, item: int, config: Config) -> dict[str, np.ndarray]:
    """A checked batch as ``{array path: rows}``, with its ``meta/source`` provenance."""
    n = len(batch)
    out = {"features": batch.features}
    for h in config.schema.heads:
        out[f"labels/{h.name}"] = batch.labels[h.name]
        out[f"masks/{h.name}"] = batch.masks[h.name]
    if batch.group is not None:
        out["meta/group"] = batch.group
    out["meta/source"] = np.stack([np.full(n, item, dtype=np.int64),
                                   np.arange(n, dtype=np.int64)], axis=1)
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
                data: dict[str, np.ndarray], moved_from: int = -1) -> None:
    """Write one chunk (``rows`` <= chunk_rows) of every array, then commit its record."""
    r = int(group.attrs[layout.ATTR_KEY]["chunk_rows"])
    for name, values in data.items():
        group[name][chunk * r:chunk * r + rows] = values[:rows]
    stats = partial_stats({k: v[:rows] for k, v in data.items()}, config)
    stats["runs"] = runs_of(data["meta/source"][:rows])
    journal.write_record(store, chunk, {"task_id": chunk, "start": chunk * r,
                                        "stop": chunk * r + rows, "moved_from": moved_from},
                         stats)


def stream_loop(spec: LoopSpec) -> LoopResult:
    """A worker's whole share of a streaming ingest; returns its partial last chunk."""
    config, source = worker_config_and_source(spec.config_json)
    assert isinstance(source, PythonSource)
    next_item, next_chunk, stop, items_done, rows_done = _SHARED
    group = open_group(spec.store, mode="r+")
    r = spec.chunk_rows
    buf = empty_buffers(config, r, spec.has_group)
    fill = 0
    while not stop.get():
        k = next_item.add(1)
        if k >= spec.n_items:
            break
        if k in spec.skip:
            continue
        raw = source.run(k)
        b = check_batch(raw, config.schema, where=source.describe(k), item_start=0,
                        rows=len(raw), has_group=spec.has_group,
                        nan_policy=config.ingest.nan_policy)
        rows = batch_arrays(b, k, config)
        n = len(b)
        journal.write_json(journal.journal_dir(spec.store) / ITEMS / f"{k:09d}.json", {"rows": n})
        pos = 0
        while pos < n:
            take = min(r - fill, n - pos)
            for name, values in rows.items():
                buf[name][fill:fill + take] = values[pos:pos + take]
            fill, pos = fill + take, pos + take
            if fill == r:
                write_chunk(group, spec.store, config, next_chunk.add(1), r, buf)
                fill = 0
        rows_done.add(n)  # before items_done: see check_complete
        items_done.add(1)
    return LoopResult({k: v[:fill].copy() for k, v in buf.items()}, peak_rss())


# ---------------------------------------------------------------------------- coordinator side

def _item_counts(store: str) -> dict[int, int]:
    d = journal.journal_dir(store) / ITEMS
    return {int(p.stem): int(json.loads(p.read_text())["rows"]) for p in d.iterdir()
            if p.name.endswith(".json") and not p.name.startswith(".")}


def recover(store: str, config: Config, has_group: bool
            ) -> tuple[list[int], dict[str, np.ndarray], set[int]]:
    """Resume analysis: (kept chunk indices, leftover rows re-read from reclaimed chunks,
    complete items). Reclaimed chunk records and incomplete item records are deleted."""
    records = {c: journal.read_record(store, c) for c in sorted(journal.completed_tasks(store))}
    for meta, _ in list(records.values()):  # a move that crashed after its new record
        src = meta.get("moved_from", -1)
        if src >= 0 and src in records:
            journal.record_path(store, src).unlink()
            del records[src]
    counts = _item_counts(store)
    committed: Counter[int] = Counter()
    for _, arrays in records.values():
        for item, a, b in arrays["runs"]:
            committed[int(item)] += int(b - a)
    complete = {k for k, n in counts.items() if committed[k] == n}
    group = open_group(store, mode="r")
    r = int(group.attrs[layout.ATTR_KEY]["chunk_rows"])
    parts: list[dict[str, np.ndarray]] = []
    kept = []
    for c, (meta, arrays) in records.items():
        rows = meta["stop"] - meta["start"]
        # A partial chunk (leftovers packed before a crash) is re-packed too: kept chunks are
        # full, so that compaction leaves no fill rows behind.
        if rows == r and all(int(item) in complete for item in arrays["runs"][:, 0]):
            kept.append(c)
            continue
        data = {name: group[name][c * r:c * r + rows] for name in
                layout.sample_arrays(config.schema, has_group, has_source=True)}
        keep = np.isin(data["meta/source"][:, 0], list(complete))
        parts.append({k: v[keep] for k, v in data.items()})
        journal.record_path(store, c).unlink()
    for k in set(counts) - complete:
        (journal.journal_dir(store) / ITEMS / f"{k:09d}.json").unlink()
    return kept, concat_rows(parts, config, has_group), complete


def concat_rows(parts: list[dict[str, np.ndarray]], config: Config, has_group: bool
                ) -> dict[str, np.ndarray]:
    parts = [p for p in parts if len(p["meta/source"])]
    if not parts:
        return {k: v[:0] for k, v in empty_buffers(config, 0, has_group).items()}
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def chunk_files(store: str, group: zarr.Group, chunk: int) -> list[StorePath]:
    """The files of chunk ``chunk`` in every sample array."""
    root = store_path(store)
    return [root / name / layout.chunk_key(group[name], chunk)
            for name in layout.stored_sample_arrays(group)]


def move_chunk(store: str, group: zarr.Group, src: int, dst: int) -> None:
    """Fill hole ``dst`` with chunk ``src`` by renaming files, crash-safely.

    Hard links (copies on object storage) first (the record of ``src`` still owns the data),
    then the record of ``dst`` (marked ``moved_from``, so a crash before the old record is
    deleted is resolved on resume), then the old record and files go.
    """
    for a, b in zip(chunk_files(store, group, src), chunk_files(store, group, dst), strict=True):
        if a.exists():
            a.copy_to(b)
        else:  # an all-fill chunk zarr did not write
            b.unlink(missing_ok=True)
    meta, arrays = journal.read_record(store, src)
    r = meta["stop"] - meta["start"]
    chunk_rows = int(group.attrs[layout.ATTR_KEY]["chunk_rows"])
    journal.write_record(store, dst, {**meta, "task_id": dst, "start": dst * chunk_rows,
                                      "stop": dst * chunk_rows + r, "moved_from": src}, arrays)
    journal.record_path(store, src).unlink()
    for a in chunk_files(store, group, src):
        a.unlink(missing_ok=True)


def compact(store: str, group: zarr.Group, kept: list[int]) -> int:
    """Move the highest chunks into the holes below them; return the number of chunks."""
    kept = sorted(kept)
    n = len(kept)
    holes = sorted(set(range(n)) - set(kept))
    movers = [c for c in reversed(kept) if c >= n]
    for hole, src in zip(holes, movers, strict=True):
        move_chunk(store, group, src, hole)
    return n


def pack_and_trim(store: str, config: Config, full_chunks: int,
                  leftovers: dict[str, np.ndarray]) -> int:
    """Write leftovers (sorted by provenance) after the full chunks; trim arrays to N."""
    group = open_group(store, mode="r+")
    r = int(group.attrs[layout.ATTR_KEY]["chunk_rows"])
    order = np.lexsort((leftovers["meta/source"][:, 1], leftovers["meta/source"][:, 0]))
    rows = {k: v[order] for k, v in leftovers.items()}
    total = len(order)
    for i, start in enumerate(range(0, total, r)):
        part = {k: v[start:start + r] for k, v in rows.items()}
        write_chunk(group, store, config, full_chunks + i, len(part["meta/source"]), part)
        pause_point("pack-mid", journal.journal_dir(store))
    n = full_chunks * r + total
    last = -(-n // r)
    for name in layout.stored_sample_arrays(group):
        arr = group[name]  # garbage of reclaimed chunks past the end
        for p in (store_path(store) / name / "c").iterdir():
            if p.name.isdigit() and int(p.name) >= last:
                p.remove()
        sync(arr._async_array.resize((n, *arr.shape[1:]), delete_outside_chunks=False))
    return n


def streaming_plan(n: int, chunk_rows: int) -> Plan:
    """One pseudo-task per chunk, so the ordered path's finalize and tools read the journal."""
    return Plan(n, chunk_rows, tuple(WriteTask(c, c * chunk_rows, min(n, (c + 1) * chunk_rows), ())
                                     for c in range(-(-n // chunk_rows))))


def run_streaming(config: Config, source: PythonSource, store: str, *, workers: int,
                  chunk_rows: int, progress: bool, scheduler: str | None
                  ) -> tuple[int, int, int, int, int]:
    """Recover, run the worker loops, pack leftovers, trim.

    Returns (N, items processed now, items skipped, leftover rows packed, worker peak RSS).
    """
    has_group = source.has_group
    kept, reclaimed, complete = recover(store, config, has_group)
    layout.remove_partials(store)  # temp files of writers killed mid-chunk
    pause_point("start", journal.journal_dir(store))
    shared = make_counters(5, scheduler)  # next_item, next_chunk, stop, items_done, rows_done
    first_chunk = max(kept, default=-1) + 1
    n_items = len(source.items)
    todo = n_items - len(complete)
    config_json = json.dumps({"config": config.to_dict(), "file": config.file})
    spec = LoopSpec(store, config_json, n_items, frozenset(complete), chunk_rows, has_group)
    parts, worker_peak, loop_leftovers = [reclaimed], 0, 0
    bar = tqdm(total=todo, unit="items", desc="ingest (streaming)", disable=not progress,
               dynamic_ncols=True)
    t0 = time.perf_counter()
    try:
        loops = max(1, min(workers, todo))
        # No retries: a loop that raised lost its item; rerunning it would hide the error.
        with executor(loops, scheduler, init_stream_worker,
                      (config.ingest.blosc_threads, source, shared), store=store,
                      storage_options=config.storage_options, retries=0) as ex, \
                counters_at(shared, (0, first_chunk, 0, 0, 0)):
            futures: list[Future[Any]] = [ex.submit(stream_loop, spec) for _ in range(loops)]
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
                    raise _failure(failed[0].exception(), store)
            for f in futures:
                result: LoopResult = f.result()
                parts.append(result.leftovers)
                loop_leftovers += len(result.leftovers["meta/source"])
                worker_peak = max(worker_peak, result.peak_rss)
            check_complete(store, shared, todo, first_chunk, chunk_rows, loop_leftovers)
    finally:
        bar.close()
    leftovers = concat_rows(parts, config, has_group)
    pause_point("pack", journal.journal_dir(store))
    group = open_group(store, mode="r+")
    full = compact(store, group, sorted(journal.completed_tasks(store)))
    n = pack_and_trim(store, config, full, leftovers)
    return n, todo, len(complete), len(leftovers["meta/source"]), worker_peak


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


def _failure(e: BaseException | None, store: str) -> BaseException:
    tail = ("\n[committed chunks and completed items are kept in the journal; fix the problem "
            "and rerun the same command to resume]")
    if isinstance(e, ChunkstoreError):
        return type(e)(f"{e}{tail}")
    return IngestError(f"a streaming worker failed: {type(e).__name__}: {e}{tail}")


def streaming_chunk_rows(config: Config) -> int:
    feature_row = config.schema.n_features * np.dtype(config.schema.feature_dtype).itemsize
    return config.ingest.chunk_rows or choose_chunk_rows(
        feature_row, config.ingest.target_chunk_mib * 2**20)

def count_item(item: int) -> int:
    """Worker side of the opt-in counting pass: rows ``process`` makes for ``item``."""
    source = worker_source()
    assert isinstance(source, PythonSource)
    return len(source.run(item))
