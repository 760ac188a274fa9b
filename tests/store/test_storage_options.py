"""Storage options belong to one store: two S3 endpoints in one process, each store read with
its own; ``fsspec.config.conf`` is never written. And what a store path that cannot be a store
(a file, a dangling link) reports.

The two endpoints are two moto server *processes*: moto's in-process ``ThreadedMotoServer``
keeps one backend per process, so two of them in this process would serve the same buckets and
a store read through the wrong endpoint would still be found.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pytest
import zarr

import chunkstore
from chunkstore import NotAStoreError, ingest
from chunkstore.store import layout
from chunkstore.store.journal import completed_tasks
from chunkstore.store.urls import configure, open_group, storage_options, store_path
from chunkstore.store.view import StoreView

pytestmark = pytest.mark.s3

SAMPLE_ARRAYS = ("features", "labels/a", "masks/a", "labels/b", "masks/b")


@pytest.fixture(scope="module")
def endpoints(moto_server) -> list[dict[str, Any]]:
    """Storage options of two separate moto S3 servers on 127.0.0.1, bucket-0 on the first
    and bucket-1 on the second only."""
    options = []
    for i in range(2):
        opts = moto_server()
        fsspec.filesystem("s3", **opts, skip_instance_cache=True).mkdir(f"bucket-{i}")
        options.append(opts)
    return options


def _config(store: str, n_samples: int, seed: int, **extra: Any) -> dict[str, Any]:
    return {"store": store, "schema": {"features": 6, "heads": {"a": 4, "b": 3}},
            "source": {"kind": "synthetic", "n_samples": n_samples, "seed": seed},
            "ingest": {"workers": 2, "chunk_rows": 64}, "stats": {"correlation": False},
            **extra}


def _arrays(group: Any) -> dict[str, np.ndarray]:
    return {name: group[name][:] for name in SAMPLE_ARRAYS}


@pytest.fixture
def memory_stores() -> Iterator[str]:
    """A ``memory://`` prefix for reference stores, emptied afterwards."""
    yield "memory://chunkstore-test-options"
    memory = fsspec.filesystem("memory")
    if memory.exists("/chunkstore-test-options"):
        memory.rm("/chunkstore-test-options", recursive=True)


@pytest.mark.slow
def test_two_endpoints_in_one_process_each_store_uses_its_own(endpoints, memory_stores):
    conf_before = copy.deepcopy(fsspec.config.conf)
    stores = [("s3://bucket-0/a.zarr", 300, 1), ("s3://bucket-1/b.zarr", 450, 2)]
    expected = []
    for i, (url, n, seed) in enumerate(stores):
        reference = f"{memory_stores}/{i}.zarr"  # written by threads: the same arrays
        ingest(_config(reference, n, seed), progress=False)
        expected.append(_arrays(open_group(reference)))
        # worker processes register the options themselves (ingest's initializer)
        summary = ingest(_config(url, n, seed, storage_options=endpoints[i]), progress=False)
        assert summary.rows == n
    assert fsspec.config.conf == conf_before  # ingest wrote no process-wide fsspec defaults

    opened = [chunkstore.open(url, storage_options=endpoints[i])
              for i, (url, _, _) in enumerate(stores)]
    assert fsspec.config.conf == conf_before
    # Store 0 read again *after* store 1's options were given: with the old per-protocol
    # defaults (fsspec.config.conf["s3"]), every new filesystem would now point at endpoint 1,
    # where bucket-0 does not exist: the re-open, the journal listing and the byte count of
    # store 0 below would all fail.
    for i, (url, n, _) in enumerate(stores):
        ds = chunkstore.open(url)  # options registered for this store earlier
        for got in (ds, opened[i]):
            assert got.n_samples == n and got.status == "complete"
            for name, want in expected[i].items():
                np.testing.assert_array_equal(got.group[name][:], want, err_msg=name)
        assert ds.storage_options["endpoint_url"] == endpoints[i]["endpoint_url"]
        assert len(completed_tasks(url)) == -(-n // 64)  # one task per chunk here
        assert layout.stored_bytes(url) > 0
        np.testing.assert_allclose(ds.stats().mean,
                                   expected[i]["features"].astype(np.float64).mean(0), rtol=1e-12)
    # the other endpoint really does not hold the store: the options made the difference
    assert not fsspec.filesystem("s3", **endpoints[1]).exists("bucket-0/a.zarr/zarr.json")
    g = zarr.open_group(stores[1][0], mode="r", storage_options=endpoints[1])  # plain zarr
    assert g.attrs["chunkstore"]["n_samples"] == 450
    assert fsspec.config.conf == conf_before


def test_options_are_found_by_the_longest_registered_store_url():
    configure("s3://opt-bucket/x.zarr/", {"endpoint_url": "http://one", "anon": True})
    configure("s3://opt-bucket/x.zarr/inner.zarr", {"endpoint_url": "http://two"})
    conf_before = copy.deepcopy(fsspec.config.conf)
    assert storage_options("s3://opt-bucket/x.zarr")["endpoint_url"] == "http://one"
    assert storage_options("S3://opt-bucket/x.zarr/_chunkstore/lock")["anon"] is True
    assert storage_options("s3://opt-bucket/x.zarr/inner.zarr/c/0") == {
        "use_listings_cache": False, "endpoint_url": "http://two"}
    assert storage_options("s3://opt-bucket/x.zarr2") == {"use_listings_cache": False}
    assert storage_options("gs://opt-bucket/x.zarr") == {"use_listings_cache": False}
    configure("s3://opt-bucket/x.zarr", None)  # None keeps what is registered
    assert storage_options("s3://opt-bucket/x.zarr")["anon"] is True
    configure("s3://opt-bucket/x.zarr", {"use_listings_cache": True})  # a mapping replaces
    assert storage_options("s3://opt-bucket/x.zarr") == {"use_listings_cache": True}
    assert storage_options("/data/x.zarr") == {} and storage_options("file:///data/x") == {}
    configure("/data/x.zarr", {"anon": True})  # local paths take no options
    assert storage_options("/data/x.zarr") == {}
    fs = store_path("s3://opt-bucket/x.zarr/inner.zarr/c").fs  # no request is made here
    assert fs.storage_options["endpoint_url"] == "http://two"
    assert fs.storage_options["use_listings_cache"] is False
    assert fsspec.config.conf == conf_before


def test_a_file_is_not_a_store(tmp_path: Path):
    path = tmp_path / "x.zarr"
    path.write_text("not a store")
    for read in (layout.read_attrs, StoreView, chunkstore.open):
        with pytest.raises(NotAStoreError, match=r"no chunkstore store at .*it is a file, not a "
                                                 r"directory"):
            read(str(path))


def test_a_dangling_symlink_is_not_a_store(tmp_path: Path):
    path = tmp_path / "x.zarr"
    path.symlink_to(tmp_path / "gone.zarr")
    for read in (layout.read_attrs, StoreView, chunkstore.open):
        with pytest.raises(NotAStoreError, match=r"symbolic link to .*gone\.zarr'?, which does "
                                                 r"not exist"):
            read(str(path))
