"""Ingest, statistics and splits on a real ``distributed.LocalCluster`` (2 worker processes).

Stores written on the cluster are compared chunk file by chunk file with the process pool's;
a worker process is killed mid-ingest and the client is killed mid-ingest, and the stores are
still exact.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
import zarr
from producers import process, process_slow

from chunkstore import ConfigError, IngestError, ingest
from chunkstore.cli import main
from chunkstore.ingest.executors import tune_worker
from chunkstore.runtime.dask import dask_scheduler
from chunkstore.store.journal import completed_tasks
from chunkstore.testing import (
    assert_store_equals,
    chunk_files,
    make_items,
    write_config,
    write_items,
)

SYNTHETIC_TASKS = 118  # ceil(30000 / 256), one chunk per task


@contextmanager
def local_cluster(directory: Path) -> Iterator[tuple[str, Any]]:
    """(scheduler address, a client of ours) of a 2-process LocalCluster.

    A killed worker's lock lease (streaming counters) expires after 5 s instead of 30 s.
    """
    import dask
    from distributed import Client, LocalCluster

    with dask.config.set({"distributed.scheduler.locks.lease-timeout": "5s",
                          "distributed.scheduler.locks.lease-validation-interval": "1s"}), \
            LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                         dashboard_address=":0", local_directory=str(directory)) as lc, \
            Client(lc, set_as_default=False) as client:
        yield lc.scheduler_address, client


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any]]:
    """A LocalCluster shared by the tests of this module that kill none of its workers."""
    with local_cluster(tmp_path_factory.mktemp("dask")) as c:
        yield c


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[tuple[str, Any]]:
    """A LocalCluster of one test that kills a worker: nothing waits for its nanny to restart it.

    (In CI a nanny once closed itself instead of restarting its killed worker, and the shared
    cluster stayed at 1 worker for the rest of the module.)
    """
    with local_cluster(tmp_path / "dask") as c:
        yield c


@pytest.fixture(scope="module")
def reference(synthetic_config, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Chunk files of the synthetic store written by the process pool."""
    store = tmp_path_factory.mktemp("ref") / "ref.zarr"
    ingest(synthetic_config(store), progress=False)
    return chunk_files(store)


def arrays_under(store: Path | str, prefix: str) -> dict[str, np.ndarray]:
    """Every array below ``prefix`` of a store, by path."""
    g = zarr.open_group(str(store), mode="r")[prefix]
    return {name: np.asarray(a[...]) for name, a in g.arrays()} | {
        f"{name}/{k}": v for name, sub in g.groups() for k, v in arrays_under(
            store, f"{prefix}/{name}").items()}


@pytest.mark.slow
@pytest.mark.cluster
def test_ingest_on_the_cluster_is_identical_to_the_process_pool(tmp_path, cluster):
    address, _ = cluster
    items = make_items([30, 5, 70, 1, 44, 90, 12, 0, 33])
    paths = write_items(tmp_path / "b", items)
    options = {"workers": 2, "chunk_rows": 16, "task_chunks": 1}
    pool = write_config(tmp_path / "p.yaml", store=tmp_path / "p.zarr", paths=paths,
                        ingest=options)
    dask = write_config(tmp_path / "d.yaml", store=tmp_path / "d.zarr", paths=paths,
                        ingest={**options, "scheduler": address})
    ingest(pool, progress=False)
    summary = ingest(dask, progress=False)
    assert summary.tasks_run == summary.tasks_total == 18  # ceil(285 / 16)
    assert_store_equals(tmp_path / "d.zarr", items)
    assert chunk_files(tmp_path / "d.zarr") == chunk_files(tmp_path / "p.zarr")
    for name, a in arrays_under(tmp_path / "p.zarr", "stats/all").items():
        np.testing.assert_array_equal(arrays_under(tmp_path / "d.zarr", "stats/all")[name], a)
    # a rerun on the cluster is a no-op; --scheduler on the command line overrides the config
    assert main(["ingest", str(pool), "--scheduler", address, "--quiet"]) == 0
    assert chunk_files(tmp_path / "p.zarr") == chunk_files(tmp_path / "d.zarr")


@pytest.mark.slow
@pytest.mark.cluster
def test_stats_and_split_on_the_cluster_equal_local_results(tmp_path, cluster, capsys):
    address, _ = cluster
    items = make_items([40, 25, 60, 17, 80], seed=4)
    cfg = write_config(tmp_path / "c.yaml", store=tmp_path / "a.zarr",
                       paths=write_items(tmp_path / "b", items), ingest={"chunk_rows": 16})
    ingest(cfg, progress=False)
    shutil.copytree(tmp_path / "a.zarr", tmp_path / "b.zarr")
    local, remote = str(tmp_path / "a.zarr"), str(tmp_path / "b.zarr")
    for store, extra in ((local, []), (remote, ["--scheduler", address])):
        assert main(["split", store, "--method", "group", "--seed", "3", *extra]) == 0
        assert main(["stats", store, "--split", "train", "--bins", "8", "--quiet", *extra]) == 0
    assert "dashboard http://" in capsys.readouterr().err  # split and stats print the link
    for prefix in ("splits", "stats/train", "stats/all"):
        want, got = arrays_under(local, prefix), arrays_under(remote, prefix)
        assert want.keys() == got.keys()
        for name in want:
            np.testing.assert_array_equal(got[name], want[name], err_msg=f"{prefix}/{name}")


@pytest.mark.slow
@pytest.mark.cluster
def test_cluster_local_option_starts_and_stops_a_local_cluster(tmp_path, capsys):
    items = make_items([20, 30])
    cfg = write_config(tmp_path / "c.yaml", store=tmp_path / "s.zarr",
                       paths=write_items(tmp_path / "b", items), ingest={"chunk_rows": 8})
    assert main(["ingest", str(cfg), "--cluster", "local", "--workers", "1", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "started a Dask LocalCluster (1 worker processes x 1 thread)" in err
    assert "dashboard http://" in err
    assert_store_equals(tmp_path / "s.zarr", items)


def test_both_scheduler_and_cluster_is_an_error():
    with pytest.raises(ConfigError, match="either a scheduler address"):
        with dask_scheduler("tcp://127.0.0.1:1", "local"):
            pass
    with pytest.raises(SystemExit):  # argparse: mutually exclusive options
        main(["stats", "x.zarr", "--scheduler", "tcp://127.0.0.1:1", "--cluster", "local"])


def test_zarr_concurrency_is_capped_by_worker_threads():
    before = zarr.config.get("async.concurrency")
    try:
        tune_worker(1)
        assert zarr.config.get("async.concurrency") == before  # never above zarr's default
        tune_worker(4)
        assert zarr.config.get("async.concurrency") == 4  # 16 in flight over 4 threads
        tune_worker(64)
        assert zarr.config.get("async.concurrency") == 1
    finally:
        zarr.config.set({"async.concurrency": before})


@pytest.mark.cluster
@pytest.mark.slow
def test_killed_worker_process_task_is_rerun_and_store_is_exact(wait_for_records, synthetic_config,
                                                                tmp_path, own_cluster, reference):
    address, client = own_cluster
    store = tmp_path / "s.zarr"
    with ThreadPoolExecutor(1) as pool:
        run = pool.submit(ingest, synthetic_config(store), scheduler=address, progress=False)
        wait_for_records(store, 5)
        busy = [w for w, keys in client.processing().items() if keys]
        assert busy, "no worker was running a task"
        done_at_kill = len(completed_tasks(str(store)))
        client.run(os._exit, 1, workers=busy[:1], on_error="ignore")  # the worker process dies
        summary = run.result(timeout=300)
    assert done_at_kill < SYNTHETIC_TASKS, "the kill came too late to test anything"
    assert summary.tasks_run == SYNTHETIC_TASKS
    assert chunk_files(store) == reference
    assert busy[0] not in client.scheduler_info()["workers"]


@pytest.mark.cluster
@pytest.mark.slow
def test_client_killed_mid_ingest_then_rerun_resumes_from_the_journal(
        wait_for_records, synthetic_config, tmp_path, cluster, reference):
    address, _ = cluster
    store = tmp_path / "s.zarr"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(synthetic_config(store)))
    proc = subprocess.Popen([sys.executable, "-m", "chunkstore.cli", "ingest", str(cfg),
                             "--scheduler", address, "--quiet"], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_records(store, 5, proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert zarr.open_group(str(store), mode="r").attrs["chunkstore"]["status"] == "incomplete"
    summary = ingest(cfg, scheduler=address, progress=False)  # its lock is stale: removed
    assert summary.tasks_skipped >= 5 and summary.tasks_run < SYNTHETIC_TASKS
    assert chunk_files(store) == reference


@pytest.mark.slow
@pytest.mark.cluster
def test_streaming_ingest_on_the_cluster_is_exactly_once(assert_exactly_once, python_config,
                                                         tmp_path, cluster):
    address, _ = cluster
    items = [(k, n) for k, n in enumerate([0, 1, 5, 8, 30, 0, 17, 3, 9, 100, 2, 7, 8, 16, 1])]
    summary = ingest(python_config(tmp_path / "s.zarr"), items=items, process=process,
                     scheduler=address, progress=False)
    assert summary.rows == sum(n for _, n in items) and summary.leftover_rows <= 2 * 8
    assert_exactly_once(tmp_path / "s.zarr", items)


@pytest.mark.cluster
@pytest.mark.slow
def test_streaming_worker_killed_is_detected_and_rerun_is_exactly_once(wait_for_records,
                                                                       assert_exactly_once,
                                                                       python_config, tmp_path,
                                                                       own_cluster):
    address, client = own_cluster
    items = [(k, n) for k, n in enumerate(
        int(n) for n in np.random.default_rng(11).integers(1, 30, size=60))]
    store = tmp_path / "s.zarr"
    with ThreadPoolExecutor(1) as pool:
        run = pool.submit(ingest, python_config(store), items=items, process=process_slow,
                          scheduler=address, progress=False)
        wait_for_records(store, 10)
        busy = [w for w, keys in client.processing().items() if keys]
        client.run(os._exit, 1, workers=busy[:1], on_error="ignore")
        try:
            run.result(timeout=300)
            lost = False  # the dead loop was between items with an empty buffer: nothing lost
        except IngestError as e:
            assert "streaming worker was lost" in str(e)
            lost = True
    if lost:
        summary = ingest(python_config(store), items=items, process=process_slow,
                         scheduler=address, progress=False)
        assert summary.tasks_skipped > 0
    assert_exactly_once(store, items)
