"""The loader on the elastic order (read/order.py): its epoch is the planned global order;
resume from any rank's state under a new world size, batch size or remainder policy gives
exactly the rest of that order; equal batches per rank; sequence windows too."""

from __future__ import annotations

import numpy as np
import pytest

import chunkstore
from chunkstore import ReadError
from chunkstore.report.shuffle import planned_batches
from chunkstore.testing import assert_batch_matches, read_all


@pytest.fixture(scope="module")
def store(small_store) -> str:
    return small_store(8)  # 333 rows, 42 chunks of 8


def valid_rows(batches) -> list[int]:
    return [int(i) for b in batches for i, v in
            zip(b["index"], b.get("valid", np.ones(len(b["index"]), bool)), strict=True) if v]


def run_lockstep(loaders, stop=None):
    """Iterate ranks in lockstep; return the batches in (step, rank) order and the state."""
    its = [iter(x) for x in loaders]
    out, k = [], 0
    while stop is None or k < stop:
        step = [next(it, None) for it in its]
        if step[0] is None:
            assert all(s is None for s in step)  # equal batches per rank
            break
        out += step
        k += 1
    states = [x.state_dict() for x in loaders]
    assert all(s == states[0] for s in states)  # any rank's state is the same
    return out, states[0]


def test_an_epoch_is_the_planned_global_order(store):
    ds = chunkstore.open(store)
    loader = ds.loader(batch_size=10, seed=2, window_chunks=3)
    loader.set_epoch(4)
    got = [b["index"] for b in loader]
    want = planned_batches(loader)
    assert len(got) == len(want) == len(loader)
    assert all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))


@pytest.mark.parametrize("old, new, remainder", [(4, 3, "pad"), (2, 5, "pad"), (3, 1, "even"),
                                                  (1, 6, "even"), (5, 2, "drop")])
def test_resume_under_a_new_world_size_gives_exactly_the_rest(store, old, new, remainder):
    ds, full = chunkstore.open(store), read_all(store)
    opts = dict(seed=7, window_chunks=4, remainder=remainder)
    whole = ds.loader(batch_size=6, seed=7, window_chunks=4, remainder="pad")
    whole.set_epoch(1)
    order = valid_rows(whole)
    assert sorted(order) == list(range(333))
    rng = np.random.default_rng(old * 10 + new)
    for stop in rng.integers(0, 333 // (6 * old) + 2, size=5).tolist():
        base = ds.loader(batch_size=6, **opts)
        base.set_epoch(1)
        before, state = run_lockstep([base.shard(r, old) for r in range(old)], stop)
        batch = int(rng.choice([6, 4, 9]))  # the batch size may change on resume
        resumed = [ds.loader(batch_size=batch, **opts).shard(r, new) for r in range(new)]
        for x in resumed:
            x.load_state_dict(state)
        after, end = run_lockstep(resumed)
        got = valid_rows(before) + valid_rows(after)
        assert got == order[:len(got)]  # none repeated, none skipped, the same order
        if remainder == "pad":
            assert len(got) == 333  # the uninterrupted epoch's multiset
        assert end["position"] == 333
        for b in (before + after)[:3]:
            assert_batch_matches({k: v for k, v in b.items() if k != "valid"}, full)


@pytest.mark.parametrize("world", range(1, 9))
@pytest.mark.parametrize("remainder", ["even", "drop", "pad"])
def test_equal_batches_per_rank_for_uneven_n(store, world, remainder):
    ds = chunkstore.open(store)
    loader = ds.loader(batch_size=16, split=None, seed=1, remainder=remainder)
    counts = [len(list(loader.shard(r, world))) for r in range(world)]
    assert len(set(counts)) == 1 and counts[0] == len(loader.shard(0, world))


def test_resume_refuses_another_order_and_positions_beyond_the_epoch(store):
    ds = chunkstore.open(store)
    state = ds.loader(batch_size=8, seed=1).state_dict()
    with pytest.raises(ReadError, match="seed"):
        ds.loader(batch_size=8, seed=2).load_state_dict(state)
    with pytest.raises(ReadError, match="beyond"):
        ds.loader(batch_size=8, seed=1).load_state_dict({**state, "position": 334})


def test_sequence_windows_resume_elastically(store):
    w = chunkstore.open(store).windows(lookback=3, horizon=1)
    whole = [int(i) for b in w.loader(batch_size=8, seed=3, remainder="pad") for i, v in
             zip(b["index"], b["valid"], strict=True) if v]
    base = w.loader(batch_size=8, seed=3, remainder="pad")
    before, state = run_lockstep([base.shard(r, 3) for r in range(3)], 2)
    resumed = [w.loader(batch_size=8, seed=3, remainder="pad").shard(r, 2) for r in range(2)]
    for x in resumed:
        x.load_state_dict(state)
    after, _ = run_lockstep(resumed)
    assert valid_rows(before) + valid_rows(after) == whole
