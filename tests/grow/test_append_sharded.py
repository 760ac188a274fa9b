"""Appending to a sharded store (format 2: one shard file per write task): the shard holding
row N is rewritten whole by one task, and the result is byte-identical to a sharded store of
all rows written the same way (the tasks and finalize of an ordered ingest)."""

from __future__ import annotations

import json
from pathlib import Path

from chunkstore import load_config
from chunkstore.core.plan import plan_writes, shard_rows_of
from chunkstore.ingest.append import append
from chunkstore.ingest.coordinator import finalize
from chunkstore.ingest.task import TaskSpec, run_task
from chunkstore.sources import open_source
from chunkstore.store import layout
from chunkstore.testing import chunk_files, make_items, write_config, write_items

A, B = [7, 30, 1, 0, 22], [5, 16, 40]  # A: 60 rows, mid-shard (shards of 24 rows)
OPTS = {"chunk_rows": 8, "task_chunks": 3}


def _sharded(tmp: Path, name: str, items: list) -> Path:
    """A complete sharded store of ``items``: created with shard_rows, every task run, finalized."""
    cfg = load_config(write_config(tmp / f"{name}.yaml", store=tmp / f"{name}.zarr",
                                   paths=write_items(tmp / f"{name}-items", items), ingest=OPTS))
    plan = plan_writes(open_source(cfg.source, cfg.schema).counts(), 8, 3)
    (tmp / f"{name}.zarr").mkdir()
    layout.create_store(cfg.store, schema=cfg.schema, compression=cfg.compression,
                        n_samples=plan.n_samples, chunk_rows=8, has_group=True,
                        config_sha256="t", shard_rows=shard_rows_of(plan))
    config_json = json.dumps({"config": cfg.to_dict(), "file": cfg.file})
    for t in plan.tasks:
        run_task(TaskSpec(cfg.store, config_json, True, t))
    finalize(cfg.store, plan, cfg)
    return tmp / f"{name}.zarr"


def test_append_to_a_sharded_store_equals_one_sharded_store(tmp_path):
    items = make_items(A + B, seed=8)
    whole = _sharded(tmp_path, "whole", items)
    grown = _sharded(tmp_path, "grown", items[:len(A)])
    cfg = write_config(tmp_path / "b.yaml", store=grown, ingest=OPTS,
                       paths=write_items(tmp_path / "b-items", items[len(A):]))
    summary = append(cfg, workers=2)
    assert summary.rows_before == 60
    assert summary.tasks_total == 4  # the shards from [48, 72) (row 60 is in it) to [120, 121)
    assert chunk_files(grown) == chunk_files(whole)
