"""The python source: ordered and streaming placement, exactly-once after SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st
from killing import assert_stats_exact, kill_after
from producers import HEADS, make, process

from chunkstore import SourceError, ingest
from chunkstore.ingest.streaming import runs_of
from chunkstore.store.journal import completed_tasks
from chunkstore.testing import chunk_files, write_items

SIZES = {
    "mixed": [0, 1, 5, 8, 30, 0, 17, 3, 9, 100, 2, 7, 8, 16, 1],
    "all below a chunk": [3, 2, 7, 1, 5, 6],
    "one big item": [203],
    "chunk multiples": [8, 16, 24],
}


@pytest.mark.parametrize("workers", [1, 2, pytest.param(4, marks=pytest.mark.slow)])
@pytest.mark.parametrize("sizes", [  # the quick loop runs "mixed" only
    pytest.param(v, id=k, marks=() if k == "mixed" else pytest.mark.slow)
    for k, v in SIZES.items()])
def test_streaming_exactly_once(assert_exactly_once, python_config, tmp_path, sizes, workers):
    items = [(k, n) for k, n in enumerate(sizes)]
    cfg = python_config(tmp_path / "s.zarr")
    summary = ingest(cfg, items=items, process=process, workers=workers, progress=False)
    assert summary.rows == sum(sizes) and summary.leftover_rows <= workers * 8
    assert_exactly_once(tmp_path / "s.zarr", items)


@pytest.mark.slow
def test_ordered_with_count_equals_file_planner(python_config, tmp_path):
    items = [(k, n) for k, n in enumerate([5, 0, 12, 1, 30, 7])]
    ordered = ingest(python_config(tmp_path / "o.zarr"), items=items, process=process,
                     count="producers:rows_of", progress=False)
    assert ordered.leftover_rows is None
    batches = []
    for item in items:
        d = make(item)
        batches.append({"strategic_features": d["features"], "group": d["group"],
                        **{f"labels_{h}": d["labels"][h] for h in HEADS},
                        **{f"masks_{h}": d["masks"][h] for h in HEADS}})
    files = {"store": str(tmp_path / "f.zarr"), "schema": {"features": 4, "heads": HEADS},
             "source": {"kind": "npz", "paths": write_items(tmp_path / "b", batches)},
             "ingest": {"chunk_rows": 8}}
    ingest(files, progress=False)
    a, b = chunk_files(tmp_path / "o.zarr"), chunk_files(tmp_path / "f.zarr")
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)
    counted = ingest(python_config(tmp_path / "c.zarr", counting_pass=True), items=items,
                     process=process, progress=False)
    assert chunk_files(tmp_path / "c.zarr") == a and counted.rows == 55


def test_count_disagreeing_with_process_is_an_error(python_config, tmp_path):
    items = [(0, 5), (1, 4)]
    with pytest.raises(SourceError, match=r"item 1 \(\(1, 4\)\): process\(\) returned 4 rows; "
                                          r"count\(\) said 5"):
        ingest(python_config(tmp_path / "s.zarr"), items=items, process=process,
               count="producers:rows_of_plus_one_for_item_1", progress=False)


def run_cli(cfg_path: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "chunkstore.cli", "ingest", str(cfg_path),
                             "--quiet"], start_new_session=True, env={**os.environ, **env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def write_yaml(python_config, tmp_path: Path, sizes: list[int],
               process_fn: str = "producers:process_slow"
               ) -> tuple[Path, list[tuple[int, int]], dict]:
    cfg = python_config(tmp_path / "s.zarr", items="producers:items_from_env", process=process_fn)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {"CHUNKSTORE_TEST_SIZES": ",".join(map(str, sizes)),
           "PYTHONPATH": cfg["source"]["path"][0]}
    return path, [(k, n) for k, n in enumerate(sizes)], env


KILL_SIZES = [int(n) for n in np.random.default_rng(7).integers(0, 40, size=160)]


@pytest.mark.slow
@pytest.mark.parametrize("when", ["start", "mid-ingest", "pack", "pack-mid"])
def test_sigkill_then_resume_is_exactly_once(assert_exactly_once, python_config, tmp_path, when,
                                             monkeypatch):
    path, items, env = write_yaml(python_config, tmp_path, KILL_SIZES)
    store = tmp_path / "s.zarr"
    jdir = store / "_chunkstore"
    if when != "mid-ingest":
        env["CHUNKSTORE_PAUSE_AT"] = when  # the coordinator pauses there for the kill
    proc = run_cli(path, env)
    deadline = time.time() + 120
    while True:
        assert proc.poll() is None and time.time() < deadline, "ingest ended before the kill"
        if when == "mid-ingest" and len(completed_tasks(str(store))) >= 10:
            break
        if (jdir / f"paused-{when}").exists():
            break
        time.sleep(0.002)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert zarr.open_group(str(store), mode="r").attrs["chunkstore"]["status"] == "incomplete"
    for k, v in env.items():
        if k != "CHUNKSTORE_PAUSE_AT":
            monkeypatch.setenv(k, v)
    monkeypatch.syspath_prepend(env["PYTHONPATH"])
    summary = ingest(path, progress=False)
    if when != "start":
        assert summary.tasks_skipped > 0  # committed items were not redone
    assert_exactly_once(store, items)
    assert_stats_exact(store)  # worker partials: none lost or counted twice at any kill point


@pytest.mark.slow
def test_failing_producer_names_item_and_rerun_skips_committed(assert_exactly_once, python_config,
                                                               tmp_path, monkeypatch):
    path, items, env = write_yaml(python_config, tmp_path, [10] * 30, "producers:process_failing")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.syspath_prepend(env["PYTHONPATH"])
    with pytest.raises(SourceError, match=r"item 13 \(\(13, 10\)\): process\(\) raised "
                                          r"RuntimeError: corrupt replay header"):
        ingest(path, workers=1, progress=False)
    monkeypatch.setenv("CHUNKSTORE_TEST_FIXED", "1")
    summary = ingest(path, workers=1, progress=False)
    assert summary.tasks_skipped >= 10 and summary.tasks_run < 30
    assert_exactly_once(tmp_path / "s.zarr", items)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(1, 4)), max_size=12))
def test_runs_of_round_trips(segments):
    rows = [(item, r) for item, n in segments for r in range(n)]
    src = np.array(rows, dtype=np.int64).reshape(-1, 2)
    runs = runs_of(src)
    back = [(i, r) for i, a, b in runs.tolist() for r in range(a, b)]
    assert back == rows


@pytest.mark.slow
def test_changed_item_list_is_refused_and_overwrite_rebuilds(assert_exactly_once, python_config,
                                                             tmp_path):
    from chunkstore import StoreExistsError

    items = [(0, 5), (1, 9)]
    ingest(python_config(tmp_path / "s.zarr"), items=items, process=process, progress=False)
    more = [*items, (2, 3)]
    with pytest.raises(StoreExistsError, match=r"config keys that differ: \['source'\]"):
        ingest(python_config(tmp_path / "s.zarr"), items=more, process=process, progress=False)
    assert_exactly_once(tmp_path / "s.zarr", items)  # untouched
    ingest(python_config(tmp_path / "s.zarr"), items=more, process=process, progress=False,
           overwrite=True)
    assert_exactly_once(tmp_path / "s.zarr", more)


def test_python_source_config_errors(python_config, tmp_path):
    from chunkstore import ConfigError

    with pytest.raises(ConfigError, match="ordered placement needs row counts"):
        ingest(python_config(tmp_path / "s.zarr", placement="ordered"), items=[(0, 1)],
               process=process, progress=False)
    with pytest.raises(ConfigError, match="has no attribute 'nope'"):
        ingest(python_config(tmp_path / "s.zarr", items=[[0, 1]], process="producers:nope"),
               progress=False)
    with pytest.raises(ConfigError, match="need source kind 'python'"):
        ingest({"store": str(tmp_path / "x"), "schema": {"features": 1, "heads": {"a": 2}},
                "source": {"kind": "synthetic", "n_samples": 3}}, items=[1], progress=False)


def test_changed_item_function_output_is_refused(assert_exactly_once, python_config, tmp_path,
                                                 monkeypatch):
    from chunkstore import StoreExistsError

    path, items, env = write_yaml(python_config, tmp_path, [4, 0, 7], "producers:process")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.syspath_prepend(env["PYTHONPATH"])
    ingest(path, progress=False)
    monkeypatch.setenv("CHUNKSTORE_TEST_SIZES", "4,0,7,2")
    with pytest.raises(StoreExistsError, match=r"item list changed .*\(4 items now\)"):
        ingest(path, progress=False)
    assert_exactly_once(tmp_path / "s.zarr", items)


def test_statistics_live_in_worker_files_and_stay_exact_after_sigkill(
        assert_exactly_once, python_config, tmp_path, monkeypatch, capfd):
    """Chunk records hold item runs only; each loop's running partial (with the chunk ids it
    covers) is one file under workers/. After a SIGKILL, a torn record that a worker file covers
    (the file must then be dropped, or its chunk would count twice once redone) and a torn
    worker file, the resume recomputes what no valid file covers and stats/all stays exact."""
    cfg = python_config(tmp_path / "s.zarr", items="producers:items_from_env",
                        process="producers:process")
    cfg["stats"] = {"correlation": True}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    sizes = KILL_SIZES[:60]
    env = {"CHUNKSTORE_TEST_SIZES": ",".join(map(str, sizes)),
           "PYTHONPATH": cfg["source"]["path"][0]}
    store = tmp_path / "s.zarr"
    proc = run_cli(path, env)
    assert kill_after(proc, lambda: completed_tasks(str(store)), 25)
    jdir = store / "_chunkstore"
    record = np.load(sorted((jdir / "tasks").glob("*.npz"))[0])
    assert sorted(record.files) == ["_meta", "runs"]  # no per-chunk moments or co-moments
    files = sorted((jdir / "workers").glob("*.npz"))
    assert 1 <= len(files) <= 2  # one per loop, not one per chunk
    covered = [set(np.load(f)["chunks"].tolist()) for f in files]
    assert all(c and c <= completed_tasks(str(store)) for c in covered)
    torn = jdir / "tasks" / f"{min(covered[0]):06d}.npz"
    torn.write_bytes(torn.read_bytes()[:-30])  # set aside on resume: its chunk is redone
    files[-1].write_bytes(files[-1].read_bytes()[:-40])  # torn: deleted with a warning
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.syspath_prepend(env["PYTHONPATH"])
    ingest(path, progress=False)
    err = capfd.readouterr().err
    assert "worker statistics" in err and torn.name in err
    assert_exactly_once(store, list(enumerate(sizes)))
    assert_stats_exact(store)
    assert not (jdir / "workers").exists()  # merged into stats/all at finalize
