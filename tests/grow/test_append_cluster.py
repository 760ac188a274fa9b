"""An append run on a real ``distributed.LocalCluster`` (2 worker processes) through the
scheduler option gives the same chunk files as one ingest of all rows."""

from __future__ import annotations

import pytest

from chunkstore import ingest
from chunkstore.ingest.append import append
from chunkstore.testing import chunk_files, make_items, write_config, write_items

pytest.importorskip("distributed")


def test_append_on_a_local_cluster_equals_one_ingest(tmp_path):
    from distributed import LocalCluster

    items = make_items([13, 30, 4, 25], seed=9)

    def cfg(name, part, store):
        return write_config(tmp_path / f"{name}.yaml", store=store,
                            paths=write_items(tmp_path / f"{name}-items", part),
                            ingest={"chunk_rows": 8, "task_chunks": 1})

    whole, grown = tmp_path / "whole.zarr", tmp_path / "grown.zarr"
    ingest(cfg("whole", items, whole), progress=False)
    ingest(cfg("a", items[:2], grown), progress=False)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                      local_directory=str(tmp_path / "dask")) as lc:
        summary = append(cfg("b", items[2:], grown), scheduler=lc.scheduler_address)
    assert summary.rows_before == 43  # the tail chunk 5 and chunks 6..8:
    assert summary.tasks_run == summary.tasks_total == 4
    assert chunk_files(grown) == chunk_files(whole)
