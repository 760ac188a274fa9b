"""The write side of an append: the pure planner and the task a worker runs.

An append of source items after row ``n_before`` is planned as an ingest of a virtual item list:
item 0 is the store's own tail ``[base, n_before)`` (the rows of the last partial chunk, or
shard), items ``1..`` are the new source's items. :func:`plan_append` cuts that list into
chunk-aligned tasks starting at ``base``, so the partial chunk is rewritten -- old rows first,
read back from the store unchanged -- by exactly one writer, and every later chunk is new.
The task reuses :func:`chunkstore.ingest.task.assemble` (the same checks and the same
``meta/row_hash``), so the chunk bytes equal those of one ingest of the old and new items.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from chunkstore.config import Config
from chunkstore.core.plan import Plan, WriteTask, plan_writes
from chunkstore.core.schema import Schema
from chunkstore.ingest.append_streaming import StagedSource, source_rows, stored_batch
from chunkstore.runtime.memory import peak_rss
from chunkstore.sources import Source
from chunkstore.sources.base import Batch
from chunkstore.store import journal, layout
from chunkstore.store.urls import StorePath, open_group
from chunkstore.store.writes import write_rows

from chunkstore.ingest.task import (  # isort: skip
    TaskResult, assemble, partial_stats, use_zarrs, worker_config_and_source)

def record_path(store: str, task_id: int) -> StorePath:
    return journal.appends_dir(store) / journal.TASKS / f"{task_id:06d}.npz"


def completed(store: str) -> set[int]:
    """Ids of append tasks whose completion record exists."""
    return {int(p.stem) for p in (journal.appends_dir(store) / journal.TASKS).iterdir()
            if p.name.endswith(".npz") and not p.name.startswith(".")}


def plan_append(n_before: int, counts: list[int], chunk_rows: int, task_chunks: int,
                shard_rows: int | None = None) -> tuple[int, Plan]:
    """Plan the rows of ``counts`` after row ``n_before``: ``(base, plan)``.

    ``base`` is the first row of the chunk (or shard, when the store is sharded) holding row
    ``n_before``; the plan's tasks cover ``[base, n_before + sum(counts))`` in whole chunks
    (whole shards: one task per shard), and piece item 0 is the store's tail ``[base,
    n_before)``, item ``k + 1`` the source's item ``k``.

    Examples
    --------
    >>> base, plan = plan_append(5, [4], chunk_rows=4, task_chunks=1)
    >>> base, [(t.start, t.stop) for t in plan.tasks]
    (4, [(4, 8), (8, 9)])
    """
    unit = shard_rows if shard_rows and shard_rows > chunk_rows else chunk_rows
    if unit != chunk_rows:
        task_chunks = unit // chunk_rows
    base = n_before // unit * unit
    rel = plan_writes([n_before - base, *counts], chunk_rows, task_chunks)
    tasks = tuple(WriteTask(t.task_id, t.start + base, t.stop + base, t.pieces)
                  for t in rel.tasks)
    return base, Plan(base + rel.n_samples, chunk_rows, tasks)


class StoreTail(Source):
    """Item 0: rows ``[base, n_before)`` read back from the store; item ``k + 1``: item ``k``
    of the new source. Only ever read by the one task that owns the tail's chunk."""

    def __init__(self, store: str, base: int, n_before: int, inner: Source, schema: Schema,
                 has_group: bool) -> None:
        super().__init__(None, schema)
        self.store, self.base, self.n_before, self.inner = store, base, n_before, inner
        self._has_group = has_group

    def counts(self) -> list[int]:
        return [self.n_before - self.base, *self.inner.counts()]

    @property
    def has_group(self) -> bool:
        return self._has_group

    def describe(self, item: int) -> str:
        if item == 0:
            return f"store {self.store!r} rows [{self.base}, {self.n_before})"
        return self.inner.describe(item - 1)

    def read(self, item: int, start: int, stop: int) -> Batch:
        if item > 0:
            return self.inner.read(item - 1, start, stop)
        return stored_batch(self.store, self.schema, slice(self.base + start, self.base + stop),
                            self._has_group)


@dataclass(frozen=True)
class AppendSpec:
    """One append task, small enough to send to a worker."""

    store: str
    config_json: str
    has_group: bool
    task: WriteTask
    base: int
    n_before: int
    staging: str | None = None  # a streaming append: the staging store is the source
    has_source: bool = False  # the store has meta/source: the task writes it too
    item_offset: int = 0  # new items' ids in meta/source start here
    own_source: bool = False  # staged meta/source pairs are the source's own (provenance)


def _config_and_source(spec: AppendSpec) -> tuple[Config, Source]:
    if spec.staging is None:
        return worker_config_and_source(spec.config_json)
    d = json.loads(spec.config_json)  # the producer is not run again: its rows are staged
    config = Config.from_dict(d["config"], file=d["file"])
    return config, StagedSource(spec.staging, config.schema, spec.has_group)


def run_append_task(spec: AppendSpec) -> TaskResult:
    """Assemble the task's rows (old tail rows first), write its whole chunks, then commit a
    record with the partial statistics of its *new* rows only (the old ones are already in
    ``stats/all``)."""
    t0 = time.perf_counter()
    config, inner = _config_and_source(spec)
    task = spec.task
    source = StoreTail(spec.store, spec.base, spec.n_before, inner, config.schema,
                       spec.has_group)
    buffers = assemble(task, config, source, spec.has_group)
    if spec.has_source:
        buffers[layout.SOURCE] = source_rows(spec.store, spec.staging, task, spec.item_offset,
                                             spec.own_source)
    first_new = max(0, spec.n_before - task.start)
    stats = partial_stats({k: v[first_new:] for k, v in buffers.items()}, config)
    use_zarrs(spec.store)
    group = open_group(spec.store, mode="r+")
    write_rows(group, buffers, task.start, task.stop)
    del buffers
    journal.write_npz(record_path(spec.store, task.task_id),
                      {"task_id": task.task_id, "start": task.start, "stop": task.stop},
                      stats)
    return TaskResult(task.task_id, task.rows, time.perf_counter() - t0, peak_rss())
