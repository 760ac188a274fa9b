"""Only our own files are deleted; unfinished and corrupt stores fail or warn with one clear
message, never a traceback or a runaway allocation."""

from __future__ import annotations

import json
import os
import resource
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr

import chunkstore
from chunkstore import ingest
from chunkstore.core.schema import Compression, Schema
from chunkstore.errors import IncompleteStoreWarning, ReadError, StoreExistsError
from chunkstore.interop.export import export
from chunkstore.report.info import format_info, store_info
from chunkstore.stats.compute import compute_stats
from chunkstore.store import layout
from chunkstore.testing import make_items, write_config, write_items


def _config(tmp: Path, store: Path) -> Path:
    items = make_items([37, 5, 60, 23], seed=3)
    return write_config(tmp / "c.yaml", store=store, paths=write_items(tmp / "b", items),
                        ingest={"chunk_rows": 8, "task_chunks": 2})


def test_unknown_files_in_the_journal_dir_mean_not_a_store(tmp_path):
    store = tmp_path / "s.zarr"
    (store / "_chunkstore").mkdir(parents=True)
    mine = store / "_chunkstore" / "notes.txt"
    mine.write_text("my notes")
    cfg = _config(tmp_path, store)
    for overwrite in (False, True):
        with pytest.raises(StoreExistsError, match="notes.txt"):
            ingest(cfg, progress=False, overwrite=overwrite)
    assert mine.read_text() == "my notes"


def test_overwrite_never_follows_a_journal_symlink_out_of_the_store(tmp_path):
    cfg = _config(tmp_path, tmp_path / "s.zarr")
    ingest(cfg, progress=False)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "lock").write_text("precious")
    (outside / "tasks").mkdir()
    (outside / "tasks" / "000000.npz").write_text("precious too")
    journal = tmp_path / "s.zarr" / "_chunkstore"
    os.rename(journal, tmp_path / "old-journal")
    os.symlink(outside, journal)
    with pytest.raises(StoreExistsError, match="symbolic link"):
        ingest(cfg, progress=False, overwrite=True)
    assert (outside / "lock").read_text() == "precious"
    assert (outside / "tasks" / "000000.npz").read_text() == "precious too"


def test_overwrite_removes_a_symlink_in_the_store_not_its_target(tmp_path):
    cfg = _config(tmp_path, tmp_path / "s.zarr")
    ingest(cfg, progress=False)
    outside = tmp_path / "data"
    outside.mkdir()
    (outside / "keep.bin").write_bytes(b"x")
    os.symlink(outside, tmp_path / "s.zarr" / "link")
    ingest(cfg, progress=False, overwrite=True)
    assert (outside / "keep.bin").read_bytes() == b"x"
    assert chunkstore.open(str(tmp_path / "s.zarr")).n_samples == 125


def test_corrupt_chunk_in_export_and_stats_is_one_message_naming_it(tmp_path):
    cfg = _config(tmp_path, tmp_path / "s.zarr")
    ingest(cfg, progress=False)
    chunk = tmp_path / "s.zarr" / "features" / "c" / "2" / "0"
    data = bytearray(chunk.read_bytes())
    data[-1] ^= 0xFF
    chunk.write_bytes(bytes(data))
    features = zarr.open_array(str(tmp_path / "s.zarr"), path="features", mode="r")
    unit = int((features.shards or features.chunks)[0])  # rows per file: a shard or a chunk
    for run in (lambda: export(str(tmp_path / "s.zarr"), str(tmp_path / "out"), format="npy"),
                lambda: compute_stats(str(tmp_path / "s.zarr"), progress=False)):
        with pytest.raises(ReadError, match=rf"features/c/2/0.*rows \[{2 * unit}, "):
            run()


def test_unfinished_streaming_store_reads_as_zero_rows_with_a_warning(tmp_path):
    """A streaming store is created at 2^40 rows; before its ingest ends nothing is placed."""
    schema = Schema.from_dict({"features": 893, "heads": {"move": 3}})
    store = str(tmp_path / "s.zarr")
    os.makedirs(store)
    layout.create_store(store, schema=schema, compression=Compression(), n_samples=2**40,
                        chunk_rows=64, has_group=False, config_sha256="x", has_source=True,
                        extra_attrs={"placement": "streaming", "n_items": 3, "n_samples": 0})
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.warns(IncompleteStoreWarning, match="streaming ingest that has not finished"):
        ds = chunkstore.open(store)
    assert len(ds) == 0
    with pytest.raises(ReadError, match="not finished"):
        ds.to_dask()
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # KiB
    assert list(ds.loader(batch_size=8)) == []  # no runaway over the preallocated 2^40 rows
    info = store_info(store)
    assert sum(raw for raw, _ in info.bytes_by_node.values()) < 1 << 20
    assert "INCOMPLETE: streaming ingest, 0 chunks committed" in format_info(info)
    assert np.asarray(json.loads((Path(store) / "zarr.json").read_text())["attributes"]
                      ["chunkstore"]["n_samples"]) == 0


def test_hdf5_export_of_a_feature_name_with_a_nul(tmp_path):
    pytest.importorskip("h5py")
    import h5py

    items = make_items([20], seed=1)
    cfg = write_config(tmp_path / "c.yaml", store=tmp_path / "s.zarr",
                       paths=write_items(tmp_path / "b", items), ingest={"chunk_rows": 8})
    d = yaml.safe_load(Path(cfg).read_text())
    d["schema"]["features"] = {"count": 4, "names": ["a\x00b", "f1", "f2", "f3"]}
    Path(cfg).write_text(yaml.safe_dump(d))
    ingest(cfg, progress=False)
    export(str(tmp_path / "s.zarr"), str(tmp_path / "o.h5"))
    with h5py.File(tmp_path / "o.h5") as f:
        assert json.loads(f.attrs["feature_names"])[0] == "a\x00b"
