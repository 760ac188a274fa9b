"""Elastic global order: world-size independent, lockstep resume under any new world size,
batch size or worker count, equal batches per rank. Pure plan tests, then the real loader's
hooks driven by the elastic runner on a real store."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import chunkstore
from chunkstore.read.elastic import OrderKey, Shard, elastic_batches, epoch_windows
from chunkstore.read.order import (
    global_items,
    position_after,
    rank_batches,
    steps,
    tasks,
    window_chunk_sets,
)
from chunkstore.testing import assert_batch_matches, read_all


def positions(total: int, start: int, batch: int, world: int, remainder: str,
              stop: int | None = None) -> tuple[list[list[tuple[int, bool]]], int]:
    """Lockstep run: per step the union over ranks (rank order) of (position, valid); stop
    after ``stop`` steps. Returns the steps and the global position reached."""
    per_rank = [list(rank_batches(total, start=start, batch_size=batch, rank=r,
                                  world_size=world, remainder=remainder))
                for r in range(world)]
    n = len(per_rank[0])
    assert all(len(b) == n for b in per_rank)  # equal ranks
    done = n if stop is None else min(stop, n)
    out = []
    for s in range(done):
        out.append([(p, v) for r in range(world) for a, b, v in per_rank[r][s].ranges
                    for p in range(a, b)])
    return out, position_after(total, start=start, batch_size=batch, world_size=world,
                               remainder=remainder, done=done)


def flat(steps_: list[list[tuple[int, bool]]]) -> list[int]:
    return [p for s in steps_ for p, v in s if v]


@pytest.mark.parametrize("total", [0, 1, 7, 100, 333, 1001])
@pytest.mark.parametrize("world", range(1, 9))
@pytest.mark.parametrize("remainder", ["even", "drop", "pad"])
def test_equal_batches_per_rank_and_a_prefix_of_the_global_order(total, world, remainder):
    batch = 16
    got, end = positions(total, 0, batch, world, remainder)
    order = flat(got)
    assert order == list(range(len(order)))  # the global order, in order, never twice
    assert end == total
    sizes = {len(s) // world for s in got}
    if remainder == "pad":
        assert order == list(range(total))  # nothing dropped, padding flagged
        assert sizes <= {batch}
    elif remainder == "drop":
        assert total - len(order) < batch * world
        assert sizes <= {batch}
    else:
        assert total - len(order) < world  # even: fewer than world items dropped
        assert len(sizes - {batch}) <= 1  # only the last step is smaller
    assert steps(total, start=0, batch_size=batch, world_size=world,
                 remainder=remainder) == len(got)


@pytest.mark.parametrize("old, new", [(4, 3), (2, 5), (1, 8), (8, 1), (3, 3), (5, 2)])
@pytest.mark.parametrize("remainder", ["pad", "even"])
def test_resume_under_a_new_world_size_continues_the_global_order(old, new, remainder):
    rng = np.random.default_rng(old * 10 + new)
    total = 1003
    for _ in range(20):
        stop = int(rng.integers(0, 1003 // (16 * old) + 2))
        before, pos = positions(total, 0, 16, old, remainder, stop=stop)
        new_batch = int(rng.choice([16, 8, 32]))  # the batch size may change too
        after, end = positions(total, pos, new_batch, new, remainder)
        order = flat(before) + flat(after)
        assert order == list(range(len(order)))  # none repeated, none skipped, same order
        if remainder == "pad":
            assert order == list(range(total))
        assert end == total


@settings(max_examples=200, deadline=None)
@given(total=st.integers(0, 400), batch=st.integers(1, 17), world=st.integers(1, 8),
       stop=st.integers(0, 60), new_batch=st.integers(1, 17), new_world=st.integers(1, 8),
       remainder=st.sampled_from(["even", "drop", "pad"]))
def test_any_stop_and_any_new_world_continue_the_global_order(total, batch, world, stop,
                                                             new_batch, new_world, remainder):
    before, pos = positions(total, 0, batch, world, remainder, stop=stop)
    after, end = positions(total, pos, new_batch, new_world, remainder)
    order = flat(before) + flat(after)
    assert order == list(range(len(order)))
    assert end == total
    if remainder == "pad":
        assert len(order) == total
    for step in before + after:  # padding only ever repeats real items
        assert all(0 <= p < total for p, _ in step)


@pytest.mark.parametrize("workers", [1, 2, 3, 5])
def test_workers_split_a_ranks_steps_in_dataloader_order(workers):
    kw = dict(total=1003, start=37, batch_size=16, rank=1, world_size=3, remainder="pad")
    whole = list(rank_batches(**kw))
    split = [list(rank_batches(**kw, workers=(j, workers))) for j in range(workers)]
    merged = [split[i % workers][i // workers] for i in range(len(whole))]  # round-robin
    assert merged == whole
    assert sum(map(len, split)) == len(whole)


def test_pad_repeats_the_first_items_when_the_epoch_is_shorter_than_a_step():
    got, _ = positions(5, 0, 4, 3, "pad")
    assert len(got) == 1 and [p for p, _ in got[0]] == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1]
    assert [v for _, v in got[0]] == [True] * 5 + [False] * 7


def test_tasks_cover_the_batches_window_by_window():
    counts = np.array([5, 0, 9, 3, 8, 1, 7], np.int64)
    windows, total = epoch_windows(counts, OrderKey(seed=4, epoch=1, shuffle=True,
                                                    window_chunks=2))
    specs = list(rank_batches(total, start=3, batch_size=4, rank=1, world_size=2,
                              remainder="pad"))
    want = [(p, v) for s in specs for a, b, v in s.ranges for p in range(a, b)]
    got, ends = [], []
    for task in tasks(windows, iter(specs)):
        got += [(task.window.start + i, p.valid) for p in task.pieces
                for i in range(p.lo, p.hi)]
        ends += [p.ends for p in task.pieces if p.ends >= 0]
    assert got == want and ends == [s.step for s in specs]


@pytest.mark.parametrize("n_chunks, k", [(1, 8), (7, 3), (42, 8), (201, 8), (200, 32)])
def test_windows_are_balanced_stratified_and_cover_every_chunk_once(n_chunks, k):
    live = np.arange(n_chunks, dtype=np.int64) * 2  # store order, some chunks skipped
    sets = window_chunk_sets(live, seed=3, epoch=1, shuffle=True, window_chunks=k)
    assert sorted(np.concatenate(sets).tolist()) == live.tolist()
    sizes = [len(s) for s in sets]
    assert max(sizes) <= k and max(sizes) - min(sizes) <= 1
    n = len(sets)
    for s in sets:  # one chunk from each stratum of n consecutive live chunks
        strata = np.searchsorted(live, s) // n
        assert len(np.unique(strata)) == len(s)
    again = window_chunk_sets(live, seed=3, epoch=1, shuffle=True, window_chunks=k)
    assert all(np.array_equal(a, b) for a, b in zip(sets, again, strict=True))


def test_resume_position_is_arithmetic_not_replay():
    # a lazy plan that starts at the position: nothing before it is enumerated (a replay of
    # 4 million batches would not finish this test)
    specs = rank_batches(10**9, start=10**9 - 5000, batch_size=256, rank=3, world_size=7,
                         remainder="even")
    first = next(specs)
    assert first.step == 0 and first.ranges[0][0] == 10**9 - 5000 + 3 * 256


# ---------------------------------------------------------------- on a real store and loader

@pytest.fixture(scope="module")
def store(small_store) -> str:
    return small_store(8)  # 333 rows, 42 chunks of 8, uneven items per chunk


def run(loader, key: OrderKey, *, start: int, batch: int, shard: Shard, remainder: str,
        stop: int | None = None) -> list[dict]:
    out = []
    for b, _step in elastic_batches(loader._items, None, loader._counts, key, source=loader,
                                    start=start, batch_size=batch, shard=shard,
                                    remainder=remainder):
        if stop is not None and len(out) == stop:
            break
        out.append(b)
    return out


def lockstep(loader, key, *, start, batch, world, remainder, stop=None):
    ranks = [run(loader, key, start=start, batch=batch, shard=Shard(r, world),
                 remainder=remainder, stop=stop) for r in range(world)]
    assert len({len(r) for r in ranks}) == 1  # equal batches per rank
    return [ranks[r][s] for s in range(len(ranks[0])) for r in range(world)]


def test_one_rank_yields_the_global_order_of_the_real_stores_rows(store):
    ds, full = chunkstore.open(store), read_all(store)
    loader = ds.loader(batch_size=10, seed=5, window_chunks=3)
    key = OrderKey(seed=5, epoch=2, shuffle=True, window_chunks=3)
    batches = run(loader, key, start=0, batch=10, shard=Shard(), remainder="even")
    got = np.concatenate([b["index"] for b in batches])
    windows, _ = epoch_windows(loader._counts, key)
    rows = [w.chunks[loader._items(w) // 8] * 8 + loader._items(w) % 8 for w in windows]
    np.testing.assert_array_equal(global_items(windows, rows, seed=5, epoch=2, shuffle=True),
                                  got)
    assert sorted(got) == list(range(333))
    for b in batches:
        assert_batch_matches(b, full)
    other = OrderKey(seed=5, epoch=3, shuffle=True, window_chunks=3)
    assert not np.array_equal(np.concatenate([b["index"] for b in run(
        loader, other, start=0, batch=10, shard=Shard(), remainder="even")]), got)


@pytest.mark.parametrize("old, new, remainder", [(4, 3, "pad"), (2, 5, "pad"), (3, 1, "even"),
                                                  (1, 4, "even"), (5, 2, "drop")])
def test_real_loader_resumes_under_a_new_world_size(store, old, new, remainder):
    ds, full = chunkstore.open(store), read_all(store)
    loader = ds.loader(batch_size=7, seed=1, window_chunks=4)
    key = OrderKey(seed=1, epoch=3, shuffle=True, window_chunks=4)
    whole = lockstep(loader, key, start=0, batch=7, world=1, remainder="pad")
    order = np.concatenate([b["index"][b["valid"]] for b in whole])
    assert sorted(order) == list(range(333))
    rng = np.random.default_rng(old * 7 + new)
    for stop in rng.integers(0, 333 // (7 * old) + 1, size=6).tolist():
        before = lockstep(loader, key, start=0, batch=7, world=old, remainder=remainder,
                          stop=stop)
        _, total = epoch_windows(loader._counts, key)
        pos = position_after(total, start=0, batch_size=7, world_size=old,
                             remainder=remainder, done=stop)
        after = lockstep(loader, key, start=pos, batch=7, world=new, remainder=remainder)
        got = np.concatenate([b["index"][b["valid"]] if "valid" in b else b["index"]
                              for b in before + after])
        np.testing.assert_array_equal(got, order[:len(got)])  # the uninterrupted order
        if remainder == "pad":
            assert len(got) == 333  # the same multiset as an uninterrupted epoch
        for b in (before + after)[:2] + (before + after)[-2:]:
            assert_batch_matches({k: v for k, v in b.items() if k != "valid"}, full)
