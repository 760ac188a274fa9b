"""The loader's pipeline on windows of many gather jobs: a window decoded once, its batches
gathered a job (~1,024 rows) at a time by other threads while the next window decodes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import chunkstore
from chunkstore.read.pipeline import JOB_ROWS
from chunkstore.testing import make_items, read_all, write_config, write_items


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """6,100 rows in chunks of 500 (13 chunks, the last short)."""
    tmp: Path = tmp_path_factory.mktemp("pipeline")
    items = make_items([1500, 2600, 2000], seed=4)
    cfg = write_config(tmp / "c.yaml", store=tmp / "s.zarr", paths=write_items(tmp / "b", items),
                       ingest={"chunk_rows": 500})
    chunkstore.ingest(cfg, progress=False)
    return str(tmp / "s.zarr")


@pytest.mark.parametrize("window_chunks", [None, 5])
def test_big_windows_gather_every_row_once_and_right_for_any_threads(store, window_chunks):
    ds = chunkstore.open(store)
    full = read_all(store)
    runs = []
    for threads, prefetch in ((1, 0), (2, 1), (3, 2)):
        loader = ds.loader(batch_size=100, seed=2, window_chunks=window_chunks,
                           threads=threads, prefetch=prefetch)
        loader.set_epoch(1)
        assert loader.window_chunks * 500 > JOB_ROWS  # several gather jobs per window
        batches = list(loader)
        rows = np.concatenate([b["index"] for b in batches])
        assert sorted(rows.tolist()) == list(range(6100))
        for b in batches:
            np.testing.assert_array_equal(b["features"], full["features"][b["index"]])
            for h in b["labels"]:
                np.testing.assert_array_equal(b["labels"][h], full[f"labels/{h}"][b["index"]])
                np.testing.assert_array_equal(b["masks"][h], full[f"masks/{h}"][b["index"]])
        runs.append(rows)
        assert loader.chunks_decoded == 13  # every chunk decoded once, whatever the threads
    assert all(np.array_equal(runs[0], r) for r in runs[1:])


def test_leaving_an_epoch_early_stops_cleanly_and_the_next_is_whole(store):
    ds = chunkstore.open(store)
    loader = ds.loader(batch_size=100, seed=2, window_chunks=4)
    it = iter(loader)
    next(it)
    it.close()
    assert sum(len(b["index"]) for b in loader) == 6100
