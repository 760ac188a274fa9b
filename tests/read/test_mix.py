"""Mixtures of stores: exact proportions per block, rows equal their stores', heads by name
with missing heads masked, elastic exact resume, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import chunkstore
from chunkstore import ReadError
from chunkstore.read.mix import MISSING_LABEL, block_counts, mix
from chunkstore.testing import make_items, read_all, write_config, write_items


@pytest.fixture(scope="module")
def other_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """97 rows, chunks of 16, heads move (5 classes, shared) and side (2, its own)."""
    tmp = tmp_path_factory.mktemp("mix_other")
    heads = {"move": 5, "side": 2}
    items = make_items([30, 40, 27], seed=9, heads=heads)
    cfg = write_config(tmp / "c.yaml", store=tmp / "s.zarr", paths=write_items(tmp / "b", items),
                       heads=heads, ingest={"chunk_rows": 16})
    chunkstore.ingest(cfg, progress=False)
    return str(tmp / "s.zarr")


@pytest.fixture(scope="module")
def stores(small_store, other_store) -> list[str]:
    return [small_store(8), other_store]  # 333 rows (move, target) and 97 rows (move, side)


def key(batches) -> list[tuple[int, int]]:
    return [(int(s), int(i)) for b in batches for s, i, v in
            zip(b["source"], b["index"], b.get("valid", np.ones(len(b["index"]), bool)),
                strict=True) if v]


def test_block_counts_are_exact_and_sum_to_the_block():
    assert block_counts([0.7, 0.3], 100).tolist() == [70, 30]
    assert block_counts([1, 1, 1], 100).tolist() == [34, 33, 33]
    c = block_counts([0.123, 0.456, 0.421], 1000)
    assert c.sum() == 1000 and np.all(np.abs(c - np.array([123, 456, 421])) < 1)
    for bad in ([], [1, -1], [0, 0], [float("nan")]):
        with pytest.raises(ReadError, match="weights"):
            block_counts(bad, 10)


def test_proportions_are_exact_in_every_block_and_rows_match_their_store(stores):
    views = [chunkstore.open(s) for s in stores]
    m = mix(views, weights=[3, 1], seed=4, batch_size=25, block=40)
    batches = list(m)
    src = np.concatenate([b["source"] for b in batches])
    assert len(src) == m.items == 440  # 430 rows rounded up to whole blocks of 40
    for blk in src.reshape(-1, 40):
        assert np.bincount(blk, minlength=2).tolist() == [30, 10]
    full = [read_all(s) for s in stores]
    for b in batches[:4] + batches[-2:]:
        for k in (0, 1):
            at = b["source"] == k
            np.testing.assert_array_equal(b["features"][at], full[k]["features"][b["index"][at]])
            np.testing.assert_array_equal(b["labels"]["move"][at],
                                          full[k]["labels/move"][b["index"][at]])
        at0, at1 = b["source"] == 0, b["source"] == 1
        assert (b["labels"]["side"][at0] == MISSING_LABEL).all()
        assert (b["masks"]["side"][at0] == 0).all()
        np.testing.assert_array_equal(b["masks"]["side"][at1],
                                      full[1]["masks/side"][b["index"][at1]])
        assert (b["labels"]["target"][at1] == MISSING_LABEL).all()


def test_a_small_heavy_store_repeats_every_row_in_new_orders(stores):
    views = [chunkstore.open(s) for s in stores]
    m = mix(views, weights=[1, 1], seed=0, batch_size=32, block=64, epoch_items=400)
    assert m.items == 448  # rounded up to whole blocks
    got = [i for s, i in key(m) if s == 1]
    assert len(got) == 224
    first, second = got[:97], got[97:194]
    assert sorted(first) == sorted(second) == list(range(97))  # each pass covers the store
    assert first != second  # each pass in a new order


def test_same_seed_same_batches_other_epoch_differs(stores):
    views = [chunkstore.open(s) for s in stores]
    a = key(mix(views, weights=[2, 1], seed=1, batch_size=16))
    b = key(mix(views, weights=[2, 1], seed=1, batch_size=16))
    m = mix(views, weights=[2, 1], seed=1, batch_size=16)
    m.set_epoch(1)
    assert a == b and key(m) != a


@pytest.mark.parametrize("old, new, remainder", [(4, 3, "pad"), (2, 5, "even"), (1, 3, "pad")])
def test_mixture_resumes_under_a_new_world_size(stores, old, new, remainder):
    views = [chunkstore.open(s) for s in stores]
    base = mix(views, weights=[0.6, 0.4], seed=2, batch_size=8, block=50, remainder=remainder)
    base.set_epoch(1)
    whole = key(base)
    rng = np.random.default_rng(old + 10 * new)
    for stop in rng.integers(0, len(base.shard(0, old)) + 1, size=4).tolist():
        ranks = [base.shard(r, old) for r in range(old)]
        got: list[list] = [[] for _ in range(old)]
        iters = [iter(r) for r in ranks]
        for _ in range(stop):
            for r in range(old):
                got[r].append(next(iters[r]))
        state = ranks[1 % old].state_dict()
        before = [got[r][s] for s in range(stop) for r in range(old)]
        resumed = [base.shard(r, new) for r in range(new)]
        for r in resumed:
            r.load_state_dict(state)
        rest = [list(r) for r in resumed]
        assert len({len(x) for x in rest}) == 1  # equal batches per rank
        after = [rest[r][s] for s in range(len(rest[0])) for r in range(new)]
        order = key(before) + key(after)
        assert order == whole[:len(order)]
        if remainder == "pad":
            assert order == whole


def test_mixture_errors_name_the_problem(stores, tmp_path: Path):
    views = [chunkstore.open(s) for s in stores]
    with pytest.raises(ReadError, match="one weight per store"):
        mix(views, weights=[1])
    with pytest.raises(ReadError, match="unknown head"):
        mix(views, weights=[1, 1], heads=["nope"])
    items = make_items([20], n_features=3)
    cfg = write_config(tmp_path / "c.yaml", store=tmp_path / "s.zarr", n_features=3,
                       paths=write_items(tmp_path / "b", items))
    chunkstore.ingest(cfg, progress=False)
    with pytest.raises(ReadError, match="same features"):
        mix([views[0], chunkstore.open(str(tmp_path / "s.zarr"))], weights=[1, 1])
    m = mix(views, weights=[1, 1], seed=0)
    state = m.state_dict()
    with pytest.raises(ReadError, match="weights"):
        mix(views, weights=[2, 1], seed=0).load_state_dict(state)


def test_background_decode_gives_the_same_rows_for_any_threads_and_prefetch(stores):
    # small windows: the decoded-chunk LRU (2 x window_chunks per store) evicts all the time
    # while up to `prefetch` batches are gathered ahead in other threads
    views = [chunkstore.open(s) for s in stores]
    full = [read_all(s) for s in stores]
    runs = []
    for threads, prefetch in ((1, 0), (2, 6), (3, 2)):
        m = mix(views, weights=[1, 2], seed=5, batch_size=16, block=32, window_chunks=1,
                threads=threads, prefetch=prefetch)
        batches = list(m)
        for b in batches:
            for k in (0, 1):
                at = b["source"] == k
                np.testing.assert_array_equal(b["features"][at],
                                              full[k]["features"][b["index"][at]])
        runs.append([(b["source"].tolist(), b["index"].tolist()) for b in batches])
    assert runs[0] == runs[1] == runs[2]
    m = mix(views, weights=[1, 2], seed=5, batch_size=16, block=32, window_chunks=1)
    it = iter(m)
    next(it)
    it.close()  # stops its threads; a new iteration starts cleanly
    assert len(list(m)) == len(runs[0])


def test_a_mixture_of_sequence_windows_reads_whole_windows_and_resumes(stores):
    # windows of 3 + 1 rows within each group of each store, mixed 1:1, windows of 2 chunks
    wins = [chunkstore.open(s).windows(lookback=3, horizon=1) for s in stores]
    m = mix(wins, weights=[1, 1], seed=6, batch_size=8, block=16, window_chunks=2)
    batches = list(m)
    src = np.concatenate([b["source"] for b in batches])
    for blk in src[:len(src) // 16 * 16].reshape(-1, 16):
        assert np.bincount(blk, minlength=2).tolist() == [8, 8]
    for b in batches[:5] + batches[-2:]:
        assert b["features"].shape[:2] == (len(b["index"]), 4)
        for k in (0, 1):
            at = b["source"] == k
            want = wins[k][b["index"][at]]
            np.testing.assert_array_equal(b["features"][at], want["features"])
            np.testing.assert_array_equal(b["labels"]["move"][at], want["labels"]["move"])
            np.testing.assert_array_equal(b["masks"]["move"][at], want["masks"]["move"])
        assert (b["labels"]["side"][b["source"] == 0] == MISSING_LABEL).all()
    whole = [(int(s), int(i)) for b in batches for s, i in zip(b["source"], b["index"],
                                                              strict=True)]
    ranks = [m.shard(r, 2) for r in range(2)]
    iters = [iter(r) for r in ranks]
    before = [next(iters[r]) for _ in range(3) for r in range(2)]
    resumed = [m.shard(r, 3) for r in range(3)]
    for r in resumed:
        r.load_state_dict(ranks[0].state_dict())
    rest = [list(r) for r in resumed]
    after = [rest[r][s] for s in range(len(rest[0])) for r in range(3)]
    order = [(int(s), int(i)) for b in before + after for s, i in zip(b["source"], b["index"],
                                                                       strict=True)]
    assert order == whole[:len(order)] and len(order) > len(whole) - 3
    with pytest.raises(ReadError, match="not both"):
        mix([wins[0], chunkstore.open(stores[1])], weights=[1, 1])
    with pytest.raises(ReadError, match="same lookback"):
        mix([wins[0], chunkstore.open(stores[1]).windows(lookback=2)], weights=[1, 1])
