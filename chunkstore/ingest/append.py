"""``chunkstore append CONFIG``: rows of a new source added after row N of a complete store.

The coordinator checks the config against the store (same features, heads, dtypes, chunking;
the store complete and not locked), plans chunk-aligned tasks from the chunk holding row N
(:func:`~chunkstore.ingest.append_task.plan_append`), resizes the sample arrays, and runs the
tasks on the ingest executor (process pool or cluster). Each task commits a record in
``_chunkstore/appends/tasks/``; a killed append rerun with the same command skips them.
Then, in an order that a rerun repeats safely: the new rows' partial statistics are merged into
every stored scope, every stored split is extended, and only then ``n_samples`` in the root
attrs changes (readers see the old N until this commit) and a version is recorded.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import Executor, ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from typing import Any

import numpy as np
import zarr

from chunkstore.config import Config
from chunkstore.core.moments import Partial, merge_partials
from chunkstore.core.plan import Plan, choose_task_chunks
from chunkstore.errors import AppendError, IngestError
from chunkstore.ingest import append_stats, append_task
from chunkstore.ingest import append_streaming as staged
from chunkstore.ingest.append_check import AppendSummary, check_store, resolve, source_sha256
from chunkstore.ingest.append_splits import extend_splits
from chunkstore.ingest.coordinator import (  # _counting_pass: the ingest's, see the hooks note
    _counting_pass,
    is_streaming,
    make_executor,
    resolve_workers,
    source_for_workers,
)
from chunkstore.ingest.streaming import python_source
from chunkstore.ingest.task import zarrs_while
from chunkstore.sources import Source, open_source
from chunkstore.store import journal, layout, versions
from chunkstore.store import urls as storage
from chunkstore.store.urls import open_group
from chunkstore.store.view import seal_attrs

THREADS_MAX_BYTES = 192 * 2**20  # new rows' features up to which tasks run on threads
POOLS = ("auto", "threads", "processes")
CURRENT = "current.json"
DONE = "done.json"
MERGED = "merged.npz"


def _shard_rows(group: zarr.Group) -> int | None:
    arrays = [group[name] for name in layout.stored_sample_arrays(group)]
    rows = [int(a.shards[0]) for a in arrays if isinstance(a, zarr.Array) and a.shards]
    return max(rows) if rows else None


def source_counts(config: Config, source: Source, workers: int) -> list[int]:
    """Row counts of the new items: the source's own, or a counting pass (a python source
    with ``counting_pass: true``, as ingest runs it: ``process()`` once per item)."""
    if config.source.kind == "python" and config.source.options.count is None:
        return _counting_pass(config, python_source(source), workers)
    return source.counts()


def unfinished(store: str, sha: str) -> dict[str, Any] | None:
    """The state of this source's unfinished append, if any; AppendError if another source's
    append is unfinished or this source was appended already."""
    adir = journal.appends_dir(store)
    if (adir / CURRENT).exists():
        state: dict[str, Any] = journal.read_json(adir / CURRENT)
        if state["source_sha256"] != sha:
            raise AppendError(f"store {store!r} has an unfinished append of another source "
                              f"(started {state['started']}); rerun that append to finish it")
        return state
    done = journal.read_json(adir / DONE) if (adir / DONE).exists() else []
    if any(d["source_sha256"] == sha for d in done):
        raise AppendError(f"this source (the same items and row counts) was already appended "
                          f"to store {store!r}; nothing was changed")
    return None


def start_or_resume(config: Config, source: Source, attrs: dict[str, Any], workers: int
                    ) -> dict[str, Any]:
    """Under the lock: the append state (``appends/current.json``), created on a first run
    (plan, old stats partials; arrays resized) or checked on a rerun. A streaming producer's
    rows are staged first (:mod:`chunkstore.ingest.append_streaming`)."""
    store = config.store
    if is_streaming(config):
        sha = staged.streaming_sha256(config, source)
        if (state := unfinished(store, sha)) is not None:
            return state
        counts = [staged.stage(config, workers)]
        extra = staged.staged_extra(attrs, staged.staged_items(store))
    else:
        counts = source_counts(config, source, workers)
        sha = source_sha256(config, counts)
        if (state := unfinished(store, sha)) is not None:
            return state
        extra = staged.source_extra(attrs, counts)
    return _start(config, attrs, counts, sha, extra)


def _start(config: Config, attrs: dict[str, Any], counts: list[int], sha: str,
           extra: dict[str, Any]) -> dict[str, Any]:
    store = config.store
    adir = journal.appends_dir(store)
    if sum(counts) == 0:
        if extra.get("staged"):
            staged.drop_staging(store)
        raise AppendError(f"source {config.source.kind!r} in {config.file!r} holds no rows; "
                          "nothing to append")
    n_before = int(attrs["n_samples"])
    chunk_rows = int(attrs["chunk_rows"])
    group = open_group(store, mode="r+")
    feature_row = config.schema.n_features * np.dtype(config.schema.feature_dtype).itemsize
    task_chunks = config.ingest.task_chunks or choose_task_chunks(
        sum(counts), chunk_rows, chunk_rows * feature_row)
    base, plan = append_task.plan_append(n_before, counts, chunk_rows, task_chunks,
                                         _shard_rows(group))
    adir.mkdir()
    (adir / journal.TASKS).mkdir()
    append_stats.save_old_partials(store, group, attrs)
    state = {"source_sha256": sha, "n_before": n_before, "n_after": plan.n_samples,
             "base": base, "plan": plan.to_dict(), "started": layout.now_iso(),
             "config": config.to_dict(), **extra}
    for name in layout.stored_sample_arrays(group):  # before any write; chunks are kept
        arr = group[name]
        arr.resize((plan.n_samples, *arr.shape[1:]))
    journal.write_json(adir / CURRENT, state)
    return state


def check_pool(pool: str) -> None:
    """AppendError unless ``pool`` names a place the append's tasks can run (:data:`POOLS`)."""
    if pool not in POOLS:
        raise AppendError(f"pool must be one of {list(POOLS)}, found {pool!r}")


def in_process(config: Config, rows: int, pool: str = "auto", staged_rows: bool = False
               ) -> bool:
    """Whether the append's tasks run on threads of this process rather than a process pool.

    ``pool="auto"``: threads when no scheduler is given, the source is file based (a python
    source's callables may not be thread-safe; a streaming producer's staged rows are read
    from the staging store) and the new rows hold at most
    ``THREADS_MAX_BYTES`` of features: starting worker processes (spawn, imports, config
    validation in each) costs about a second on an idle 2-core machine and several on a busy
    one, more than a small append's whole work, which is NumPy, Blosc and file I/O that
    release the GIL. ``"threads"`` / ``"processes"`` force one (byte-identical results).
    """
    check_pool(pool)
    if config.ingest.scheduler or pool == "processes":
        return False
    row = config.schema.n_features * np.dtype(config.schema.feature_dtype).itemsize
    return pool == "threads" or ((config.source.kind != "python" or staged_rows)
                                 and rows * row <= THREADS_MAX_BYTES)


@contextmanager
def _executor(config: Config, source: Source | None, workers: int, threads: bool
              ) -> Iterator[Executor]:
    if threads:  # no initializer: Blosc threads and the source stay as the caller set them;
        # the zarrs pipeline, as in worker processes, only while the tasks run (~30% faster)
        with zarrs_while(config.store), \
                ThreadPoolExecutor(workers, thread_name_prefix="chunkstore-append") as pool:
            yield pool
        return
    shipped = source_for_workers(source) if source is not None else None
    with make_executor(workers, config.ingest.scheduler, (config.ingest.blosc_threads, shipped),
                       store=config.store, storage_options=config.storage_options) as pool:
        yield pool


def run_append_tasks(config: Config, source: Source, state: dict[str, Any], workers: int,
                     pool: str = "auto") -> int:
    """Run the tasks without a record; returns how many ran."""
    store = config.store
    plan = Plan.from_dict(state["plan"])
    done = append_task.completed(store)
    pending = [t for t in plan.tasks if t.task_id not in done]
    if not pending:
        return 0
    config_json = json.dumps({"config": config.to_dict(), "file": config.file})
    staging = staged.staging_path(store) if state.get("staged") else None
    if staging is not None and not storage.store_path(staging).exists():
        raise AppendError(f"store {store!r}: the staged rows of this streaming append "
                          f"({staging!r}) are gone before its tasks were done; delete "
                          f"{str(journal.appends_dir(store) / CURRENT)!r} and rerun")
    threads = in_process(config, state["n_after"] - state["n_before"], pool,
                         staging is not None)
    has_source = "item_offset" in state
    with _executor(config, None if staging else source, min(workers, len(pending)),
                   threads) as ex:
        futures = {ex.submit(append_task.run_append_task, append_task.AppendSpec(
            store, config_json, source.has_group, t, state["base"], state["n_before"],
            staging, has_source, int(state.get("item_offset", 0)),
            source.has_source)): t for t in pending}
        for fut in as_completed(futures):
            t = futures[fut]
            try:
                fut.result()
            except BaseException as e:
                for f in futures:
                    f.cancel()
                raise IngestError(
                    f"append task {t.task_id} (rows [{t.start}, {t.stop})) failed: "
                    f"{type(e).__name__}: {e}\n[completed tasks are kept; rerun the same "
                    "append command to resume]") from e
    return len(pending)


def new_rows_partial(config: Config, state: dict[str, Any]) -> Partial:
    """The merge of every append record's partial (task order), saved once."""
    store = config.store
    path = journal.appends_dir(store) / MERGED
    if path.exists():
        return Partial.from_arrays(journal.read_npz(path)[1])
    heads = {h.name: h.classes for h in config.schema.heads}
    plan = Plan.from_dict(state["plan"])
    parts = (Partial.from_arrays(journal.read_npz(append_task.record_path(store, t.task_id))[1])
             for t in plan.tasks)
    total = merge_partials(parts, Partial.empty(config.schema.n_features, heads,
                                                config.stats.correlation))
    journal.write_npz(path, {"rows": total.rows}, total.to_arrays())
    return total


def new_scope_partials(config: Config, state: dict[str, Any], scopes: dict[str, tuple[str, int]],
                       workers: int, correlation: dict[str, bool]) -> dict[str, Partial]:
    """Per split scope, the partial of the new rows in it (blocks of whole chunks, in order)."""
    store, heads = config.store, {h.name: h.classes for h in config.schema.heads}
    n0, n1 = state["n_before"], state["n_after"]
    plan = Plan.from_dict(state["plan"])
    edges = sorted({n0, n1, *(t.start for t in plan.tasks if n0 < t.start < n1)})
    out: dict[str, Partial] = {s: Partial.empty(config.schema.n_features, heads, correlation[s])
                               for s in scopes}
    if not scopes:
        return out
    # threads unless on a cluster: the new rows only, NumPy and Blosc work that releases the
    # GIL, not worth starting a second process pool for
    with _executor(config, None, min(workers, len(edges) - 1),
                   not config.ingest.scheduler) as ex:
        by_corr = {c: {s: v for s, v in scopes.items() if correlation[s] == c}
                   for c in (True, False)}
        for corr, sub in by_corr.items():
            if not sub:
                continue
            futs = [ex.submit(append_stats.scope_block, store, a, b, sub, heads, corr)
                    for a, b in zip(edges[:-1], edges[1:], strict=True)]
            for fut in futs:  # in row order: the merge is then deterministic
                for s, arrays in fut.result().items():
                    out[s] = out[s].merge(Partial.from_arrays(arrays))
    return out


def merge_stats(config: Config, state: dict[str, Any], workers: int) -> list[str]:
    """Write every stored scope merged with the new rows; returns the scopes updated."""
    store = config.store
    group = open_group(store, mode="r+")
    old = append_stats.old_partials(store)
    updated = []
    if "all" in old:
        before = old["all"]
        if before is None or not config.stats.online:
            append_stats.mark_stale(group, "all", "stats/all could not be merged (pairwise "
                                    "correlation, or stats.online off): run chunkstore stats")
        else:
            total = append_stats.merge_aligned(before, new_rows_partial(config, state))
            append_stats.write_merged(group, "all", total, state["n_after"])
            updated.append("all")
    split_scopes = {s: (d["array"].removeprefix("splits/"), int(d["code"]))
                    for s, d in append_stats.split_scopes(group).items() if s in old}
    befores = {s: p for s in split_scopes if (p := old[s]) is not None}
    mergeable = {s: split_scopes[s] for s in befores}
    for s in set(split_scopes) - set(mergeable):
        append_stats.mark_stale(group, s, "could not be merged: run chunkstore stats --split")
    corr = {s: p.comoments is not None for s, p in befores.items()}
    news = new_scope_partials(config, state, mergeable, workers, corr)
    for s, p in news.items():
        append_stats.write_merged(group, s, append_stats.merge_aligned(befores[s], p),
                                  state["n_after"])
        updated.append(s)
    return updated


def commit(config: Config, state: dict[str, Any]) -> str:
    """The append's commit: ``n_samples`` changes, the attrs are sealed, a version is
    recorded, and the append's journal is cleared. Safe to repeat."""
    store = config.store
    adir = journal.appends_dir(store)
    if int(layout.read_attrs(store)["n_samples"]) != state["n_after"]:
        layout.update_attrs(store, n_samples=state["n_after"], modified=layout.now_iso(),
                            **state.get("attrs_after", {}))
        seal_attrs(store)
    done = journal.read_json(adir / DONE) if (adir / DONE).exists() else []
    if not any(d["source_sha256"] == state["source_sha256"] for d in done):
        # the version first: killed in between, a rerun records it again (never not at all)
        vid = versions.commit_version(store, f"append {config.file}",
                                      source_sha256=state["source_sha256"]).id
        # kept for `chunkstore repair`: which task of which source wrote the appended rows
        journal.write_json(adir / journal.append_record_name(len(done) + 1),
                           {**state, "version": vid, "file": config.file})
        done.append({k: state[k] for k in ("source_sha256", "n_before", "n_after", "started")})
        journal.write_json(adir / DONE, done)
    else:
        vid = versions.resolve(store).id
    for p in (adir / journal.TASKS).iterdir():
        p.unlink()
    for p in adir.iterdir():
        if p.name.startswith(append_stats.OLD_PARTIAL) or p.name == MERGED:
            p.unlink()
    (adir / CURRENT).unlink()
    return vid


def append_store(config: Config, *, workers: int | None = None, started: float | None = None,
                 pool: str = "auto") -> AppendSummary:
    """Append the rows of ``config``'s source to its (complete) store; see :func:`append`."""
    t0 = started if started is not None else time.perf_counter()
    storage.configure(config.store, config.storage_options)
    check_pool(pool)  # a bad pool name is refused before anything
    source = open_source(config.source, config.schema)
    attrs = check_store(config, source)  # before the lock: a bad config changes nothing
    n_workers = resolve_workers(workers or config.ingest.workers)
    with journal.StoreLock(config.store):
        attrs = check_store(config, source)
        state = start_or_resume(config, source, attrs, n_workers)
        plan = Plan.from_dict(state["plan"])
        ran = run_append_tasks(config, source, state, n_workers, pool)
        if state.get("staged"):  # every task is committed: the staged rows are not read again
            staged.save_pairs(config.store, state["source_sha256"])  # (for repair)
            staged.drop_staging(config.store)
        if int(attrs["n_samples"]) != state["n_after"]:
            layout.remove_partials(config.store)
            split_names = tuple(extend_splits(  # first: split scopes read the new codes
                open_group(config.store, mode="r+"), state["n_before"], state["n_after"],
                {h.name: h.classes for h in config.schema.heads}))
            scopes = merge_stats(config, state, n_workers)
        else:
            scopes, split_names = [], ()
        vid = commit(config, state)
    return AppendSummary(config.store, state["n_before"], state["n_after"] - state["n_before"],
                         len(plan.tasks), ran, n_workers, split_names, tuple(scopes), vid,
                         time.perf_counter() - t0)


def append(config: Config | str | os.PathLike[str], *, workers: int | None = None,
           scheduler: str | None = None, items: Any = None, process: Any = None,
           count: Any = None, pool: str = "auto") -> AppendSummary:
    """Append the rows of ``config``'s source after the last row of its complete store.

    Parameters
    ----------
    config : a parsed Config, a mapping, or a YAML path; ``store`` names the existing store,
        ``source`` the new rows; schema, chunking and compression must equal the store's.
    workers : worker processes (default ``ingest.workers``, else the CPU count).
    scheduler : a ``dask.distributed`` scheduler address to run the tasks on.
    items, process, count : a python source's items and functions, as for ingest.
    pool : where the write tasks run without a scheduler: ``"auto"`` (threads of this process
        for a file source whose new rows hold at most 192 MiB of features, else a process
        pool; see :func:`in_process`), ``"threads"`` or ``"processes"``. The store's bytes
        do not depend on it.

    Returns
    -------
    AppendSummary: rows before and added, tasks run, splits extended, scopes merged, version.

    Raises
    ------
    AppendError
        Incomplete store, schema/chunking difference (named), unfinished append of another
        source, or a source already appended; the store is unchanged.
    StoreLockedError
        Another ingest, append or split holds the store.

    Examples
    --------
    >>> chunkstore.append("week-49.yaml")  # doctest: +SKIP
    """
    t0 = time.perf_counter()
    return append_store(resolve(config, items, process, count, scheduler), workers=workers,
                        started=t0, pool=pool)
