"""Fault injection: SIGKILLs at seeded random points (both placements), a killed worker, a full
disk, a dead coordinator's workers; every resume ends equal to an uninterrupted run.

The default run chains a handful of kills per placement; ``-m slow`` chains >= 20.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from killing import assert_stats_exact, chain_kills, committed, kill_after

from chunkstore import ingest
from chunkstore.errors import ChunkstoreError
from chunkstore.integrity import verify
from chunkstore.store.journal import completed_tasks
from chunkstore.testing import chunk_files

TESTS = Path(__file__).parents[1]
STREAM_SIZES = [int(n) for n in np.random.default_rng(7).integers(0, 40, size=80)]
# Kills per placement: QUICK in the default run, SLOW (>= 20, the bar) under `slow`.
# One test per placement chains them (kill, rerun the same command, kill again ...), so a kill
# costs one interpreter start; CHUNKSTORE_FAULT_KILLS changes the slow count.
QUICK, SLOW = 3, int(os.environ.get("CHUNKSTORE_FAULT_KILLS", "20"))


def _cli(config: Path, capture: bool = False) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    return subprocess.Popen([sys.executable, "-m", "chunkstore.cli", "ingest", str(config),
                             "--quiet"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE if capture else subprocess.DEVNULL, text=True)


def _write(path: Path, cfg: dict) -> Path:
    path.write_text(json.dumps(cfg))  # JSON is YAML
    return path


def _ordered_cfg(store: Path) -> dict:
    return {"store": str(store), "schema": {"features": 32, "heads": {"a": 7, "b": 3}},
            "source": {"kind": "synthetic", "n_samples": 20_000, "seed": 3,
                       "item_rows": [1, 700]},
            "ingest": {"workers": 2, "chunk_rows": 256, "task_chunks": 1}}


def _streaming_cfg(store: Path, python_config) -> dict:
    cfg = python_config(store, items=[[k, n] for k, n in enumerate(STREAM_SIZES)],
                        process="producers:process")
    cfg["stats"] = {"correlation": True}
    return cfg


def _kill_at(proc: subprocess.Popen, store: Path, records: int) -> bool:
    """SIGKILL the coordinator once ``records`` tasks are committed (see killing.kill_after)."""
    return kill_after(proc, lambda: completed_tasks(str(store)), records)


def _done(store: Path) -> set[int]:
    return committed(lambda: completed_tasks(str(store)))


@pytest.fixture(scope="module")
def ordered_reference(tmp_path_factory) -> dict[str, bytes]:
    tmp = tmp_path_factory.mktemp("ref")
    ingest(_ordered_cfg(tmp / "r.zarr"), progress=False)
    return chunk_files(tmp / "r.zarr")


def _streaming_total() -> int:
    return -(-sum(STREAM_SIZES) // 8)  # chunks of 8 rows (tests/conftest.py)


@pytest.mark.parametrize("kills", [
    pytest.param(QUICK, id="quick"), pytest.param(SLOW, id="many", marks=pytest.mark.slow)])
def test_ordered_chained_sigkills_resume_to_identical(tmp_path, ordered_reference, kills):
    """The same command SIGKILLed ``kills`` times at seeded random points (some during its
    resume), then run to the end: byte-identical to an uninterrupted run, and verify is clean."""
    store = tmp_path / "s.zarr"
    path = _write(tmp_path / "c.yaml", _ordered_cfg(store))
    landed = chain_kills(lambda: _cli(path), store, lambda: completed_tasks(str(store)),
                         kills, 20_000 // 256, seed=12)
    assert landed >= kills - max(1, kills // 10), f"only {landed} of {kills} kills landed"
    ingest(str(path), progress=False)
    assert chunk_files(store) == ordered_reference
    assert verify(str(store)).ok


@pytest.mark.parametrize("kills", [
    pytest.param(QUICK, id="quick"), pytest.param(SLOW, id="many", marks=pytest.mark.slow)])
def test_streaming_chained_sigkills_resume_exactly_once(tmp_path, python_config,
                                                        assert_exactly_once, monkeypatch, kills):
    """As above for streaming placement: every item's rows exactly once, no chunk hole,
    statistics (with correlation) equal to a full recompute, and verify is clean."""
    store = tmp_path / "s.zarr"
    path = _write(tmp_path / "c.yaml", _streaming_cfg(store, python_config))
    landed = chain_kills(lambda: _cli(path), store, lambda: completed_tasks(str(store)),
                         kills, _streaming_total(), seed=22)
    assert landed >= kills - max(1, kills // 10), f"only {landed} of {kills} kills landed"
    monkeypatch.syspath_prepend(str(TESTS))
    ingest(str(path), progress=False)
    assert_exactly_once(store, [(k, n) for k, n in enumerate(STREAM_SIZES)])
    assert_stats_exact(store)
    assert verify(str(store)).ok


def test_killed_worker_is_reported_and_resume_is_identical(tmp_path, ordered_reference):
    store = tmp_path / "s.zarr"
    path = _write(tmp_path / "c.yaml", _ordered_cfg(store))
    proc = _cli(path, capture=True)
    deadline = time.time() + 120
    while len(_done(store)) < 5:
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.003)
    workers = [c for c in psutil.Process(proc.pid).children()
               if "resource_tracker" not in " ".join(c.cmdline())]
    workers[-1].send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert "a worker process died" in err and "Traceback" not in err
    assert err.count("\n") <= 2
    ingest(str(path), progress=False)
    assert chunk_files(store) == ordered_reference


def test_corrupt_record_during_resume_is_set_aside(tmp_path, ordered_reference, capfd):
    store = tmp_path / "s.zarr"
    path = _write(tmp_path / "c.yaml", _ordered_cfg(store))
    assert _kill_at(_cli(path), store, 20)
    record = sorted((store / "_chunkstore/tasks").glob("*.npz"))[3]
    record.write_bytes(record.read_bytes()[:-30])  # a torn record (e.g. a disk error)
    summary = ingest(str(path), progress=False)
    assert summary.tasks_run >= 1
    assert record.name in capfd.readouterr().err
    assert (store / "_chunkstore/aside").is_dir()
    assert chunk_files(store) == ordered_reference


@pytest.fixture
def small_disk(tmp_path):
    """A real 3 MiB tmpfs (the suite runs as root in CI); skipped where mounting is denied."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs",
                                            str(mnt)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs root")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_fails_cleanly_and_resumes_after_space_is_freed(small_disk, tmp_path,
                                                                   ordered_reference):
    store = small_disk / "s.zarr"
    cfg = _ordered_cfg(store)
    cfg["compression"] = {"cname": "lz4", "clevel": 1}
    path = _write(tmp_path / "c.yaml", cfg)
    proc = _cli(path, capture=True)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err
    assert "No space left on device" in err and "Traceback" not in err
    kept = len(_done(store))
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    summary = ingest(str(path), progress=False)
    assert summary.tasks_skipped == kept
    assert verify(str(store)).ok


def test_incomplete_verify_lists_committed_rows_only(tmp_path):
    store = tmp_path / "s.zarr"
    path = _write(tmp_path / "c.yaml", _ordered_cfg(store))
    assert _kill_at(_cli(path), store, 10)
    report = verify(str(store))
    assert [p.kind for p in report.problems] == ["incomplete"]
    with pytest.raises(ChunkstoreError):
        raise ChunkstoreError(report.format())
