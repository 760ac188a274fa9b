"""Map-style access ds[i], decoded chunk reads (fast path = zarr), to_xarray / to_dask."""

from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

import chunkstore
from chunkstore import ReadError
from chunkstore.store.chunkfiles import (
    DECODERS,
    ChunkCache,
    chunk_source,
    default_decoder,
    read_chunk,
)
from chunkstore.testing import read_all


@pytest.fixture(scope="module")
def store(small_store) -> str:
    """The shared small store in chunks of 16 (read only; tests that break it copy it)."""
    return small_store(16)


@pytest.fixture(scope="module")
def full(store) -> dict[str, np.ndarray]:
    return read_all(store)


def test_getitem_int_array_slice_and_errors(small_sizes, store, full):
    ds = chunkstore.open(store)
    n = sum(small_sizes)
    one = ds[17]
    np.testing.assert_array_equal(one["features"], full["features"][17])
    assert one["labels"]["move"] == full["labels/move"][17] and one["index"] == 17
    assert one["masks"]["target"].shape == (3,)
    np.testing.assert_array_equal(ds[-1]["features"], full["features"][n - 1])
    rows = np.array([300, 2, 2, 150, 31, 0])
    many = ds[rows]
    np.testing.assert_array_equal(many["index"], rows)
    np.testing.assert_array_equal(many["features"], full["features"][rows])
    np.testing.assert_array_equal(many["masks"]["move"], full["masks/move"][rows])
    np.testing.assert_array_equal(ds[10:40:3]["labels"]["target"],
                                  full["labels/target"][10:40:3])
    assert ds[[]]["features"].shape == (0, 4)
    with pytest.raises(IndexError, match=f"index {n} is out of range"):
        ds[[1, n]]
    with pytest.raises(IndexError):
        ds[1.5]


def test_chunk_cache_is_bounded_lru(store):
    ds = chunkstore.open(store)
    cache = ChunkCache({"features": chunk_source("features", ds.features)}, max_chunks=2)
    for c in (0, 1, 0, 2):  # 1 is the least recently used when 2 arrives
        cache.get("features", c)
    assert [k[1] for k in cache._items] == [0, 2]
    with pytest.raises(ReadError, match="at least 1"):
        ChunkCache({}, max_chunks=0)


@pytest.mark.parametrize("decoder", DECODERS)
def test_fast_path_equals_zarr_for_every_array_and_chunk(store, full, decoder):
    ds = chunkstore.open(store)
    arrays = {"features": ds.features, **{f"labels/{h}": a for h, a in ds.labels.items()},
              **{f"masks/{h}": a for h, a in ds.masks.items()}}
    for name, arr in arrays.items():
        fast = dataclasses.replace(chunk_source(name, arr), decoder=decoder)
        assert fast.root is not None and fast.checksum  # the layout chunkstore writes
        slow = dataclasses.replace(fast, root=None)  # zarr's own codec pipeline
        for c in range(fast.n_chunks):
            got = read_chunk(fast, c)
            np.testing.assert_array_equal(got, read_chunk(slow, c))
            np.testing.assert_array_equal(got, full[name][c * 16:(c + 1) * 16])


def _file_rows(path: str, name: str) -> int:
    """Rows per file of an array: its shard (one write task) or its chunk."""
    a = zarr.open_array(path, path=name, mode="r")
    return int((a.shards or a.chunks)[0])


def test_unwritten_chunk_reads_as_fill_value(store, tmp_path):
    path = str(tmp_path / "holes.zarr")
    shutil.copytree(store, path)
    (Path(path) / "features" / "c" / "2" / "0").unlink()  # file 2: a chunk or a whole shard
    (Path(path) / "labels" / "move" / "c" / "2").unlink()
    u = _file_rows(path, "features")
    assert _file_rows(path, "labels/move") == u
    ds = chunkstore.open(path)
    rows = ds[np.arange(2 * u - 2, 3 * u + 2)]
    assert np.isnan(rows["features"][2:u + 2]).all()
    assert not np.isnan(rows["features"][:2]).any()
    assert not np.isnan(rows["features"][u + 2:]).any()
    assert (rows["labels"]["move"][2:u + 2] == -1).all()
    zf = zarr.open_array(path, path="features", mode="r")[2 * u - 2:3 * u + 2]
    np.testing.assert_array_equal(rows["features"], zf)


def test_corrupt_chunk_is_a_clear_error(store, tmp_path):
    path = str(tmp_path / "corrupt.zarr")
    shutil.copytree(store, path)
    chunk = Path(path) / "features" / "c" / "1" / "0"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    u = _file_rows(path, "features")  # file 1 holds rows [u, 2u): one chunk of 16, or a shard
    ds = chunkstore.open(path)
    with pytest.raises(ReadError, match=r"features/c/1/0.*checksum do not match") as e:
        for r in range(u, 2 * u, 16):  # the corrupt inner chunk is one of the file's
            ds[r]
    lo, hi = (int(v) for v in re.search(r"rows \[(\d+), (\d+)\)", str(e.value)).groups())
    assert u <= lo < hi <= 2 * u and hi - lo == 16
    with pytest.raises(ReadError, match="checksum"):
        list(ds.loader(batch_size=64))
    ds[2 * u]  # other files still read


def test_to_dask_and_to_xarray(small_sizes, store, full):
    ds = chunkstore.open(store)
    d = ds.to_dask()
    np.testing.assert_array_equal(d["labels/move"].compute(), full["labels/move"])
    x = ds.to_xarray()
    assert x["features"].dims == ("sample", "feature")
    assert x["masks_target"].dims == ("sample", "target_class")
    assert x["labels_move"].dims == ("sample",) and x["meta_group"].dims == ("sample",)
    assert list(x["feature"].values) == ds.feature_names
    assert x.attrs["n_samples"] == sum(small_sizes) and x.attrs["heads"] == "move:5,target:3"
    np.testing.assert_array_equal(x["features"].isel(sample=slice(5, 9)).values,
                                  full["features"][5:9])
    np.testing.assert_array_equal(x["masks_move"].sel(sample=[3, 100]).values,
                                  full["masks/move"][[3, 100]])
    np.testing.assert_allclose(x["features"].mean("sample").values,
                               full["features"].mean(axis=0), rtol=1e-5)


def test_default_decoder_is_blosc2_when_installed():
    import blosc2  # noqa: F401 - the test extra installs it

    assert default_decoder() == "blosc2"


def test_a_view_kept_past_the_read_does_not_fail_it(tmp_path):
    """A Dask worker's stack sampler can hold the decoding frame (and its view of the mapped
    chunk file) when the read ends: `chunkstore stats --cluster local` on the 547K store died
    with 'BufferError: cannot close exported pointers exist'. The read succeeds; the map
    closes when the view is collected."""
    from chunkstore.store.chunkfiles import MMAP_MIN_BYTES, _with_file

    payload = np.arange(MMAP_MIN_BYTES, dtype=np.uint8)
    path = tmp_path / "chunk"
    path.write_bytes(payload.tobytes())
    kept = []

    def use(data: np.ndarray) -> int:
        kept.append(data[:8])  # outlives the call, as the sampled frame's locals do
        return int(data.sum(dtype=np.int64))

    assert _with_file(str(path), use) == int(payload.sum(dtype=np.int64))
    np.testing.assert_array_equal(kept[0], payload[:8])
