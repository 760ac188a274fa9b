"""The ingest coordinator: plan, create or resume the store, run tasks, finalize.

The coordinator never touches sample data. It counts rows, plans chunk-aligned tasks, creates
the store at its final shape, sends small task specs to a process pool (or a
``distributed.Client``), journals nothing itself (each task commits its own record) and, at the
end, merges the records' partial statistics into ``stats/all`` and marks the store complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, Future, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import AbstractContextManager
from typing import Any

import numpy as np
from tqdm import tqdm

from chunkstore.config import Config
from chunkstore.core.moments import Partial, merge_partials
from chunkstore.core.plan import (
    Plan,
    check_shards,
    choose_chunk_rows,
    choose_task_chunks,
    plan_writes,
    shard_rows_of,
)
from chunkstore.errors import (
    ChunkstoreError,
    IngestError,
    NotAStoreError,
    SourceError,
    StoreExistsError,
)
from chunkstore.ingest.executors import executor
from chunkstore.ingest.streaming import (
    CAPACITY,
    StreamingResult,
    count_item,
    python_source,
    run_streaming,
    streaming_chunk_rows,
    streaming_plan,
)
from chunkstore.ingest.summary import IngestSummary
from chunkstore.ingest.task import TaskSpec, init_worker, run_task
from chunkstore.runtime.budget import PlanSize, check_plan
from chunkstore.runtime.memory import peak_rss
from chunkstore.sources import Source, open_source
from chunkstore.sources.python import PythonSource
from chunkstore.store import journal, layout, versions
from chunkstore.store import urls as storage
from chunkstore.store.stats_io import partial_arrays, write_scope
from chunkstore.store.urls import open_group
from chunkstore.store.view import DIGEST_KEY, seal_attrs


def row_bytes(config: Config, has_group: bool, has_source: bool = False) -> int:
    """Uncompressed bytes of one sample across every array."""
    return sum(
        int(np.prod(tail, dtype=np.int64)) * np.dtype(dtype).itemsize
        for tail, dtype, _ in layout.sample_arrays(config.schema, has_group, has_source).values()
    )


def resolve_workers(requested: int | None) -> int:
    return requested or os.cpu_count() or 1


def make_executor(workers: int, scheduler: str | None, initargs: tuple[Any, ...],
                  initializer: Callable[..., None] = init_worker, *, store: str = "",
                  storage_options: Mapping[str, Any] | None = None
                  ) -> AbstractContextManager[Executor]:
    """A process pool, threads for a ``memory://`` store, or a ``distributed.Client`` executor
    when a scheduler address is given (see :func:`chunkstore.cluster.executor`).

    ``initializer(*initargs)`` runs once in every worker before any task, after the store's
    ``storage_options`` are set there.
    """
    return executor(workers, scheduler, initializer, initargs, store=store,
                    storage_options=storage_options)


def _check_existing(store: str, sha: str, config: Config, overwrite: bool) -> str:
    """Decide what to do with what is at ``store``: "create", "resume" or "done"."""
    path = storage.store_path(store)
    journal.refuse_foreign(store)
    if not path.exists() or not any(p.name != layout.JOURNAL_DIR for p in path.iterdir()):
        return "create"
    try:
        attrs = layout.read_attrs(store)
    except NotAStoreError as e:
        raise StoreExistsError(f"{store!r} exists and is not a chunkstore store, so it is left "
                               "untouched; choose another store path or delete it") from e
    if overwrite:
        return "create"
    if attrs.get("config_sha256") == sha:
        return "done" if attrs.get("status") == layout.COMPLETE else "resume"
    old = journal.journal_dir(store) / "config.json"
    differs = ""
    if old.exists():
        before, after = journal.read_json(old), config.to_dict()
        keys = sorted(k for k in set(before) | set(after)
                      if k != "ingest" and before.get(k) != after.get(k))
        differs = f" (config keys that differ: {keys})" if keys else ""
    raise StoreExistsError(f"store {store!r} was built from a different config{differs}; rerun "
                           "with --overwrite to replace it, or point 'store' elsewhere")


def _clear(store: str) -> None:
    """Delete a store's contents, keeping only the lock we hold. Links are removed, never
    followed; in ``_chunkstore/`` only what chunkstore writes is removed."""
    for p in storage.store_path(store).iterdir():
        if p.name == layout.JOURNAL_DIR:
            for q in p.iterdir():
                if q.name != "lock" and journal.is_ours(q):
                    q.remove()
        else:
            p.remove()


def finalize(store: str, plan: Plan, config: Config) -> None:
    """Merge every task's partial statistics (in task order) into ``stats/all``; mark complete.

    With ``stats.online: false`` the records hold none and ``stats/all`` is left to
    ``chunkstore stats STORE``.
    """
    if config.stats.online:
        total = merged_partial(store, plan, config)
        write_scope(open_group(store, mode="r+"), "all", partial_arrays(total), {
            "computed_at": layout.now_iso(), "rows": plan.n_samples, "method": "ingest",
            "scope": "all", "ddof": 0, "correlation": config.stats.correlation,
            "note": "moments over finite values; nan_count and inf_count count the rest; "
                    "correlation over the rows where both features are finite"})
    layout.update_attrs(store, status=layout.COMPLETE, completed=layout.now_iso())
    seal_attrs(store)
    journal.compact_records(store)


def merged_partial(store: str, plan: Plan, config: Config) -> Partial:
    """The merge of every record's partial statistics, saved as ``_chunkstore/merged.npz``
    before the records are compacted; a later finalize (a task rerun after completion: the same
    rows, hence the same partial) reuses it."""
    merged = journal.journal_dir(store) / journal.MERGED
    if merged.exists():
        return Partial.from_arrays(journal.read_npz(merged)[1])
    heads = {h.name: h.classes for h in config.schema.heads}
    records = journal.iter_records(store, [t.task_id for t in plan.tasks])
    total = merge_partials((Partial.from_arrays(a) for _, a in records), Partial.empty(
        config.schema.n_features, heads, config.stats.correlation))
    journal.write_npz(merged, {"tasks": len(plan.tasks), "rows": plan.n_samples},
                      total.to_arrays())
    return total


def settle(store: str) -> None:
    """After finalize (again on a rerun, in case it was killed in between; both idempotent):
    seal the attrs digest, so an edited zarr.json is an error on open, and drop the partial
    statistics from the journal, now that they are merged into ``stats/all``."""
    if DIGEST_KEY not in open_group(store, mode="r").attrs:
        seal_attrs(store)
    journal.compact_records(store)


def ingest_store(config: Config, *, workers: int | None = None, overwrite: bool = False,
                 progress: bool = True, validate: Callable[[bool], None] | None = None,
                 started: float | None = None) -> IngestSummary:
    """Build (or resume) the store of a resolved ``config`` (see :func:`chunkstore.ingest`).

    ``validate(has_group)`` runs once the source is open and before anything is written (the
    pipeline checks the config's declared splits there).
    """
    t0 = started if started is not None else time.perf_counter()
    storage.configure(config.store, config.storage_options)
    source = open_source(config.source, config.schema)
    if validate is not None:
        validate(source.has_group)  # e.g. a bad split fails before any writing
    n_workers = resolve_workers(workers or config.ingest.workers)
    if is_streaming(config):
        return _ingest_streaming(config, python_source(source), n_workers, overwrite, progress,
                                 t0)
    store = config.store
    plan, sha = plan_ingest(config, source, n_workers)
    storage.store_path(store).parent.mkdir()
    _check_existing(store, sha, config, overwrite)  # before creating anything
    with journal.StoreLock(store):
        state = open_or_create(config, plan, sha, source.has_group, overwrite)
        if state == "resume":
            journal.set_aside_bad_records(store)  # their tasks rerun; never a blocked resume
        done = journal.completed_tasks(store)
        pending = [t for t in plan.tasks if t.task_id not in done]
        rb = row_bytes(config, source.has_group)
        worker_peak = run_tasks(store, config, source, plan, pending, n_workers, progress, rb)
        if state != "done" or pending:
            finalize(store, plan, config)
            versions.commit_version(store, f"ingest {config.file}", config_sha256=sha)
        else:
            settle(store)
    return record_summary(IngestSummary(
        store=store, rows=plan.n_samples, tasks_total=len(plan.tasks), tasks_run=len(pending),
        tasks_skipped=len(plan.tasks) - len(pending), workers=n_workers,
        raw_bytes=plan.n_samples * rb, stored_bytes=layout.stored_bytes(store),
        wall_seconds=time.perf_counter() - t0, coordinator_peak_rss=peak_rss(),
        worker_peak_rss=worker_peak, already_complete=state == "done" and not pending))


def plan_ingest(config: Config, source: Source, workers: int) -> tuple[Plan, str]:
    """Count the source's rows and plan chunk-aligned tasks: (plan, the config's content hash,
    which covers the chunking)."""
    if config.source.kind == "python" and config.source.options.count is None:
        counts = _counting_pass(config, python_source(source), workers)
    else:
        counts = source.counts()
    if sum(counts) == 0:
        raise SourceError(f"source {config.source.kind!r} in {config.file!r} holds no rows "
                          f"({len(counts)} items, all empty); nothing to ingest")
    feature_row = config.schema.n_features * np.dtype(config.schema.feature_dtype).itemsize
    chunk_rows = config.ingest.chunk_rows or choose_chunk_rows(
        feature_row, config.ingest.target_chunk_mib * 2**20)
    task_chunks = config.ingest.task_chunks or choose_task_chunks(
        sum(counts), chunk_rows, chunk_rows * feature_row)
    n, has_group = sum(counts), source.has_group
    check_plan(repr(config.file), PlanSize(
        n, row_bytes(config, has_group), chunk_rows * task_chunks,
        -(-n // (chunk_rows * task_chunks)), workers, config.schema.n_features,
        config.stats.online and config.stats.correlation), local_dir(config.store))
    plan = plan_writes(counts, chunk_rows, task_chunks)
    return plan, config.content_sha256(chunk_rows, task_chunks)


def local_dir(store: str) -> str | None:
    return store if storage.is_local(store) else None


def task_shard_rows(plan: Plan) -> int:
    """One shard per write task (a task is the one writer of its shard: proven here)."""
    shard_rows = shard_rows_of(plan)
    check_shards(plan, shard_rows)
    return shard_rows


def open_or_create(config: Config, plan: Plan, sha: str, has_group: bool, overwrite: bool
                   ) -> str:
    """Under the store's lock: create the store at its final shape, or check that a resumed
    one was planned the same way. Returns "create", "resume" or "done"."""
    store = config.store
    state = _check_existing(store, sha, config, overwrite)  # again, now that we hold the lock
    jdir = journal.journal_dir(store)
    if state == "create":
        _clear(store)
        layout.create_store(store, schema=config.schema, compression=config.compression,
                            n_samples=plan.n_samples, chunk_rows=plan.chunk_rows,
                            has_group=has_group, config_sha256=sha,
                            shard_rows=task_shard_rows(plan))
        journal.write_json(jdir / "config.json", config.to_dict())
        journal.write_json(jdir / journal.PLAN, plan.to_dict())
    elif journal.read_json(jdir / journal.PLAN) != plan.to_dict():
        raise StoreExistsError(
            f"the source's items changed since store {store!r} was started (row counts or "
            "item list differ from _chunkstore/plan.json); rerun with --overwrite")
    else:
        layout.remove_partials(store)  # temp files of writers killed mid-chunk
    return state


def record_summary(summary: IngestSummary) -> IngestSummary:
    """Save the summary as ``_chunkstore/summary.json``, unless the run did no work: the
    summary of the run that built the store is kept then."""
    if not summary.already_complete:
        journal.write_json(journal.journal_dir(summary.store) / "summary.json",
                           summary.to_dict())
    return summary


def source_for_workers(source: Source) -> Source | None:
    """The source object to ship to workers: python sources carry the user's items/callables."""
    return source if isinstance(source, PythonSource) else None


def run_tasks(store: str, config: Config, source: Source, plan: Plan, pending: list[Any],
              workers: int, progress: bool, row_bytes: int) -> int:
    """Run pending tasks; return the largest worker peak RSS seen. Stops at the first failure."""
    if not pending:
        return 0
    config_json = json.dumps({"config": config.to_dict(), "file": config.file})
    done_rows = plan.n_samples - sum(t.rows for t in pending)
    bar = tqdm(total=plan.n_samples, initial=done_rows, unit="rows", unit_scale=True,
               desc="ingest", disable=not progress, file=sys.stderr, dynamic_ncols=True)
    t0, new_rows, worker_peak = time.perf_counter(), 0, 0
    try:
        with make_executor(min(workers, len(pending)), config.ingest.scheduler,
                           (config.ingest.blosc_threads, source_for_workers(source)), store=store,
                           storage_options=config.storage_options) as ex:
            futures: dict[Future[Any], Any] = {
                ex.submit(run_task, TaskSpec(store, config_json, source.has_group, t)): t
                for t in pending}
            for fut in as_completed(futures):
                task = futures[fut]
                try:
                    result = fut.result()
                except BaseException as e:
                    for f in futures:
                        f.cancel()
                    raise _task_failure(e, task, store) from e
                worker_peak = max(worker_peak, result.peak_rss)
                new_rows += result.rows
                bar.update(result.rows)
                secs = time.perf_counter() - t0
                bar.set_postfix_str(f"{new_rows * row_bytes / 2**20 / secs:,.0f} MB/s",
                                    refresh=False)
    finally:
        bar.close()
    return worker_peak


def _task_failure(e: BaseException, task: Any, store: str) -> BaseException:
    kept = len(journal.completed_tasks(store))
    tail = (f"\n[{kept} completed tasks are kept in the journal; fix the problem and rerun the "
            "same command to resume]")
    if isinstance(e, ChunkstoreError):
        return type(e)(f"{e}{tail}")
    if isinstance(e, BrokenProcessPool):
        return IngestError("a worker process died (killed, or out of memory) while running "
                           f"task {task.task_id} (rows [{task.start}, {task.stop})){tail}")
    return IngestError(f"task {task.task_id} (rows [{task.start}, {task.stop})) failed: "
                       f"{type(e).__name__}: {e}{tail}")


def is_streaming(config: Config) -> bool:
    return (config.source.kind == "python"
            and config.source.options.resolved_placement == "streaming")


def _counting_pass(config: Config, source: PythonSource, workers: int) -> list[int]:
    """Row counts by running ``process`` on every item (opt-in: it doubles the work)."""
    n = len(source.items)
    try:
        with make_executor(workers, config.ingest.scheduler,
                           (config.ingest.blosc_threads, source), store=config.store,
                           storage_options=config.storage_options) as ex:
            return list(ex.map(count_item, range(n), chunksize=max(1, n // (8 * workers))))
    except ChunkstoreError:
        raise
    except BrokenProcessPool as e:
        raise IngestError("a worker process died (killed, or out of memory) during the "
                          "counting pass (source.counting_pass), before anything was written; "
                          "lower ingest.workers or give the source a count function") from e
    except Exception as e:
        raise SourceError(f"the counting pass (source.counting_pass) failed in process(): "
                          f"{type(e).__name__}: {e}; fix process() and rerun") from e


def _ingest_streaming(config: Config, source: PythonSource, workers: int, overwrite: bool,
                      progress: bool, t0: float) -> IngestSummary:
    """The streaming path: create or resume the store, run the loops, finalize, summarize."""
    store = config.store
    chunk_rows = streaming_chunk_rows(config)
    check_plan(repr(config.file), PlanSize(
        0, row_bytes(config, source.has_group, True), chunk_rows, 0, workers,
        config.schema.n_features, config.stats.online and config.stats.correlation), None)
    sha = config.content_sha256(chunk_rows, 0)
    storage.store_path(store).parent.mkdir()
    _check_existing(store, sha, config, overwrite)  # before creating anything
    with journal.StoreLock(store):
        state = open_or_create_streaming(config, source, chunk_rows, sha, overwrite)
        if state == "done":
            n = int(layout.read_attrs(store)["n_samples"])
            result = StreamingResult(n, 0, len(source.items), 0, 0)
            settle(store)
        else:
            result = run_streaming(config, source, store, workers=workers,
                                   chunk_rows=chunk_rows, progress=progress,
                                   scheduler=config.ingest.scheduler)
            plan = streaming_plan(result.rows, chunk_rows)
            journal.write_json(journal.journal_dir(store) / journal.PLAN, plan.to_dict())
            layout.update_attrs(store, n_samples=result.rows)
            finalize(store, plan, config)
            versions.commit_version(store, f"ingest {config.file}", config_sha256=sha)
    n = result.rows
    return record_summary(IngestSummary(
        store=store, rows=n, tasks_total=len(source.items), tasks_run=result.items_run,
        tasks_skipped=result.items_skipped, workers=workers,
        raw_bytes=n * row_bytes(config, source.has_group, has_source=True),
        stored_bytes=layout.stored_bytes(store), wall_seconds=time.perf_counter() - t0,
        coordinator_peak_rss=peak_rss(), worker_peak_rss=result.worker_peak_rss,
        leftover_rows=result.leftover_rows, already_complete=state == "done"))


def open_or_create_streaming(config: Config, source: PythonSource, chunk_rows: int, sha: str,
                             overwrite: bool) -> str:
    """Under the store's lock: create the store at ``CAPACITY`` rows, or check that a resumed
    one has the same item list. Returns "create", "resume" or "done"."""
    store = config.store
    n_items = len(source.items)
    items_sha = hashlib.sha256("\n".join(map(repr, source.items)).encode()).hexdigest()
    state = _check_existing(store, sha, config, overwrite)
    if state != "create" and layout.read_attrs(store).get("items_sha256") != items_sha:
        raise StoreExistsError(
            f"the item list changed since store {store!r} was started ({n_items} items "
            "now); rerun with --overwrite to rebuild it")
    if state == "create":
        _clear(store)
        layout.create_store(store, schema=config.schema, compression=config.compression,
                            n_samples=CAPACITY, chunk_rows=chunk_rows,
                            has_group=source.has_group, config_sha256=sha, has_source=True,
                            extra_attrs={"placement": "streaming", "n_items": n_items,
                                         "items_sha256": items_sha, "n_samples": 0,
                                         **({"source_provenance": "process"}
                                            if source.has_source else {})})
        journal.write_json(journal.journal_dir(store) / "config.json", config.to_dict())
    return state
