"""verify finds every kind of damage, names where it is and who wrote it; repair rewrites it
from the source, byte for byte (ordered and streaming placement)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr
from producers import process

import chunkstore
from chunkstore import ingest
from chunkstore.errors import IntegrityError, NotAStoreError
from chunkstore.integrity import verify
from chunkstore.pipeline import repair
from chunkstore.testing import chunk_files, make_items, write_config, write_items


def _ordered(tmp: Path) -> tuple[str, str]:
    items = make_items([37, 5, 60, 23, 41, 9, 77, 30, 1, 50], seed=3)
    cfg = write_config(tmp / "c.yaml", store=tmp / "s.zarr", paths=write_items(tmp / "b", items),
                       ingest={"chunk_rows": 8, "task_chunks": 3})
    ingest(cfg, progress=False, workers=2)
    return str(cfg), str(tmp / "s.zarr")


def _streaming(tmp: Path, python_config) -> tuple[str, str]:
    sizes = [0, 1, 5, 8, 30, 0, 17, 3, 9, 100, 2, 7, 8, 16, 1]
    cfg = python_config(tmp / "s.zarr", items=[[k, n] for k, n in enumerate(sizes)],
                        process="producers:process")
    path = tmp / "c.yaml"
    path.write_text(json.dumps(cfg))  # JSON is YAML
    ingest(str(path), progress=False)
    return str(path), str(tmp / "s.zarr")


def _flip(path: Path, at: int = 20) -> None:
    b = bytearray(path.read_bytes())
    b[min(at, len(b) - 5)] ^= 0xFF
    path.write_bytes(bytes(b))


def _damage(store: Path) -> dict[str, str]:
    """Flip a byte, delete files, truncate one, garble a journal record: kind by chunk key."""
    _flip(store / "features/c/3/0")
    (store / "labels/move/c/5").unlink()
    masks = sorted((store / "masks/target/c").iterdir(), key=lambda p: int(p.name))
    (masks[7] / "0").unlink()
    group = store / "meta/group/c/2"
    group.write_bytes(group.read_bytes()[:7])
    return {"features/c/3/0": "corrupt", "labels/move/c/5": "missing",
            "masks/target/c/7/0": "missing", "meta/group/c/2": "corrupt"}


@pytest.mark.parametrize("placement", ["ordered", "streaming"])
def test_every_damage_is_found_and_repaired_byte_for_byte(tmp_path, placement, python_config):
    cfg, store = (_ordered(tmp_path) if placement == "ordered"
                  else _streaming(tmp_path, python_config))
    assert verify(store).ok
    pristine = chunk_files(store)
    expected = _damage(Path(store))
    record = sorted((Path(store) / "_chunkstore/tasks").iterdir())[1]
    record.write_bytes(record.read_bytes()[:40])
    report = verify(store, workers=2)
    found = {p.key: p.kind for p in report.problems if p.key}
    assert found == expected
    for p in report.problems:
        if p.key:
            assert p.rows[1] > p.rows[0] and p.writer.startswith(
                "task" if placement == "ordered" else "source items")
    assert any(p.kind == "journal" and record.name in p.array for p in report.problems)
    assert {p.array for p in report.problems if p.kind == "stats"} >= {"labels/move",
                                                                       "masks/target"}
    summary = repair(cfg, progress=False)
    assert summary.after.ok and summary.rewritten
    assert chunk_files(store) == pristine
    assert repair(cfg, progress=False).format().endswith("nothing to repair")


def test_edited_zarr_json_is_an_error_on_open_naming_the_key(tmp_path):
    _, store = _ordered(tmp_path)
    root = Path(store) / "zarr.json"
    meta = json.loads(root.read_text())
    meta["attributes"]["chunkstore"]["n_samples"] = 300
    root.write_text(json.dumps(meta))
    with pytest.raises(IntegrityError, match="'n_samples' was changed"):
        chunkstore.open(store)
    assert [p.kind for p in verify(store).problems][:1] == ["attrs"]
    del meta["attributes"]["chunkstore"]["n_samples"]
    meta["attributes"]["chunkstore"]["n_rows"] = 333
    root.write_text(json.dumps(meta))
    with pytest.raises(IntegrityError, match="'n_samples' was removed.*'n_rows' was added"):
        chunkstore.open(store)
    problems = verify(store).problems
    assert any("required attrs keys missing: ['n_samples']" in p.detail for p in problems)


def _file_rows(store: str) -> int:
    """Rows per file of the store's features: its shard (one write task) or its chunk."""
    features = zarr.open_array(store, path="features", mode="r")
    return int((features.shards or features.chunks)[0])


def test_cli_verify_exit_status_and_json(tmp_path):
    _, store = _ordered(tmp_path)
    run = [sys.executable, "-m", "chunkstore.cli", "verify", store, "--json"]
    clean = subprocess.run(run, capture_output=True, text=True, timeout=120)
    assert clean.returncode == 0 and json.loads(clean.stdout)["ok"] is True
    (Path(store) / "features/c/4/0").unlink()
    bad = subprocess.run(run, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1
    problems = json.loads(bad.stdout)["problems"]
    unit = _file_rows(store)  # rows per file: a shard (one write task) or a chunk
    assert [(p["kind"], p["key"], p["rows"]) for p in problems if p["key"]] == [
        ("missing", "features/c/4/0", [4 * unit, 5 * unit])]
    assert "problem(s), listed above" in bad.stderr
    assert bad.stderr.count("\n") == 1  # one line, no traceback


def test_verify_of_something_that_is_not_a_store(tmp_path):
    (tmp_path / "x").write_text("hello")
    with pytest.raises(NotAStoreError, match="it is a file"):
        verify(str(tmp_path / "x"))


def test_journal_is_a_small_fraction_of_the_data_after_finalize(tmp_path, python_config):
    sizes = [500] * 12
    cfg = python_config(tmp_path / "s.zarr", items=[[k, n] for k, n in enumerate(sizes)],
                        process="producers:process")
    cfg["stats"] = {"correlation": True}
    cfg["ingest"]["chunk_rows"] = 256
    ingest(cfg, progress=False)
    store = Path(tmp_path / "s.zarr")
    journal = sum(p.stat().st_size for p in (store / "_chunkstore").rglob("*") if p.is_file())
    data = sum(p.stat().st_size for p in store.rglob("*")
               if p.is_file() and "_chunkstore" not in p.parts)
    assert journal < 0.25 * data, (journal, data)
    assert not np.any([p.name.endswith(".npz") and p.stat().st_size > 4096
                       for p in (store / "_chunkstore/tasks").iterdir()])


def test_process_producer_is_importable():  # the streaming configs name it by path
    assert process((1, 2))["features"].shape == (2, 4)


def test_repair_refuses_a_store_whose_attrs_were_edited(tmp_path):
    cfg, store = _ordered(tmp_path)
    shutil.copy(Path(store) / "zarr.json", tmp_path / "zarr.json.bak")
    root = Path(store) / "zarr.json"
    root.write_text(root.read_text().replace('"chunk_rows": 8', '"chunk_rows": 16'))
    with pytest.raises(IntegrityError, match="cannot be repaired chunk by chunk.*chunk_rows"):
        repair(cfg, progress=False)


def test_cli_verify_on_a_dask_cluster_finds_a_corrupt_chunk(tmp_path):
    """`verify --scheduler ADDR`: the chunks are read by the cluster's workers (here the threads
    of an in-process LocalCluster, listening on TCP), which find the flipped byte."""
    from distributed import LocalCluster

    _, store = _ordered(tmp_path)
    _flip(Path(store) / "features/c/2/0")
    run = [sys.executable, "-m", "chunkstore.cli", "verify", store, "--json"]
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, protocol="tcp",
                      dashboard_address=":0") as cluster:
        bad = subprocess.run([*run, "--scheduler", cluster.scheduler_address],
                             capture_output=True, text=True, timeout=120)
        assert "check_configured" in cluster.scheduler.task_prefixes  # the cluster read them
    assert bad.returncode == 1, bad.stderr
    problems = [(p["kind"], p["key"]) for p in json.loads(bad.stdout)["problems"]]
    assert ("corrupt", "features/c/2/0") in problems
    local = [(p.kind, p.key) for p in verify(store).problems]
    assert problems == local  # the same report as a local verify (stats counts included)
    assert "Traceback" not in bad.stderr
    both = subprocess.run([*run, "--scheduler", "tcp://127.0.0.1:1", "--workers", "2"],
                          capture_output=True, text=True, timeout=120)
    assert both.returncode == 2 and "does not apply with --scheduler" in both.stderr
