from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chunkstore.core.plan import (
    Piece,
    Plan,
    WriteTask,
    check_plan,
    check_shards,
    choose_chunk_rows,
    choose_task_chunks,
    plan_writes,
    shard_rows_of,
)
from chunkstore.errors import PlanError


@settings(max_examples=300, deadline=None)
@given(
    counts=st.lists(st.integers(0, 40), min_size=1, max_size=30).filter(lambda c: sum(c) > 0),
    chunk_rows=st.integers(1, 17),
    task_chunks=st.integers(1, 5),
)
def test_plan_covers_every_row_once_and_never_shares_a_chunk(counts, chunk_rows, task_chunks):
    plan = plan_writes(counts, chunk_rows, task_chunks)
    n = sum(counts)
    # rows: every global row exactly once, in order
    rows = [r for t in plan.tasks for r in range(t.start, t.stop)]
    assert rows == list(range(n))
    # chunks: one owner each
    owners = [c for t in plan.tasks for c in range(t.start // chunk_rows,
                                                   math.ceil(t.stop / chunk_rows))]
    assert sorted(owners) == list(range(math.ceil(n / chunk_rows)))
    # items: every (item, row) exactly once, in global order
    pairs = [(p.item, r) for t in plan.tasks for p in t.pieces
             for r in range(p.item_start, p.item_stop)]
    assert pairs == [(k, r) for k, c in enumerate(counts) for r in range(c)]
    # serialisation round trip
    assert Plan.from_dict(plan.to_dict()) == plan


def test_plan_example_edges():
    plan = plan_writes([3, 0, 2, 1], chunk_rows=2, task_chunks=1)
    assert [(t.start, t.stop) for t in plan.tasks] == [(0, 2), (2, 4), (4, 6)]
    assert plan.tasks[1].pieces == (Piece(0, 2, 3), Piece(2, 0, 1))
    assert plan.tasks[2].pieces == (Piece(2, 1, 2), Piece(3, 0, 1))


def test_check_plan_refuses_unaligned_and_shared_chunks():
    counts = [4]
    bad = Plan(4, 2, (WriteTask(0, 0, 3, (Piece(0, 0, 3),)), WriteTask(1, 3, 4, (Piece(0, 3, 4),))))
    with pytest.raises(PlanError, match="not aligned"):
        check_plan(bad, counts)
    gap = Plan(4, 2, (WriteTask(0, 0, 2, (Piece(0, 0, 2),)),))
    with pytest.raises(PlanError, match="covers 2 rows"):
        check_plan(gap, counts)
    reordered = Plan(4, 2, (WriteTask(0, 0, 2, (Piece(0, 2, 4),)),
                            WriteTask(1, 2, 4, (Piece(0, 0, 2),))))
    with pytest.raises(PlanError, match="expected item 0 from row 0"):
        check_plan(reordered, counts)


def test_chunk_and_task_sizing():
    assert choose_chunk_rows(893 * 4, 4 * 2**20) == 1024
    assert choose_chunk_rows(10**9, 1) == 1
    # at least 16 tasks when there are enough chunks, never depends on workers
    assert choose_task_chunks(547_000, 1024, 1024 * 893 * 4) == 9  # ~32 MiB
    assert choose_task_chunks(100, 1024, 4096) == 1


@settings(max_examples=200, deadline=None)
@given(
    counts=st.lists(st.integers(0, 40), min_size=1, max_size=30).filter(lambda c: sum(c) > 0),
    chunk_rows=st.integers(1, 17),
    task_chunks=st.integers(1, 5),
)
def test_shards_of_one_task_each_have_one_writer(counts, chunk_rows, task_chunks):
    plan = plan_writes(counts, chunk_rows, task_chunks)
    shard = shard_rows_of(plan)
    assert shard % chunk_rows == 0 and shard <= chunk_rows * task_chunks
    check_shards(plan, shard)
    owners = [s for t in plan.tasks for s in range(t.start // shard, -(-t.stop // shard))]
    assert owners == list(range(-(-plan.n_samples // shard)))  # one task per shard


def test_shards_across_task_edges_are_refused():
    plan = plan_writes([40], chunk_rows=4, task_chunks=2)
    with pytest.raises(PlanError, match="two writers"):
        check_shards(plan, 16)
    with pytest.raises(PlanError, match="multiple of chunk_rows"):
        check_shards(plan, 6)
