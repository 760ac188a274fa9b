"""The zarrs (Rust) codec pipeline in write workers: used when installed, same bytes either way."""

from __future__ import annotations

import multiprocessing

import pytest
import zarr

from chunkstore import ingest
from chunkstore.ingest.task import use_zarrs
from chunkstore.testing import (
    assert_store_equals,
    chunk_files,
    make_items,
    write_config,
    write_items,
)

zarrs = pytest.importorskip("zarrs", reason="the zarrs codec pipeline is an optional speed-up")


def test_write_workers_switch_to_zarrs_for_local_stores_only(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        assert pool.apply(use_zarrs, (str(tmp_path / "s.zarr"),)) is True
    with ctx.Pool(1) as pool:
        assert pool.apply(use_zarrs, ("s3://bucket/s.zarr",)) is False
    # never in the calling process: a process-wide zarr setting must not leak into the user's
    assert use_zarrs(str(tmp_path / "s.zarr")) is False
    assert zarr.config.get("codec_pipeline.path") != "zarrs.ZarrsCodecPipeline"


def test_chunk_files_are_byte_identical_with_and_without_zarrs(tmp_path, monkeypatch):
    items = make_items([7, 30, 1, 0, 22, 5, 16, 40], seed=5)
    paths = write_items(tmp_path / "b", items)
    stores = {}
    for mode in ("1", "0"):  # CHUNKSTORE_ZARRS=0: zarr-python's own pipeline
        monkeypatch.setenv("CHUNKSTORE_ZARRS", mode)
        stores[mode] = tmp_path / f"z{mode}.zarr"
        ingest(write_config(tmp_path / f"c{mode}.yaml", store=stores[mode], paths=paths,
                            ingest={"workers": 2, "chunk_rows": 8, "task_chunks": 1}),
               progress=False)
    a, b = chunk_files(stores["1"]), chunk_files(stores["0"])
    assert a.keys() == b.keys() and len(a) > 20
    assert [k for k in a if a[k] != b[k]] == []
    assert_store_equals(str(stores["1"]), items)


def test_sharded_store_bytes_do_not_depend_on_blosc_threads(tmp_path):
    """zarrs encodes a shard's inner chunks on ``threading.max_workers`` threads; with more than
    one it laid them out in the order they finished (same data, other bytes on every run)."""
    items = make_items([70, 3, 0, 41, 90, 12], seed=9)
    paths = write_items(tmp_path / "b", items)
    stores = {}
    for threads in (1, 3):
        stores[threads] = tmp_path / f"t{threads}.zarr"
        ingest(write_config(tmp_path / f"c{threads}.yaml", store=stores[threads], paths=paths,
                            ingest={"workers": 2, "chunk_rows": 4, "task_chunks": 16,
                                    "blosc_threads": threads}), progress=False)
    assert zarr.open_array(str(stores[1] / "features")).shards[0] == 64
    a, b = chunk_files(stores[1]), chunk_files(stores[3])
    assert a.keys() == b.keys() and [k for k in a if a[k] != b[k]] == []
    assert_store_equals(str(stores[3]), items)
