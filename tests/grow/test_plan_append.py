"""The append planner (pure): tasks start at the chunk (shard) holding row N, cover the new rows
in whole chunks (one task per shard when sharded), and piece 0 is the store's own tail."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chunkstore.core.plan import Piece, check_plan
from chunkstore.ingest.append_task import plan_append


@settings(max_examples=200, deadline=None)
@given(n_before=st.integers(0, 200), counts=st.lists(st.integers(0, 40), min_size=1, max_size=8),
       chunk_rows=st.sampled_from([1, 4, 8]), task_chunks=st.integers(1, 3),
       shard_chunks=st.sampled_from([None, 2, 3]))
def test_plan_append_covers_new_rows_in_whole_chunks(n_before, counts, chunk_rows, task_chunks,
                                                     shard_chunks):
    shard_rows = chunk_rows * shard_chunks if shard_chunks else None
    base, plan = plan_append(n_before, counts, chunk_rows, task_chunks, shard_rows)
    unit = shard_rows or chunk_rows
    assert base % unit == 0 and base <= n_before < base + unit
    assert plan.n_samples == n_before + sum(counts)
    if plan.tasks:
        assert plan.tasks[0].start == base
    for t in plan.tasks:
        assert t.start % chunk_rows == 0
        assert t.stop % chunk_rows == 0 or t.stop == plan.n_samples
        if shard_rows:  # one writer per shard
            assert t.start % shard_rows == 0
            assert t.stop == min(t.start + shard_rows, plan.n_samples)
    pieces = [p for t in plan.tasks for p in t.pieces]
    if n_before > base:
        assert pieces[0] == Piece(0, 0, n_before - base)
    # relative to base, it is an ordinary plan of [tail, *counts]
    from chunkstore.core.plan import Plan, WriteTask

    rel = Plan(plan.n_samples - base, chunk_rows, tuple(
        WriteTask(t.task_id, t.start - base, t.stop - base, t.pieces) for t in plan.tasks))
    check_plan(rel, [n_before - base, *counts])


@pytest.mark.parametrize("n_before,expected", [(16, (16, [(16, 24), (24, 26)])),
                                               (17, (16, [(16, 24), (24, 27)]))])
def test_plan_append_examples(n_before, expected):
    base, plan = plan_append(n_before, [10], 8, 1)
    assert (base, [(t.start, t.stop) for t in plan.tasks]) == expected
