"""The chunk-aware shuffled batch loader: coverage, equality, determinism, resume, shards."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import zarr

import chunkstore
from chunkstore import ReadError
from chunkstore.read.stream import cut, plan_epoch
from chunkstore.testing import assert_batch_matches, read_all


def epoch(loader) -> list[np.ndarray]:
    return [b["index"] for b in loader]


@pytest.fixture(scope="module")
def store(small_store, copy_store, small_sizes, write_split) -> str:
    """The shared small store with splits/default (train/val/test) and splits/parity."""
    path = copy_store(small_store(8), "loader")
    codes = np.random.default_rng(7).choice(3, size=sum(small_sizes), p=[0.7, 0.2, 0.1])
    write_split(path, codes.astype(np.int8))
    write_split(path, (np.arange(sum(small_sizes)) % 2).astype(np.int8), name="parity",
                names=["even", "odd"])
    return path


@pytest.fixture(scope="module")
def full(store) -> dict[str, np.ndarray]:
    return read_all(store)


@pytest.fixture(scope="module")
def ds(store):
    return chunkstore.open(store)


def split_rows(store: str, split: str | None, array: str = "default") -> np.ndarray:
    if split is None:
        return np.arange(zarr.open_group(store, mode="r")["features"].shape[0])
    a = zarr.open_array(store, path=f"splits/{array}", mode="r")
    return np.flatnonzero(a[:] == list(a.attrs["names"]).index(split))


@pytest.mark.parametrize("batch_size", [1, 7, 64, 1000])
@pytest.mark.parametrize("window_chunks", [1, 3, 100])
@pytest.mark.parametrize("split", [None, "train", "test"])
def test_every_row_of_the_split_exactly_once(ds, store, full, batch_size, window_chunks, split):
    want = split_rows(store, split)
    for drop_last in (False, True):
        loader = ds.loader(batch_size=batch_size, split=split, window_chunks=window_chunks,
                           drop_last=drop_last, seed=11)
        batches = list(loader)
        sizes = [len(b["index"]) for b in batches]
        got = np.concatenate([b["index"] for b in batches]) if batches else np.zeros(0, int)
        assert len(np.unique(got)) == len(got)  # never twice
        assert len(batches) == len(loader)
        if drop_last:
            assert all(s == batch_size for s in sizes)
            assert len(got) == len(want) // batch_size * batch_size
            assert np.isin(got, want).all()
        else:
            assert all(s == batch_size for s in sizes[:-1]) and 0 < sizes[-1] <= batch_size
            np.testing.assert_array_equal(np.sort(got), want)
        for b in batches[:3] + batches[-2:]:
            assert_batch_matches(b, full)


def test_batches_equal_store_rows_and_have_the_documented_shape(ds, full):
    batches = list(ds.loader(batch_size=50, seed=1))
    for b in batches:
        assert_batch_matches(b, full)
    b = batches[0]
    assert set(b) == {"features", "labels", "masks", "index"}
    assert b["features"].shape == (50, 4) and b["features"].dtype == np.float32
    assert set(b["labels"]) == {"move", "target"} and b["labels"]["move"].shape == (50,)
    assert b["masks"]["move"].shape == (50, 5) and b["index"].dtype == np.int64


def test_heads_subset(ds, full):
    b = next(iter(ds.loader(batch_size=16, heads=["target"])))
    assert set(b["labels"]) == set(b["masks"]) == {"target"}
    assert_batch_matches(b, full)
    assert set(next(iter(ds.loader(batch_size=4, heads=[])))["labels"]) == set()


def test_deterministic_per_seed_and_epoch(ds):
    a = ds.loader(batch_size=32, seed=5)
    b = ds.loader(batch_size=32, seed=5)
    first = epoch(a)
    assert all(np.array_equal(x, y) for x, y in zip(first, epoch(b), strict=True))
    assert all(np.array_equal(x, y) for x, y in zip(first, epoch(a), strict=True))  # repeatable
    a.set_epoch(1)
    second = np.concatenate(epoch(a))
    assert not np.array_equal(np.concatenate(first), second)
    other_seed = np.concatenate(epoch(ds.loader(batch_size=32, seed=6)))
    assert not np.array_equal(np.concatenate(first), other_seed)
    b.set_epoch(1)
    np.testing.assert_array_equal(np.concatenate(epoch(b)), second)


def test_no_shuffle_reads_store_order(small_sizes, ds):
    got = np.concatenate(epoch(ds.loader(batch_size=10, shuffle=False)))
    np.testing.assert_array_equal(got, np.arange(sum(small_sizes)))


@pytest.mark.slow
def test_shuffle_quality_on_a_larger_store(build_store, tmp_path):
    # 4,000 rows in 250 chunks of 16: chunk order and rows within windows are shuffled.
    path = build_store(tmp_path, sizes=[400] * 10, chunk_rows=16)
    ds = chunkstore.open(path)
    loader = ds.loader(batch_size=64, window_chunks=8, seed=0)
    batches = epoch(loader)
    order = np.concatenate(batches)
    position = np.empty(len(order))
    position[order] = np.arange(len(order))
    rho = np.corrcoef(position, np.arange(len(order)))[0, 1]  # Spearman: both are ranks
    assert abs(rho) < 0.1
    chunks_per_batch = [len(np.unique(b // 16)) for b in batches]
    # A batch of 64 drawn from a window of 8 chunks (128 rows) touches nearly all of them.
    assert np.mean(chunks_per_batch) > 7
    # Windows are stratified: every batch reaches both ends of the store.
    n = len(order)
    assert np.mean([b.min() < n / 4 and b.max() > 3 * n / 4 for b in batches]) > 0.9


@pytest.mark.parametrize("split", [None, "train"])
@pytest.mark.parametrize("stop", [0, 1, 5, 9])
def test_resume_mid_epoch_yields_exactly_the_rest(ds, full, split, stop):
    loader = ds.loader(batch_size=24, split=split, seed=4, window_chunks=3)
    loader.set_epoch(2)
    whole = epoch(loader)
    it = iter(loader)
    for _ in range(stop):
        next(it)
    state = loader.state_dict()
    assert state["position"] == 24 * stop and state["epoch"] == 2
    fresh = ds.loader(batch_size=24, split=split, seed=4, window_chunks=3)
    fresh.load_state_dict(state)
    fresh.set_epoch(2)  # the training loop's usual call keeps the loaded position
    rest = list(fresh)
    assert len(rest) == len(whole) - stop
    for got, want in zip(rest, whole[stop:], strict=True):
        np.testing.assert_array_equal(got["index"], want)
        assert_batch_matches(got, full)
    assert fresh.state_dict()["position"] == sum(len(b) for b in whole)
    assert len(epoch(fresh)) == len(whole)  # the next pass is a whole epoch again


def test_resume_refuses_a_different_configuration(ds):
    state = ds.loader(batch_size=24, seed=4, window_chunks=8).state_dict()
    # elastic: the batch size may change
    ds.loader(batch_size=25, seed=4, window_chunks=8).load_state_dict(state)
    with pytest.raises(ReadError, match=r"window_chunks \(saved 8, this loader 4\)"):
        ds.loader(batch_size=24, seed=4, window_chunks=4).load_state_dict(state)
    sharded = ds.loader(batch_size=24, seed=4, elastic=False).state_dict()
    with pytest.raises(ReadError, match=r"batch_size \(saved 24, this loader 25\)"):
        ds.loader(batch_size=25, seed=4, elastic=False).load_state_dict(sharded)
    with pytest.raises(ReadError, match="order"):
        ds.loader(batch_size=24, seed=4).load_state_dict(sharded)
    with pytest.raises(ReadError, match="split"):
        ds.loader(batch_size=24, seed=4, split="train", window_chunks=8).load_state_dict(state)


@pytest.mark.parametrize("world_size", [2, 3, 4])
@pytest.mark.parametrize("split", [None, "val"])
def test_elastic_shards_take_equal_batches_of_the_global_order(ds, store, full, world_size,
                                                               split):
    loader = ds.loader(batch_size=16, split=split, seed=9, window_chunks=2)
    loader.set_epoch(3)
    whole = np.concatenate(epoch(loader))
    shards = [list(loader.shard(r, world_size)) for r in range(world_size)]
    assert len({len(s) for s in shards}) == 1  # equal batches per rank
    assert all(len(s) == len(loader.shard(r, world_size)) for r, s in enumerate(shards))
    lockstep = np.concatenate([shards[r][k]["index"] for k in range(len(shards[0]))
                               for r in range(world_size)])
    np.testing.assert_array_equal(lockstep, whole[:len(lockstep)])  # the global order
    assert len(whole) - len(lockstep) < world_size  # "even": fewer than world_size dropped
    for b in shards[-1][:2]:
        assert_batch_matches(b, full)


@pytest.mark.parametrize("world_size", [2, 3, 4])
@pytest.mark.parametrize("split", [None, "val"])
def test_shards_partition_the_epoch(ds, store, full, world_size, split):
    loader = ds.loader(batch_size=16, split=split, seed=9, window_chunks=2, elastic=False)
    loader.set_epoch(3)
    parts = []
    for rank in range(world_size):
        shard = loader.shard(rank, world_size)
        assert shard.epoch == 3
        batches = list(shard)
        assert len(batches) == len(shard)
        for b in batches[:2]:
            assert_batch_matches(b, full)
        parts.append(np.concatenate([b["index"] for b in batches]))
    allrows = np.concatenate(parts)
    np.testing.assert_array_equal(np.sort(allrows), split_rows(store, split))
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 3 * 8  # chunks are dealt round-robin
    with pytest.raises(ReadError, match="rank"):
        loader.shard(world_size, world_size)


def test_other_split_array(small_sizes, ds, store):
    got = np.concatenate(epoch(ds.loader(batch_size=8, split="odd", splits="parity")))
    np.testing.assert_array_equal(np.sort(got), np.arange(1, sum(small_sizes), 2))


def test_normalize_uses_stats_train(store, tmp_path):
    path = str(tmp_path / "copy.zarr")
    shutil.copytree(store, path)
    ds = chunkstore.open(path)
    with pytest.raises(ReadError, match="stats/train/mean"):
        ds.loader(normalize=True)
    x = read_all(path)["features"]
    mean = x.mean(axis=0).astype(np.float64)
    std = x.std(axis=0).astype(np.float64)
    std[1] = 0.0  # a constant feature is left unscaled, not divided by zero
    g = zarr.open_group(path, mode="r+")
    for name, value in (("mean", mean), ("std", std)):
        g.create_array(f"stats/train/{name}", shape=value.shape, dtype="float64")[:] = value
    b = next(iter(ds.loader(batch_size=40, normalize=True)))
    want = (x[b["index"]] - mean.astype(np.float32)) * (1 / np.where(std > 0, std, 1.0)
                                                         ).astype(np.float32)
    np.testing.assert_allclose(b["features"], want, rtol=1e-5, atol=1e-5)
    assert b["features"].dtype == np.float32


def test_bad_arguments_are_clear_errors(ds):
    with pytest.raises(ReadError, match="batch_size must be an integer >= 1, found 0"):
        ds.loader(batch_size=0)
    with pytest.raises(ReadError, match="window_chunks"):
        ds.loader(window_chunks=-1)
    with pytest.raises(ReadError, match=r"unknown head\(s\) \['nope'\]"):
        ds.loader(heads=["nope"])
    with pytest.raises(ReadError, match="split 'holdout' is not in 'splits/default'"):
        ds.loader(split="holdout")
    with pytest.raises(ReadError, match="has no split array 'splits/kfold'"):
        ds.loader(split="train", splits="kfold")


def test_incomplete_split_array_is_refused(write_split, small_sizes, ds, store):
    write_split(store, np.zeros(sum(small_sizes), np.int8), name="half")
    zarr.open_array(store, path="splits/half", mode="r+").attrs["complete"] = False
    with pytest.raises(ReadError, match="incomplete"):
        ds.loader(split="train", splits="half")


def test_plan_and_cut_are_pure_and_consistent():
    counts = np.array([8, 0, 3, 8, 8, 1], dtype=np.int64)
    jobs = plan_epoch(counts, seed=1, epoch=0, shuffle=True, window_chunks=2)
    assert sorted(np.concatenate([j.chunks for j in jobs]).tolist()) == [0, 2, 3, 4, 5]
    assert [j.start for j in jobs] == [0, jobs[0].count, jobs[0].count + jobs[1].count]
    assert cut(start=10, skip=2, count=30, batch_size=8) == [(2, 6), (6, 14), (14, 22),
                                                              (22, 30)]
    assert cut(start=0, skip=0, count=0, batch_size=8) == []


def test_recycled_buffers_never_change_a_batch_still_referenced(ds, full):
    # The loader reuses its gather jobs' output buffers once nothing refers to them; batches
    # (and views of them) that the caller keeps must keep their rows.
    loader = ds.loader(batch_size=8, window_chunks=2, prefetch=1, threads=1, seed=3)
    made, make = [], loader._job_slabs._make
    loader._job_slabs._make = lambda: made.append(1) or make()
    kept_batches, kept_views = [], []
    for e in range(3):
        loader.set_epoch(e)
        for i, b in enumerate(loader):
            if i % 7 == 0:
                kept_batches.append(b)
            elif i % 7 == 3:
                kept_views.append((b["index"].copy(), b["features"][:, 1:3]))
    for b in kept_batches:
        assert_batch_matches(b, full)
    for idx, view in kept_views:
        np.testing.assert_array_equal(view, full["features"][idx][:, 1:3])
    assert len(loader._job_slabs._entries) <= loader.threads + 4
    jobs = 3 * len(loader.plan())  # here one gather job per window (windows are small)
    assert 0 < len(made) < jobs  # some buffers were recycled


def test_split_and_normalize_with_the_split_and_stats_commands(store, tmp_path, capsys):
    # End to end with the real commands: `chunkstore split` writes splits/default, `chunkstore
    # stats --split train` writes stats/train; the loader reads both.
    from chunkstore.cli import main

    path = str(tmp_path / "copy.zarr")
    shutil.copytree(store, path)
    assert main(["split", path, "--method", "group", "--seed", "1", "--overwrite"]) == 0
    assert main(["stats", path, "--split", "train", "--quiet", "--no-correlation"]) == 0
    capsys.readouterr()
    ds = chunkstore.open(path)
    train = ds.split("train").indices
    batches = list(ds.loader(batch_size=50, split="train", normalize=True, seed=2))
    got = np.concatenate([b["index"] for b in batches])
    np.testing.assert_array_equal(np.sort(got), train)
    norm = ds.stats("train").normalization()
    x = read_all(path)["features"]
    for b in batches[:3]:
        np.testing.assert_allclose(b["features"], norm.apply(x[b["index"]]), rtol=1e-5,
                                   atol=1e-5)


def test_rows_selects_exactly_those_rows_and_is_part_of_the_resume_state(ds):
    rows = np.zeros(ds.n_samples, bool)
    rows[::3] = True
    loader = ds.loader(batch_size=16, split="train", rows=rows, seed=4)
    seen = np.concatenate([b["index"] for b in loader])
    want = np.flatnonzero(rows & ds.split_array().mask("train"))
    np.testing.assert_array_equal(np.sort(seen), want)
    other = rows.copy()
    other[1] = True
    with pytest.raises(ReadError, match="rows"):
        ds.loader(batch_size=16, split="train", rows=other, seed=4).load_state_dict(
            loader.state_dict())
    with pytest.raises(ReadError, match="boolean array"):
        ds.loader(rows=np.ones(3, bool))
