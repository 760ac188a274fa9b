"""Sequence windows: index arithmetic, rows equal the store, never crossing a group, loader."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import chunkstore
from chunkstore import ReadError
from chunkstore.read.windows import build_index
from chunkstore.testing import assert_batch_matches, read_all


@pytest.fixture(scope="module")
def store(small_store, copy_store, small_sizes, write_split) -> str:
    path = copy_store(small_store(8), "windows")
    # A grouped split: whole groups (items) go to train (0) or val (1).
    group_code = np.array([0, 1, 0, 0, 1, 0, 0, 1, 0, 0], dtype=np.int8)
    write_split(path, np.repeat(group_code, small_sizes))
    return path


@pytest.fixture(scope="module")
def full(store) -> dict[str, np.ndarray]:
    out = read_all(store)
    import zarr

    out["group"] = zarr.open_array(store, path="meta/group", mode="r")[:]
    return out


def expected_count(sizes, lookback, horizon) -> int:
    return sum(max(0, n - lookback - horizon + 1) for n in sizes)


def assert_windows_match(batch: dict, full: dict[str, np.ndarray], length: int) -> None:
    for j, start in enumerate(batch["start"]):
        rows = np.arange(start, start + length)
        assert len(set(full["group"][rows])) == 1  # never crosses a group
        assert batch["group"][j] == full["group"][start]
        one = {"index": rows, "features": batch["features"][j],
               "labels": {h: a[j] for h, a in batch["labels"].items()},
               "masks": {h: a[j] for h, a in batch["masks"].items()}}
        assert_batch_matches(one, full)


@pytest.mark.parametrize(("lookback", "horizon"), [(1, 0), (4, 1), (9, 3), (30, 0), (61, 17)])
def test_windows_are_contiguous_group_rows_and_counted_right(small_sizes, store, full, lookback,
                                                             horizon):
    ds = chunkstore.open(store)
    w = ds.windows(lookback=lookback, horizon=horizon)
    assert len(w) == expected_count(small_sizes, lookback, horizon)
    assert w.length == lookback + horizon
    if not len(w):
        return
    batch = w[np.arange(len(w))]
    assert batch["features"].shape == (len(w), lookback + horizon, 4)
    assert batch["masks"]["move"].shape == (len(w), lookback + horizon, 5)
    assert_windows_match(batch, full, lookback + horizon)
    # every valid start appears once, in order
    starts = [s for g0, n in zip(np.cumsum([0, *small_sizes[:-1]]), small_sizes, strict=True)
              for s in range(g0, g0 + max(0, n - lookback - horizon + 1))]
    np.testing.assert_array_equal(batch["start"], starts)
    one = w[len(w) - 1]
    assert one["features"].shape == (lookback + horizon, 4) and one["index"] == len(w) - 1
    np.testing.assert_array_equal(one["features"], batch["features"][-1])


def test_windows_of_a_split_and_by_none(small_sizes, store, full):
    ds = chunkstore.open(store)
    train_sizes = [n for n, c in zip(small_sizes, [0, 1, 0, 0, 1, 0, 0, 1, 0, 0], strict=True)
                   if c == 0]
    w = ds.windows(lookback=5, horizon=2, split="train")
    assert len(w) == expected_count(train_sizes, 5, 2)
    # item 8 (group 1008) has 1 row: too short for a window
    assert set(np.unique(w[np.arange(len(w))]["group"])) == {1000, 1002, 1003, 1005, 1006,
                                                            1009}
    one_series = ds.windows(lookback=5, horizon=2, by=None)
    assert len(one_series) == sum(small_sizes) - 6
    b = one_series[[0, len(one_series) - 1]]
    np.testing.assert_array_equal(b["start"], [0, sum(small_sizes) - 7])


@pytest.mark.parametrize("batch_size", [1, 10, 64])
@pytest.mark.parametrize("window_chunks", [1, 4])
def test_window_loader_yields_every_window_once(store, full, batch_size, window_chunks):
    w = chunkstore.open(store).windows(lookback=6, horizon=2, split="train")
    loader = w.loader(batch_size=batch_size, window_chunks=window_chunks, seed=2)
    batches = list(loader)
    ids = np.concatenate([b["index"] for b in batches])
    np.testing.assert_array_equal(np.sort(ids), np.arange(len(w)))
    assert len(batches) == len(loader)
    for b in batches[:3]:
        assert_windows_match(b, full, 8)
        np.testing.assert_array_equal(b["features"], w[b["index"]]["features"])
    dropped = list(w.loader(batch_size=batch_size, window_chunks=window_chunks, seed=2,
                            drop_last=True))
    assert all(len(b["index"]) == batch_size for b in dropped)
    assert len(dropped) == len(w) // batch_size


def test_window_loader_determinism_resume_and_shards(store):
    w = chunkstore.open(store).windows(lookback=3, horizon=1)
    loader = w.loader(batch_size=16, seed=1, window_chunks=2)
    whole = [b["index"] for b in loader]
    assert all(np.array_equal(a, b["index"]) for a, b in zip(whole, loader, strict=True))
    loader.set_epoch(1)
    assert not np.array_equal(np.concatenate(whole), np.concatenate([b["index"]
                                                                     for b in loader]))
    loader.set_epoch(0)
    it = iter(loader)
    next(it), next(it), next(it)
    fresh = w.loader(batch_size=16, seed=1, window_chunks=2)
    fresh.load_state_dict(loader.state_dict())
    rest = [b["index"] for b in fresh]
    assert all(np.array_equal(a, b) for a, b in zip(rest, whole[3:], strict=True))
    assert len(rest) == len(whole) - 3
    shards = [np.concatenate([b["index"] for b in loader.shard(r, 3)]) for r in range(3)]
    got = np.concatenate(shards)
    assert len(np.unique(got)) == len(got) and len(w) - len(got) < 3  # "even" remainder
    with pytest.raises(ReadError, match="lookback"):
        w2 = chunkstore.open(store).windows(lookback=4, horizon=1)
        w2.loader(batch_size=16, seed=1, window_chunks=2).load_state_dict(loader.state_dict())


def test_window_errors(store):
    ds = chunkstore.open(store)
    with pytest.raises(ReadError, match="lookback must be an integer >= 1, found 0"):
        ds.windows(lookback=0)
    with pytest.raises(ReadError, match="horizon"):
        ds.windows(lookback=2, horizon=-1)
    with pytest.raises(ReadError, match=r"need the array 'meta/episode'.*by=None"):
        ds.windows(lookback=2, by="episode")


@settings(max_examples=60, deadline=None)
@given(runs=st.lists(st.integers(1, 12), min_size=0, max_size=12),
       length=st.integers(1, 8), data=st.data())
def test_index_property(runs, length, data):
    # keys: runs of equal values; neighbouring runs may reuse a value only when not adjacent
    keys = np.repeat(np.arange(len(runs)) % 3, runs).astype(np.int64)
    member = np.array(data.draw(st.lists(st.booleans(), min_size=len(keys),
                                         max_size=len(keys))), dtype=bool)
    for m in (None, member):
        idx = build_index(keys, length, m)
        # series = maximal runs of (key, membership) inside the kept rows
        kept = np.ones(len(keys), bool) if m is None else m
        series, cur = [], []
        for i in range(len(keys)):
            if kept[i] and cur and keys[i] == keys[cur[-1]] and cur[-1] == i - 1:
                cur.append(i)
            else:
                if cur:
                    series.append(cur)
                cur = [i] if kept[i] else []
        if cur:
            series.append(cur)
        want = [s[0] + k for s in series for k in range(max(0, len(s) - length + 1))]
        assert len(idx) == len(want)
        np.testing.assert_array_equal(idx.starts(), want)
