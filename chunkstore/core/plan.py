"""Pure planner: item row counts -> global offsets -> chunk-aligned write tasks.

Every task covers whole chunks (``start`` and ``stop`` are multiples of ``chunk_rows``, except
the final ``stop == n_samples``), so every chunk of every array has exactly one writer.
:func:`check_plan` proves that, and that items land in order at fixed rows, before any write.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from chunkstore.errors import PlanError

TARGET_TASK_BYTES = 32 * 2**20
MIN_TASKS = 16


@dataclass(frozen=True)
class Piece:
    """Rows ``[item_start, item_stop)`` of one source item."""

    item: int
    item_start: int
    item_stop: int

    @property
    def rows(self) -> int:
        return self.item_stop - self.item_start


@dataclass(frozen=True)
class WriteTask:
    """Global rows ``[start, stop)``, assembled from ``pieces`` laid end to end."""

    task_id: int
    start: int
    stop: int
    pieces: tuple[Piece, ...]

    @property
    def rows(self) -> int:
        return self.stop - self.start

    def to_dict(self) -> dict[str, Any]:
        return {"task_id": self.task_id, "start": self.start, "stop": self.stop,
                "pieces": [[p.item, p.item_start, p.item_stop] for p in self.pieces]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WriteTask:
        return cls(d["task_id"], d["start"], d["stop"],
                   tuple(Piece(*p) for p in d["pieces"]))


@dataclass(frozen=True)
class Plan:
    n_samples: int
    chunk_rows: int
    tasks: tuple[WriteTask, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"n_samples": self.n_samples, "chunk_rows": self.chunk_rows,
                "tasks": [t.to_dict() for t in self.tasks]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Plan:
        return cls(d["n_samples"], d["chunk_rows"],
                   tuple(WriteTask.from_dict(t) for t in d["tasks"]))


def choose_chunk_rows(row_bytes: int, target_bytes: float) -> int:
    """Largest power of two whose chunk of features stays within ``target_bytes``."""
    rows = max(1, int(target_bytes // max(1, row_bytes)))
    return 1 << (rows.bit_length() - 1)


def choose_task_chunks(n_samples: int, chunk_rows: int, chunk_bytes: int) -> int:
    """Chunks per task: ~32 MiB of features, but at least ``MIN_TASKS`` tasks when possible.

    Depends on the data's shape only, never on the worker count, so a rerun with other workers
    resumes the same plan.
    """
    n_chunks = max(1, math.ceil(n_samples / chunk_rows))
    by_bytes = max(1, TARGET_TASK_BYTES // max(1, chunk_bytes))
    return max(1, min(by_bytes, math.ceil(n_chunks / MIN_TASKS)))


def offsets_of(counts: Sequence[int]) -> np.ndarray:
    """Global first row of every item plus the total: item k is ``offsets[k]:offsets[k+1]``."""
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(np.asarray(counts, dtype=np.int64), out=offsets[1:])
    return offsets


def plan_writes(counts: Sequence[int], chunk_rows: int, task_chunks: int) -> Plan:
    """Cut the rows of all items into chunk-aligned tasks of ``task_chunks`` chunks.

    Parameters
    ----------
    counts : rows of every source item, in item order (zeros allowed).
    chunk_rows : rows per chunk of every sample array.
    task_chunks : chunks per task.

    Returns
    -------
    Plan whose tasks cover ``[0, sum(counts))`` in order.

    Examples
    --------
    >>> [t.pieces for t in plan_writes([3, 2], chunk_rows=2, task_chunks=1).tasks][1]
    (Piece(item=0, item_start=2, item_stop=3), Piece(item=1, item_start=0, item_stop=1))
    """
    if chunk_rows < 1 or task_chunks < 1:
        raise PlanError(f"chunk_rows and task_chunks must be >= 1, found {chunk_rows}, "
                        f"{task_chunks}")
    if any(c < 0 for c in counts):
        raise PlanError("item row counts must be >= 0")
    offsets = offsets_of(counts)
    n = int(offsets[-1])
    step = chunk_rows * task_chunks
    tasks = []
    for task_id, start in enumerate(range(0, n, step)):
        stop = min(start + step, n)
        first = int(np.searchsorted(offsets, start, side="right")) - 1
        last = int(np.searchsorted(offsets, stop, side="left"))
        pieces = []
        for k in range(first, last):
            a, b = max(start, int(offsets[k])), min(stop, int(offsets[k + 1]))
            if b > a:
                pieces.append(Piece(k, a - int(offsets[k]), b - int(offsets[k])))
        tasks.append(WriteTask(task_id, start, stop, tuple(pieces)))
    plan = Plan(n, chunk_rows, tuple(tasks))
    check_plan(plan, counts)
    return plan


def check_plan(plan: Plan, counts: Sequence[int]) -> None:
    """Prove the plan's invariants; raise PlanError naming the first broken one.

    - tasks cover ``[0, n_samples)`` once, in order;
    - every task starts on a chunk boundary and ends on one (or at ``n_samples``), so no chunk
      has two writers;
    - the pieces, read in task order, are every item's rows exactly once, in item order
      (deterministic placement).
    """
    r = plan.chunk_rows
    expected = 0
    owner: dict[int, int] = {}
    for t in plan.tasks:
        if t.start != expected or t.stop <= t.start:
            raise PlanError(f"task {t.task_id} covers rows [{t.start}, {t.stop}); expected it "
                            f"to start at row {expected}")
        if t.start % r or (t.stop % r and t.stop != plan.n_samples):
            raise PlanError(f"task {t.task_id} rows [{t.start}, {t.stop}) are not aligned to "
                            f"chunk_rows={r}; its edge chunks would have two writers")
        for c in range(t.start // r, -(-t.stop // r)):
            if c in owner:
                raise PlanError(f"chunk {c} is written by tasks {owner[c]} and {t.task_id}")
            owner[c] = t.task_id
        if sum(p.rows for p in t.pieces) != t.rows:
            raise PlanError(f"task {t.task_id} pieces hold {sum(p.rows for p in t.pieces)} rows; "
                            f"the task has {t.rows}")
        expected = t.stop
    if expected != plan.n_samples or plan.n_samples != sum(counts):
        raise PlanError(f"plan covers {expected} rows; the items hold {sum(counts)}")
    cursor = [0, 0]  # (item, next row) expected next
    for t in plan.tasks:
        for p in t.pieces:
            while cursor[0] < len(counts) and cursor[1] == counts[cursor[0]]:
                cursor = [cursor[0] + 1, 0]
            if (p.item, p.item_start) != tuple(cursor) or p.item_stop > counts[p.item]:
                raise PlanError(f"task {t.task_id} reads item {p.item} rows "
                                f"[{p.item_start}, {p.item_stop}); expected item {cursor[0]} "
                                f"from row {cursor[1]}")
            cursor[1] = p.item_stop


def whole_chunk_rows(chunk_rows: int, row_bytes: int, target_bytes: float) -> int:
    """Rows per read block: a whole number (at least one) of chunks of about ``target_bytes``.

    Blocks on chunk boundaries decode every chunk once; statistics, splits and export all size
    their blocks here.
    """
    return chunk_rows * max(1, int(target_bytes // max(1, chunk_rows * row_bytes)))


def shard_rows_of(plan: Plan) -> int:
    """Rows per shard for a store written by ``plan``: the rows of one full task, so each shard
    file has exactly one writer (the task that owns its chunks). A multiple of chunk_rows."""
    first = plan.tasks[0].rows if plan.tasks else plan.chunk_rows
    return plan.chunk_rows * max(1, -(-first // plan.chunk_rows))


def check_shards(plan: Plan, shard_rows: int) -> None:
    """Prove that every shard of ``shard_rows`` rows is written by exactly one task: every task
    starts on a shard boundary and ends on the next one (or at ``n_samples``)."""
    if shard_rows % plan.chunk_rows:
        raise PlanError(f"shard_rows={shard_rows} is not a multiple of chunk_rows="
                        f"{plan.chunk_rows}")
    for t in plan.tasks:
        if t.start % shard_rows or t.stop != min(t.start + shard_rows, plan.n_samples):
            raise PlanError(f"task {t.task_id} rows [{t.start}, {t.stop}) do not cover exactly "
                            f"one shard of {shard_rows} rows; that shard would have two writers")
