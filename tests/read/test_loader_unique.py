"""``Loader(unique=True)``: only first occurrences of duplicate rows (issue 17)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr
from torch.utils.data import DataLoader

import chunkstore
from chunkstore import ReadError
from chunkstore.interop.torch import IterableDataset
from chunkstore.testing import assert_batch_matches, read_all


def write_duplicate_of(path: str, dup: np.ndarray) -> None:
    """``meta/duplicate_of`` as ``chunkstore dedup`` writes it: (N,) int64, -1 = first."""
    g = zarr.open_group(path, mode="r+")
    g.create_array("meta/duplicate_of", data=dup.astype(np.int64), overwrite=True)


@pytest.fixture(scope="module")
def store(small_store, copy_store, small_sizes, write_split) -> str:
    path = copy_store(small_store(8), "unique")
    n = sum(small_sizes)
    rng = np.random.default_rng(5)
    dup = np.full(n, -1, np.int64)
    # every 3rd row (and a run inside one chunk, and the last row) copies an earlier row
    later = np.unique(np.concatenate([np.arange(3, n, 3), np.arange(17, 23), [n - 1]]))
    dup[later] = rng.integers(0, 3, len(later))
    write_split(path, rng.choice(3, size=n, p=[0.6, 0.3, 0.1]).astype(np.int8))
    write_duplicate_of(path, dup)
    return path


@pytest.fixture(scope="module")
def first(store) -> np.ndarray:
    return np.flatnonzero(zarr.open_array(store, path="meta/duplicate_of", mode="r")[:] == -1)


def rows_of(batches) -> np.ndarray:
    return np.concatenate([np.asarray(b["index"]) for b in batches])


@pytest.mark.parametrize("window_chunks", [1, 4])
@pytest.mark.parametrize("batch_size", [5, 64])
def test_each_first_occurrence_exactly_once(store, first, window_chunks, batch_size):
    ds, full = chunkstore.open(store), read_all(store)
    batches = list(ds.loader(batch_size=batch_size, window_chunks=window_chunks, unique=True))
    got = rows_of(batches)
    assert len(got) == len(np.unique(got)) == len(first)
    np.testing.assert_array_equal(np.sort(got), first)
    for b in batches[:3]:
        assert_batch_matches(b, full)
    plain = rows_of(ds.loader(batch_size=batch_size, window_chunks=window_chunks))
    assert len(plain) > len(got)  # the duplicates are there without unique=True


def test_unique_combines_with_a_split_shards_and_resume(store, first):
    ds = chunkstore.open(store)
    codes = zarr.open_array(store, path="splits/default", mode="r")[:]
    want = np.intersect1d(first, np.flatnonzero(codes == 0))
    loader = ds.loader(batch_size=7, split="train", unique=True, seed=3, window_chunks=2)
    loader.set_epoch(1)
    whole = [b["index"] for b in loader]
    np.testing.assert_array_equal(np.sort(np.concatenate(whole)), want)
    again = ds.loader(batch_size=7, split="train", unique=True, seed=3, window_chunks=2)
    again.set_epoch(1)
    it = iter(again)
    for _ in range(3):
        next(it)
    state = again.state_dict()
    resumed = ds.loader(batch_size=7, split="train", unique=True, seed=3, window_chunks=2)
    resumed.load_state_dict(state)
    for got, want_b in zip(resumed, whole[3:], strict=True):
        np.testing.assert_array_equal(got["index"], want_b)
    got = np.concatenate([rows_of(loader.shard(r, 3)) for r in range(3)])
    assert len(np.unique(got)) == len(got) and np.isin(got, want).all()
    assert len(want) - len(got) < 3  # "even" remainder: fewer than world_size dropped
    plain = ds.loader(batch_size=7, split="train", seed=3, window_chunks=2).state_dict()
    with pytest.raises(ReadError, match=r"unique \(saved None, this loader True\)"):
        loader.load_state_dict(plain)


def test_unique_in_torch_dataloader_workers(store, first):
    ds = IterableDataset(store, batch_size=16, unique=True, seed=2)
    dl = DataLoader(ds, batch_size=None, num_workers=2)
    got = torch.cat([b["index"] for b in dl]).numpy()
    np.testing.assert_array_equal(np.sort(got), first)


def test_missing_duplicate_of_says_to_run_dedup(small_store):
    ds = chunkstore.open(small_store(8))
    with pytest.raises(ReadError, match=r"run `chunkstore dedup STORE` first"):
        ds.loader(unique=True)
    with pytest.raises(ReadError, match="chunkstore dedup"):
        IterableDataset(small_store(8), unique=True)


def test_stale_duplicate_of_is_refused(small_store, copy_store):
    path = copy_store(small_store(8), "stale")
    n = chunkstore.open(path).n_samples
    write_duplicate_of(path, np.full(n - 1, -1))
    with pytest.raises(ReadError, match="shape"):
        chunkstore.open(path).loader(unique=True)
