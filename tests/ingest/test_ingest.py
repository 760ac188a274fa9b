"""End-to-end ingest with real worker processes and real files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import zarr

from chunkstore import StoreExistsError, StoreLockedError, ingest, load_config
from chunkstore.sources import open_source
from chunkstore.store.journal import StoreLock, completed_tasks
from chunkstore.testing import (
    HEADS,
    assert_store_equals,
    chunk_files,
    concat,
    make_items,
    write_config,
    write_items,
)

GRID = {
    "single-row items": [1] * 7,
    "N below one chunk": [3],
    "N multiple of chunk, mixed items": [5, 1, 0, 9, 4, 13],
    "one item spanning many chunks": [41],
    "N not a multiple of chunk": [2, 3, 1, 7, 11, 1, 1, 4, 0],
}


@pytest.mark.parametrize("workers, task_chunks",
                         [(1, 1), pytest.param(2, 3, marks=pytest.mark.slow)])
@pytest.mark.parametrize("sizes", list(GRID.values()), ids=list(GRID))
def test_round_trip_equals_source(tmp_path, sizes, workers, task_chunks):
    items = make_items(sizes, seed=len(sizes))
    cfg = write_config(tmp_path / "c.yaml", store=tmp_path / "s.zarr",
                       paths=write_items(tmp_path / "b", items),
                       ingest={"workers": workers, "chunk_rows": 4, "task_chunks": task_chunks})
    summary = ingest(cfg, progress=False)
    assert summary.rows == sum(sizes) and summary.tasks_run == summary.tasks_total
    assert_store_equals(tmp_path / "s.zarr", items)
    g = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    meta = g.attrs["chunkstore"]
    assert meta["n_samples"] == sum(sizes) and meta["chunk_rows"] == 4
    assert meta["format_version"] == 2 and meta["feature_names"] == ["f0", "f1", "f2", "f3"]
    assert meta["heads"]["move"]["classes"] == 5
    assert g["features"].chunks == (4, 4) and g["masks/target"].chunks == (4, 3)
    # statistics merged from the tasks' records equal numpy on the stored values
    x = concat(items, "strategic_features").astype(np.float64)
    np.testing.assert_allclose(g["stats/all/mean"][:], x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(g["stats/all/std"][:], x.std(0), rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(g["stats/all/min"][:], x.min(0))
    np.testing.assert_array_equal(g["stats/all/count"][:], np.full(4, sum(sizes)))
    for h, k in HEADS.items():
        np.testing.assert_array_equal(g[f"stats/all/class_counts/{h}"][:],
                                      np.bincount(concat(items, f"labels_{h}"), minlength=k))


@pytest.mark.slow
def test_one_and_many_workers_write_identical_bytes(tmp_path):
    items = make_items([7, 30, 1, 0, 22, 5, 16], seed=9)
    paths = write_items(tmp_path / "b", items)
    stores = []
    for w in (1, 3):
        store = tmp_path / f"w{w}.zarr"
        ingest(write_config(tmp_path / f"c{w}.yaml", store=store, paths=paths,
                            ingest={"workers": w, "chunk_rows": 8, "task_chunks": 1}),
               progress=False)
        stores.append(store)
    a, b = chunk_files(stores[0]), chunk_files(stores[1])
    assert a.keys() == b.keys() and len(a) > 20
    assert all(a[k] == b[k] for k in a)
    ga, gb = (zarr.open_group(str(s), mode="r") for s in stores)
    for name in ("mean", "std", "min", "max", "count"):
        np.testing.assert_array_equal(ga[f"stats/all/{name}"][:], gb[f"stats/all/{name}"][:])


def test_rerun_of_complete_store_does_nothing(tmp_path):
    items = make_items([10, 10])
    cfg = write_config(tmp_path / "c.yaml", store=tmp_path / "s.zarr",
                       paths=write_items(tmp_path / "b", items), ingest={"chunk_rows": 4})
    ingest(cfg, progress=False)
    before = chunk_files(tmp_path / "s.zarr")
    again = ingest(cfg, progress=False)
    assert again.tasks_run == 0 and again.tasks_skipped == again.tasks_total
    assert chunk_files(tmp_path / "s.zarr") == before


def test_different_config_needs_overwrite(tmp_path):
    items = make_items([10, 10])
    paths = write_items(tmp_path / "b", items)
    ingest(write_config(tmp_path / "c.yaml", store=tmp_path / "s.zarr", paths=paths,
                        ingest={"chunk_rows": 4}), progress=False)
    other = write_config(tmp_path / "d.yaml", store=tmp_path / "s.zarr", paths=paths,
                         ingest={"chunk_rows": 8})
    with pytest.raises(StoreExistsError, match="different config.*--overwrite"):
        ingest(other, progress=False)
    assert_store_equals(tmp_path / "s.zarr", items)  # untouched
    ingest(other, progress=False, overwrite=True)
    assert zarr.open_group(str(tmp_path / "s.zarr"), mode="r")["features"].chunks == (8, 4)
    assert_store_equals(tmp_path / "s.zarr", items)


def test_foreign_directory_is_never_overwritten(tmp_path):
    (tmp_path / "s.zarr").mkdir()
    (tmp_path / "s.zarr" / "precious.txt").write_text("keep me")
    cfg = write_config(tmp_path / "c.yaml", store=tmp_path / "s.zarr",
                       paths=write_items(tmp_path / "b", make_items([3])))
    with pytest.raises(StoreExistsError, match="not a chunkstore store"):
        ingest(cfg, progress=False, overwrite=True)
    assert (tmp_path / "s.zarr" / "precious.txt").read_text() == "keep me"


def test_live_lock_is_obeyed_and_stale_lock_is_removed(tmp_path, capsys):
    items = make_items([6])
    cfg = write_config(tmp_path / "c.yaml", store=tmp_path / "s.zarr",
                       paths=write_items(tmp_path / "b", items))
    with StoreLock(str(tmp_path / "s.zarr")), pytest.raises(StoreLockedError,
                                                             match="locked by another ingest"):
        ingest(cfg, progress=False)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = tmp_path / "s.zarr" / "_chunkstore" / "lock"
    lock.write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename,
                                "process_started": time.time() - 5}))
    ingest(cfg, progress=False)
    assert "removing stale lock" in capsys.readouterr().err
    assert_store_equals(tmp_path / "s.zarr", items)
    assert not lock.exists()


KILL_CONFIG = """
store: {store}
schema:
  features: 64
  heads: {{a: 7, b: 3}}
source: {{kind: synthetic, n_samples: 30000, seed: 5, item_rows: [1, 900]}}
ingest: {{workers: 2, chunk_rows: 256, task_chunks: 1}}
"""


@pytest.mark.slow
def test_sigkill_mid_ingest_then_resume_is_exact(tmp_path):
    store = tmp_path / "s.zarr"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(KILL_CONFIG.format(store=store))
    log = tmp_path / "stderr.txt"
    with open(log, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "chunkstore.cli", "ingest", str(cfg),
                                 "--quiet"], start_new_session=True, stderr=err)
    deadline = time.time() + 120
    while len(completed_tasks(str(store))) < 5:
        assert proc.poll() is None, log.read_text()
        assert time.time() < deadline
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    total = 118  # ceil(30000 / 256)
    done = len(completed_tasks(str(store)))
    assert 5 <= done < total, "the kill came too late to test anything"
    assert zarr.open_group(str(store), mode="r").attrs["chunkstore"]["status"] == "incomplete"

    summary = ingest(cfg, progress=False)  # resume (the dead coordinator's lock is stale)
    assert summary.tasks_skipped == done and summary.tasks_run == total - done

    # identical to an uninterrupted run, and equal to the source
    fresh = tmp_path / "fresh.yaml"
    fresh.write_text(KILL_CONFIG.format(store=tmp_path / "fresh.zarr"))
    ingest(fresh, progress=False)
    assert chunk_files(store) == chunk_files(tmp_path / "fresh.zarr")
    config = load_config(cfg)
    src = open_source(config.source, config.schema)
    g = zarr.open_group(str(store), mode="r")
    assert g.attrs["chunkstore"]["status"] == "complete"
    row = 0
    for item, n in enumerate(src.counts()):
        b = src.read(item, 0, n)
        np.testing.assert_array_equal(g["features"][row:row + n], b.features)
        np.testing.assert_array_equal(g["labels/a"][row:row + n], b.labels["a"])
        np.testing.assert_array_equal(g["masks/b"][row:row + n], b.masks["b"])
        np.testing.assert_array_equal(g["meta/group"][row:row + n], b.group)
        row += n
    assert row == 30000


def test_resume_removes_temp_files_of_killed_writers(tmp_path):
    items = make_items([8, 8, 8])
    cfg = write_config(tmp_path / "c.yaml", store=tmp_path / "s.zarr",
                       paths=write_items(tmp_path / "b", items),
                       ingest={"chunk_rows": 4, "task_chunks": 1})
    ingest(cfg, progress=False)
    before = chunk_files(tmp_path / "s.zarr")
    from chunkstore.store.journal import record_path
    from chunkstore.store.layout import update_attrs

    update_attrs(str(tmp_path / "s.zarr"), status="incomplete")  # as if killed in task 2
    record_path(str(tmp_path / "s.zarr"), 2).unlink()
    stray = tmp_path / "s.zarr" / "labels" / "move" / "c" / "2.b44c0bd695a644da.partial"
    stray.write_bytes(b"half a chunk")
    summary = ingest(cfg, progress=False)
    assert summary.tasks_run == 1 and not stray.exists()
    assert chunk_files(tmp_path / "s.zarr") == before
