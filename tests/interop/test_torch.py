"""chunkstore.torch with a real torch.utils.data.DataLoader and worker processes."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
import zarr
from torch.utils.data import DataLoader

from chunkstore.interop.torch import IterableDataset, MapDataset
from chunkstore.testing import read_all


@pytest.fixture(scope="module")
def store(small_store, copy_store, write_split) -> str:
    """The shared small store with splits/default: val = rows i % 3 == 0, train the rest."""
    path = copy_store(small_store(8), "torch")
    n = zarr.open_group(path, mode="r")["features"].shape[0]
    write_split(path, (np.arange(n) % 3 == 0).astype(np.int8), names=["train", "val"])
    return path


@pytest.fixture(scope="module")
def full(store) -> dict[str, np.ndarray]:
    return read_all(store)


def assert_tensors_match(batch: dict, full: dict[str, np.ndarray]) -> None:
    idx = batch["index"].numpy()
    np.testing.assert_array_equal(batch["features"].numpy(), full["features"][idx])
    for h, t in batch["labels"].items():
        assert t.dtype == torch.int64
        np.testing.assert_array_equal(t.numpy(), full[f"labels/{h}"][idx])
    for h, t in batch["masks"].items():
        np.testing.assert_array_equal(t.numpy(), full[f"masks/{h}"][idx])


@pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")  # > 2 cores
@pytest.mark.parametrize("num_workers", [0, 1, 2, 3, 4])
def test_iterable_dataset_each_row_once_across_workers(small_sizes, store, full, num_workers):
    ds = IterableDataset(store, batch_size=20, seed=3, window_chunks=2)
    dl = DataLoader(ds, batch_size=None, num_workers=num_workers)
    batches = list(dl)
    for b in batches:
        assert_tensors_match(b, full)
    idx = torch.cat([b["index"] for b in batches]).numpy()
    np.testing.assert_array_equal(np.sort(idx), np.arange(sum(small_sizes)))
    ds.set_epoch(1)  # a new epoch reaches the workers: a different order, still every row once
    again = torch.cat([b["index"] for b in dl]).numpy()
    np.testing.assert_array_equal(np.sort(again), np.arange(sum(small_sizes)))
    assert not np.array_equal(idx, again)


@pytest.mark.parametrize("world_size", [2, 3])
def test_iterable_dataset_ranks_and_workers_partition_a_split(small_sizes, store, world_size):
    want = np.flatnonzero(np.arange(sum(small_sizes)) % 3 != 0)  # code 0 = train: i % 3 != 0
    seen = []
    for rank in range(world_size):
        ds = IterableDataset(store, batch_size=16, split="train", rank=rank,
                             world_size=world_size, window_chunks=1, drop_last=False)
        seen += [b["index"].numpy() for b in DataLoader(ds, batch_size=None, num_workers=2)]
    np.testing.assert_array_equal(np.sort(np.concatenate(seen)), want)


def test_iterable_dataset_of_windows(small_sizes, store, full):
    ds = IterableDataset(store, batch_size=8, lookback=4, horizon=1, seed=0)
    batches = list(DataLoader(ds, batch_size=None, num_workers=2))
    n_windows = sum(max(0, n - 4) for n in small_sizes)
    idx = torch.cat([b["index"] for b in batches]).numpy()
    np.testing.assert_array_equal(np.sort(idx), np.arange(n_windows))
    b = batches[0]
    assert b["features"].shape[1:] == (5, 4)
    start = b["start"].numpy()[0]
    np.testing.assert_array_equal(b["features"][0].numpy(), full["features"][start:start + 5])


def test_map_dataset_with_sampler_and_workers(small_sizes, store, full):
    ds = MapDataset(store, split="val")
    rows = np.flatnonzero(np.arange(sum(small_sizes)) % 3 == 0)
    assert len(ds) == len(rows)
    item = ds[3]
    assert int(item["index"]) == rows[3] and item["features"].shape == (4,)
    assert item["labels"]["move"].dtype == torch.int64
    dl = DataLoader(ds, batch_size=16, shuffle=True, num_workers=2,
                    generator=torch.Generator().manual_seed(0))
    seen = []
    for b in dl:
        assert_tensors_match(b, full)
        seen.append(b["index"].numpy())
    np.testing.assert_array_equal(np.sort(np.concatenate(seen)), rows)
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_adapters_pickle_without_the_open_store(store):
    ds = IterableDataset(store, batch_size=4)
    assert ds._ds is not None
    clone = pickle.loads(pickle.dumps(ds))
    assert "_ds" not in clone.__dict__
    assert len(next(iter(clone))["index"]) == 4
    m = pickle.loads(pickle.dumps(MapDataset(store, heads=["move"])))
    assert set(m[0]["labels"]) == {"move"}


def test_in_process_iteration_is_the_loaders_stream_as_tensors(store, full):
    """The README's recommended path: iterate the IterableDataset in the training process."""
    import chunkstore
    from chunkstore.read.loader import Loader

    ds = IterableDataset(store, batch_size=16, seed=5, split="train")
    ds.set_epoch(2)
    loader = Loader(chunkstore.open(store), batch_size=16, seed=5, split="train")  # defaults
    loader.set_epoch(2)
    got = list(ds)
    want = list(loader)
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert isinstance(g["features"], torch.Tensor) and g["features"].dtype == torch.float32
        np.testing.assert_array_equal(g["index"].numpy(), w["index"])
        assert_tensors_match(g, full)


def test_pin_memory_pins_one_buffer_or_warns_without_an_accelerator(store, full):
    from chunkstore.errors import ChunkstoreWarning
    from chunkstore.interop.torch import can_pin

    if can_pin():
        ds = IterableDataset(store, batch_size=16, pin_memory=True)
    else:
        with pytest.warns(ChunkstoreWarning, match="no accelerator"):
            ds = IterableDataset(store, batch_size=16, pin_memory=True)
    batches = list(ds)
    assert sum(len(b["index"]) for b in batches) == len(full["features"])
    for b in batches[:3]:
        assert_tensors_match(b, full)
        assert b["features"].is_pinned() == can_pin()
