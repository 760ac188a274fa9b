"""Stores on object storage: a real S3 HTTP endpoint (moto's server, on loopback) through s3fs,
and ``memory://``. Ingest, resume after SIGKILL, the lock, streaming, and plain-zarr reads."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pytest
import yaml
import zarr
from producers import process_failing

import chunkstore
from chunkstore import ConfigError, SourceError, StoreLockedError, ingest
from chunkstore.config import Config
from chunkstore.store.journal import StoreLock, completed_tasks
from chunkstore.store.urls import configure, store_path
from chunkstore.testing import concat, make_items, write_config, write_items

BUCKET = "chunkstore-test"
SMALL = {"kind": "synthetic", "n_samples": 8000, "seed": 3, "item_rows": [1, 500]}
SMALL_TASKS = 32  # ceil(8000 / 256)
SAMPLE_DIRS = ("features", "labels", "masks", "meta")


@pytest.fixture(scope="module")
def s3(moto_server) -> dict[str, Any]:
    """Storage options of a moto S3 server on 127.0.0.1 (a subprocess), with one bucket."""
    options = moto_server()
    fsspec.filesystem("s3", **options).mkdir(BUCKET)
    return options


@pytest.fixture(autouse=True)
def clean_process_state() -> Iterator[None]:
    """Each test starts without per-protocol fsspec defaults and leaves none behind, nor any
    ``memory://chunkstore-test/`` store."""
    saved = {k: dict(v) for k, v in fsspec.config.conf.items()}
    fsspec.config.conf.pop("s3", None)
    yield
    fsspec.config.conf.clear()
    fsspec.config.conf.update(saved)
    memory = fsspec.filesystem("memory")
    if memory.exists("/chunkstore-test"):
        memory.rm("/chunkstore-test", recursive=True)


def object_chunks(url: str, options: dict[str, Any] | None = None) -> dict[str, bytes]:
    """Bytes of every chunk and array metadata object of the sample arrays (like
    helpers.chunk_files for a local store)."""
    fs, root = fsspec.core.url_to_fs(url, **(options or {}))
    fs.invalidate_cache()
    out = {}
    for sub in SAMPLE_DIRS:
        for path in sorted(fs.find(f"{root}/{sub}")):
            out[path[len(root):].strip("/")] = fs.cat_file(path)
    return out


def local_chunks(store: Path) -> dict[str, bytes]:
    return {str(p.relative_to(store)): p.read_bytes() for sub in SAMPLE_DIRS
            for p in sorted((store / sub).rglob("*")) if p.is_file()}


def s3_config(path: Path, url: str, options: dict[str, Any], base: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump({**base, "store": url, "storage_options": options}))
    return path


@pytest.mark.slow
@pytest.mark.s3
def test_s3_ingest_equals_the_local_store_and_plain_zarr_reads_it(tmp_path, s3):
    items = make_items([30, 5, 70, 1, 44, 90, 12], seed=9)
    paths = write_items(tmp_path / "b", items)
    local = write_config(tmp_path / "l.yaml", store=tmp_path / "l.zarr", paths=paths,
                         ingest={"workers": 2, "chunk_rows": 16})
    url = f"s3://{BUCKET}/round-trip.zarr"
    remote = s3_config(tmp_path / "r.yaml", url, s3, yaml.safe_load(local.read_text()))
    reference = "memory://chunkstore-test/ref.zarr"  # threads: no worker processes to start
    want = ingest({**yaml.safe_load(local.read_text()), "store": reference}, progress=False)
    got = ingest(remote, progress=False)  # 2 worker processes write straight to S3
    assert object_chunks(url, s3) == object_chunks(reference)
    assert got.stored_bytes == want.stored_bytes and got.rows == want.rows
    assert ingest(remote, progress=False).tasks_run == 0  # a rerun is a no-op

    fsspec.config.conf.pop("s3", None)  # plain zarr, nothing set up by chunkstore
    g = zarr.open(url, mode="r", storage_options=s3)
    assert g.attrs["chunkstore"]["status"] == "complete"
    np.testing.assert_array_equal(g["features"][:], concat(items, "strategic_features"))
    np.testing.assert_array_equal(g["labels/move"][:], concat(items, "labels_move"))
    np.testing.assert_allclose(g["stats/all/mean"][:],
                               concat(items, "strategic_features").astype(np.float64).mean(0))
    ds = chunkstore.open(url, storage_options=s3)
    np.testing.assert_array_equal(ds.masks["target"][5:40], concat(items, "masks_target")[5:40])
    # the CLI on a URL takes its options from fsspec's environment variables
    env = {**os.environ, "FSSPEC_S3": json.dumps(s3)}
    subprocess.run([sys.executable, "-m", "chunkstore.cli", "stats", url, "--bins", "4",
                    "--quiet"], env=env, check=True, capture_output=True)
    assert zarr.open(url, mode="r", storage_options=s3)["stats/all"].attrs["method"] == "dask"
    # the credentials never land in the store
    fs = fsspec.filesystem("s3", **s3)
    journal = b"".join(fs.cat_file(p) for p in fs.find(f"{BUCKET}/round-trip.zarr/_chunkstore")
                       if p.endswith(".json"))
    assert journal and s3["secret"].encode() not in journal


@pytest.mark.s3
@pytest.mark.slow
def test_s3_sigkill_mid_ingest_then_resume_is_exact(wait_for_records, synthetic_config, tmp_path,
                                                    s3):
    source, tasks = {**SMALL, "n_samples": 4000}, 16  # ceil(4000 / 256)
    reference = "memory://chunkstore-test/ref.zarr"  # threads: no worker processes to start
    ingest({**synthetic_config(tmp_path), "source": source, "store": reference}, progress=False)
    url = f"s3://{BUCKET}/killed.zarr"
    cfg = s3_config(tmp_path / "c.yaml", url, s3, {**synthetic_config(tmp_path),
                                                     "source": source})
    configure(url, s3)  # for completed_tasks() below
    proc = subprocess.Popen([sys.executable, "-m", "chunkstore.cli", "ingest", str(cfg),
                             "--quiet"], start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_for_records(url, 3, proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    done = len(completed_tasks(url))
    assert done < tasks, "the kill came too late to test anything"
    status = zarr.open(url, mode="r", storage_options=s3).attrs["chunkstore"]["status"]
    assert status == "incomplete"
    summary = ingest(cfg, progress=False)  # the dead coordinator's lock on S3 is stale
    assert summary.tasks_skipped >= done
    assert summary.tasks_run == tasks - summary.tasks_skipped
    assert object_chunks(url, s3) == object_chunks(reference)


@pytest.mark.s3
def test_s3_lock_is_create_if_absent_and_stale_locks_are_removed(s3, capsys):
    url = f"s3://{BUCKET}/locked.zarr"
    configure(url, s3)
    with StoreLock(url), pytest.raises(StoreLockedError, match="locked by another ingest"):
        StoreLock(url).acquire()
    lock = store_path(url) / "_chunkstore" / "lock"
    assert not lock.exists()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.write_atomic(json.dumps({"pid": dead.pid, "host": socket.gethostname(),
                                  "process_started": time.time() - 5}).encode())
    with StoreLock(url):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert "removing stale lock" in capsys.readouterr().err and not lock.exists()


@pytest.mark.slow
@pytest.mark.s3
def test_s3_streaming_ingest_fails_then_resumes_exactly_once(assert_exactly_once, python_config,
                                                             tmp_path, s3, monkeypatch):
    url = f"s3://{BUCKET}/streaming.zarr"
    items = [(k, n) for k, n in enumerate(
        int(n) for n in np.random.default_rng(5).integers(1, 12, size=16))]
    cfg = {**python_config(tmp_path / "unused"), "store": url, "storage_options": s3}
    with pytest.raises(SourceError, match=r"item 13 .*corrupt replay header"):
        ingest(cfg, items=items, process=process_failing, workers=2, progress=False)
    assert completed_tasks(url)  # chunks committed before the error are kept
    monkeypatch.setenv("CHUNKSTORE_TEST_FIXED", "1")
    summary = ingest(cfg, items=items, process=process_failing, workers=2, progress=False)
    assert summary.tasks_skipped > 0
    assert_exactly_once(url, items, storage_options=s3)


def test_memory_store_runs_in_threads_and_equals_the_local_store(tmp_path):
    items = make_items([25, 3, 40, 17], seed=2)
    paths = write_items(tmp_path / "b", items)
    local = write_config(tmp_path / "l.yaml", store=tmp_path / "l.zarr", paths=paths,
                         ingest={"workers": 2, "chunk_rows": 8})
    url = "memory://chunkstore-test/m.zarr"
    cfg = {**yaml.safe_load(local.read_text()), "store": url}
    ingest(local, progress=False)
    summary = ingest(cfg, progress=False)
    assert summary.tasks_run == summary.tasks_total == 11
    assert object_chunks(url) == local_chunks(tmp_path / "l.zarr")
    np.testing.assert_array_equal(chunkstore.open(url).features[:],
                                  concat(items, "strategic_features"))
    with pytest.raises(ConfigError, match="lives in this process's memory"):
        ingest(cfg, scheduler="tcp://127.0.0.1:1", progress=False, overwrite=True)


def test_streaming_on_a_memory_store_fails_then_resumes_exactly_once(assert_exactly_once,
                                                                     python_config, tmp_path,
                                                                     monkeypatch):
    url = "memory://chunkstore-test/s.zarr"
    items = [(k, n) for k, n in enumerate(
        int(n) for n in np.random.default_rng(6).integers(1, 25, size=40))]
    cfg = {**python_config(tmp_path / "unused"), "store": url}
    with pytest.raises(SourceError, match="corrupt replay header"):
        ingest(cfg, items=items, process=process_failing, workers=3, progress=False)
    monkeypatch.setenv("CHUNKSTORE_TEST_FIXED", "1")
    ingest(cfg, items=items, process=process_failing, workers=3, progress=False)
    assert_exactly_once(url, items)  # type: ignore[arg-type]


@pytest.mark.parametrize("where", ["local", "memory", pytest.param("s3", marks=pytest.mark.s3)])
def test_store_path_operations(tmp_path, where, request):
    if where == "s3":
        url = f"s3://{BUCKET}/ops"
        configure(url, request.getfixturevalue("s3"))
    else:
        url = str(tmp_path / "r") if where == "local" else "memory://chunkstore-test/r"
    root = store_path(url)
    a = root / "d" / "a.bin"
    assert not a.exists() and list(root.iterdir()) == []
    assert a.create(b"first") and not a.create(b"second")  # create-if-absent
    assert a.read_bytes() == b"first"
    a.write_atomic(b"replaced")
    a.copy_to(root / "e" / "b.bin")
    (root / "_skip" / "c.bin").write_atomic(b"12345")
    assert [p.name for p in root.iterdir()] == ["_skip", "d", "e"]
    assert (root / "e" / "b.bin").read_text() == "replaced" and (root / "d").is_dir()
    assert root.du() == 21 and root.du(exclude=("_skip",)) == 16
    (root / "d").remove()
    (root / "d").remove()  # absent: nothing to do
    assert not a.exists() and [p.name for p in root.iterdir()] == ["_skip", "e"]
    assert (root / "e" / "b.bin").stem == "b" and (root / "e" / "b.bin").parent.name == "e"


def test_config_storage_options_and_file_urls():
    base = {"schema": {"features": 2, "heads": {"a": 2}},
            "source": {"kind": "synthetic", "n_samples": 10}}
    assert Config.from_dict({**base, "store": "file:///data/x.zarr"}).store == "/data/x.zarr"
    cfg = Config.from_dict({**base, "store": "s3://b/x.zarr",
                            "storage_options": {"endpoint_url": "http://h:1", "key": "k"}})
    assert cfg.storage_options == {"endpoint_url": "http://h:1", "key": "k"}
    assert "storage_options" not in cfg.to_dict()  # never written into the store's journal
    with pytest.raises(ConfigError, match="store 'x.zarr' is a local path"):
        Config.from_dict({**base, "store": "x.zarr", "storage_options": {"anon": True}})
