"""Sharded stores (format 2): every sample array packed into one shard file per write task.

The tasks run through the real worker function (``run_task``), in this process and in a spawned
worker process (where the zarrs pipeline is used when installed), into a store created by
``layout.create_store(shard_rows=...)``, as the ordered ingest creates it.
"""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import numpy as np
import pytest
import zarr

from chunkstore import load_config
from chunkstore.core.plan import check_shards, plan_writes, shard_rows_of
from chunkstore.core.rowhash import row_hashes
from chunkstore.errors import ReadError
from chunkstore.ingest.task import TaskSpec, init_worker, run_task
from chunkstore.sources import open_source
from chunkstore.store import layout
from chunkstore.store.chunkfiles import chunk_source, read_chunk
from chunkstore.testing import chunk_files, concat, make_items, write_config, write_items

SIZES = [7, 30, 1, 0, 22, 5, 16, 40]  # 121 rows: chunks of 8, tasks of 3 chunks, last shard short


def _sharded_store(tmp: Path, name: str, items: list, *, pool: bool = False,
                   reverse: bool = False) -> Path:
    cfg = load_config(write_config(tmp / f"{name}.yaml", store=tmp / f"{name}.zarr",
                                   paths=write_items(tmp / "b", items),
                                   ingest={"chunk_rows": 8, "task_chunks": 3}))
    source = open_source(cfg.source, cfg.schema)
    plan = plan_writes(source.counts(), 8, 3)
    check_shards(plan, shard_rows_of(plan))
    (tmp / f"{name}.zarr").mkdir()
    layout.create_store(cfg.store, schema=cfg.schema, compression=cfg.compression,
                        n_samples=plan.n_samples, chunk_rows=8, has_group=True,
                        config_sha256="t", shard_rows=shard_rows_of(plan))
    config_json = json.dumps({"config": cfg.to_dict(), "file": cfg.file})
    specs = [TaskSpec(cfg.store, config_json, True, t) for t in plan.tasks]
    if reverse:
        specs.reverse()
    if pool:
        with multiprocessing.get_context("spawn").Pool(1, init_worker, (1,)) as p:
            p.map(run_task, specs)
    else:
        for spec in specs:
            run_task(spec)
    return tmp / f"{name}.zarr"


@pytest.fixture
def items() -> list:
    items = make_items(SIZES, seed=6)
    items[4][f"masks_{'move'}"][:] = 0  # rows 38..60: inner chunk 5 of this mask is all fill
    return items


def test_sharded_store_reads_back_and_has_one_file_per_task(tmp_path, items):
    store = _sharded_store(tmp_path, "s", items)
    g = zarr.open_group(str(store), mode="r")
    assert g.attrs["chunkstore"]["shard_rows"] == 24
    assert g["features"].chunks == (8, 4) and g["features"].shards == (24, 4)
    np.testing.assert_array_equal(g["features"][:], concat(items, "strategic_features"))
    np.testing.assert_array_equal(g["masks/move"][:], concat(items, "masks_move"))
    np.testing.assert_array_equal(g["meta/row_hash"][:],
                                  row_hashes(concat(items, "strategic_features")))
    files = [k for k in chunk_files(store) if not k.endswith("zarr.json")]
    arrays = layout.stored_sample_arrays(g)
    assert len(files) == len(arrays) * 6  # 121 rows / 24 = 6 shards per array, not 16 chunks


def test_fast_chunk_reads_of_a_sharded_store_equal_zarr(tmp_path, items):
    store = _sharded_store(tmp_path, "s", items)
    g = zarr.open_group(str(store), mode="r")
    for name in layout.stored_sample_arrays(g):
        src = chunk_source(name, g[name])
        assert src.root is not None and src.shard_chunks == 3  # the direct path, not zarr's
        for c in range(src.n_chunks):
            np.testing.assert_array_equal(read_chunk(src, c), g[name][c * 8:(c + 1) * 8])
    src = chunk_source("masks/move", g["masks/move"])
    index = np.frombuffer(Path(src.paths[1]).read_bytes()[-52:-4], "<u8").reshape(3, 2)
    assert (index[2] == 2**64 - 1).all()  # zarr left the all-fill inner chunk 5 out ...
    np.testing.assert_array_equal(read_chunk(src, 5), np.zeros((8, 5), np.int8))  # ... fill


def test_corrupt_shard_is_a_read_error(tmp_path, items):
    store = _sharded_store(tmp_path, "s", items)
    g = zarr.open_group(str(store), mode="r")
    src = chunk_source("features", g["features"])
    raw = bytearray(Path(src.paths[1]).read_bytes())
    raw[40] ^= 0xFF  # inside the first inner chunk of shard 1 (chunk 3)
    Path(src.paths[1]).write_bytes(bytes(raw))
    with pytest.raises(ReadError, match="chunk 3 .* is corrupt"):
        read_chunk(src, 3)
    np.testing.assert_array_equal(read_chunk(src, 4), g["features"][32:40])
    raw[-2] ^= 0xFF  # the shard index
    Path(src.paths[1]).write_bytes(bytes(raw))
    with pytest.raises(ReadError, match="index does not match its checksum"):
        read_chunk(src, 4)


def test_shards_are_byte_identical_across_task_order_and_codec_pipelines(tmp_path, items):
    a = chunk_files(_sharded_store(tmp_path, "a", items))
    b = chunk_files(_sharded_store(tmp_path, "b", items, pool=True, reverse=True))
    assert a.keys() == b.keys() and len(a) > 50
    assert [k for k in a if a[k] != b[k]] == []
