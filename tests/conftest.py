"""Fixtures shared by the tests.

Builders a third-party source author would use (items, configs, store checks, the source
contract, Hypothesis strategies) live in :mod:`chunkstore.testing`; what only this suite needs
lives here, as fixtures: stores built once per session and shared read-only, the python-source
config over ``producers.py``, the statistics oracle. Test modules never import each other.

``producers.py`` (next to this file) holds the functions worker processes import by
``"producers:function"``; pytest's ``pythonpath`` setting puts this directory on ``sys.path``
and configs name it in ``source.path`` (or ``PYTHONPATH`` for a CLI subprocess).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import zarr
from producers import HEADS as PRODUCER_HEADS
from producers import make

from chunkstore import ingest
from chunkstore.splits.write import run_split
from chunkstore.stats.compute import compute_stats
from chunkstore.store.journal import completed_tasks
from chunkstore.testing import make_items, write_config, write_items

TESTS = Path(__file__).parent
FIXTURES = TESTS / "fixtures"  # the golden store (format version 1)
REPO = TESTS.parent


@pytest.fixture
def chdir_tmp(tmp_path: Path) -> Iterator[Path]:
    old = os.getcwd()
    os.chdir(tmp_path)
    yield tmp_path
    os.chdir(old)


# ------------------------------------------------------------------ small stores, built once

SMALL_SIZES = [37, 5, 60, 23, 41, 9, 77, 30, 1, 50]  # 333 rows, 42 chunks of 8 (the last short)
SPLIT_NAMES = ["train", "val", "test"]


def _build_store(tmp: Path, sizes: list[int] = SMALL_SIZES, chunk_rows: int = 8, seed: int = 3,
                **ingest_options: Any) -> str:
    """Ingests ``make_items(sizes, seed=seed)`` into ``tmp / "s.zarr"`` (npz files, 1 worker)."""
    items = make_items(sizes, seed=seed)
    cfg = write_config(tmp / "c.yaml", store=tmp / "s.zarr", paths=write_items(tmp / "b", items),
                       ingest={"chunk_rows": chunk_rows, **ingest_options})
    ingest(cfg, progress=False)
    return str(tmp / "s.zarr")


def _write_split(store: str, codes: np.ndarray, name: str = "default",
                names: list[str] = SPLIT_NAMES) -> None:
    """The splits layout by hand: splits/<name> (N,) int8 codes, attrs names (code i =
    names[i])."""
    g = zarr.open_group(store, mode="r+")
    a = g.create_array(f"splits/{name}", shape=codes.shape, dtype="int8", chunks=(64,),
                       overwrite=True)
    a[:] = codes
    a.attrs.update({"names": names, "complete": True})


@pytest.fixture(scope="session")
def small_sizes() -> list[int]:
    """Item sizes of :func:`small_store`'s stores (group ids 1000 + item)."""
    return list(SMALL_SIZES)


@pytest.fixture(scope="session")
def small_store(tmp_path_factory: pytest.TempPathFactory) -> Callable[[int], str]:
    """``small_store(chunk_rows)``: a complete store of ``SMALL_SIZES`` items (seed 3), built
    once per chunk size per session. Read only: ``copy_store`` it to add splits or break it."""
    built: dict[int, str] = {}

    def get(chunk_rows: int = 8) -> str:
        if chunk_rows not in built:
            built[chunk_rows] = _build_store(tmp_path_factory.mktemp(f"small{chunk_rows}"),
                                            chunk_rows=chunk_rows)
        return built[chunk_rows]

    return get


@pytest.fixture(scope="session")
def copy_store(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], str]:
    """``copy_store(path, name)``: a private copy of a (shared, read-only) local store."""
    def copy(path: str, name: str) -> str:
        dst = tmp_path_factory.mktemp(name) / "s.zarr"
        shutil.copytree(path, dst)
        return str(dst)

    return copy


@pytest.fixture(scope="session")
def write_split() -> Callable[..., None]:
    """``write_split(store, codes, name="default", names=["train", "val", "test"])``."""
    return _write_split


@pytest.fixture(scope="session")
def build_store() -> Callable[..., str]:
    """``build_store(tmp, sizes=SMALL_SIZES, chunk_rows=8, seed=3)``: a fresh store to change."""
    return _build_store


# ------------------------------------------------ the analysed store (info, report, notebook)

INFO_SIZES = [40, 50, 30, 40]  # 160 rows, 10 chunks of 16
INFO_FEATURES = 6


def build_info_store(tmp: Path, *, analysed: bool = True) -> str:
    """A small complete store; with ``analysed``, also splits/default and stats all + train
    (histograms, correlation, mutual information), written with the public functions."""
    items = make_items(INFO_SIZES, n_features=INFO_FEATURES)
    store = tmp / "s.zarr"
    cfg = write_config(tmp / "c.yaml", store=store, n_features=INFO_FEATURES,
                       paths=write_items(tmp / "b", items),
                       ingest={"chunk_rows": 16, "task_chunks": 1},
                       stats={"correlation": True})  # the report draws it from ingest alone
    ingest(cfg, progress=False)
    if analysed:
        run_split(str(store), seed=1)
        compute_stats(str(store), bins=8, progress=False)
        compute_stats(str(store), split="train", bins=8, progress=False)
    return str(store)


@pytest.fixture(scope="session")
def analysed_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """160 rows x 6 features with a split and statistics; shared read-only by the info, report
    and notebook tests."""
    return build_info_store(tmp_path_factory.mktemp("analysed"))


@pytest.fixture(scope="session")
def _ingested_info_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    return build_info_store(tmp_path_factory.mktemp("ingested"), analysed=False)


@pytest.fixture
def ingested_store(_ingested_info_store: str, tmp_path: Path) -> str:
    """The analysed store's data, ingest only (no splits or computed statistics); a fresh
    copy per test, free to change."""
    dst = tmp_path / "ingested" / "s.zarr"
    shutil.copytree(_ingested_info_store, dst)
    return str(dst)


# ----------------------------------------------------- the python source over producers.py

def _python_config(store: Path | str, **source: Any) -> dict[str, Any]:
    """A config dict for the python source over ``producers.py``: 4 features, chunks of 8."""
    return {"store": str(store), "schema": {"features": 4, "heads": PRODUCER_HEADS},
            "source": {"kind": "python", "group": True, "path": [str(TESTS)], **source},
            "ingest": {"chunk_rows": 8, "workers": 2}}


def _assert_exactly_once(store: Path | str, items: list[tuple[int, int]],
                         storage_options: dict[str, Any] | None = None) -> None:
    """Every (item, row) exactly once, each row equal to process(item)[row], no holes
    (``storage_options`` for a store on object storage, read with plain zarr)."""
    options = {"storage_options": storage_options} if storage_options else {}
    g = zarr.open_group(str(store), mode="r", **options)
    n = sum(k for _, k in items)
    assert g.attrs["chunkstore"]["status"] == "complete" and g.attrs["chunkstore"]["n_samples"] == n
    assert g["features"].shape == (n, 4) and g["meta/source"].shape == (n, 2)
    src = g["meta/source"][:]
    assert sorted(map(tuple, src.tolist())) == [(k, r) for k, c in enumerate(
        [c for _, c in items]) for r in range(c)]
    x = g["features"][:]
    by_item = {k: make(item) for k, item in enumerate(items) if item[1]}
    expected_x = np.stack([by_item[k]["features"][r] for k, r in src]) if n else x
    np.testing.assert_array_equal(x, expected_x)
    for h in PRODUCER_HEADS:
        np.testing.assert_array_equal(g[f"labels/{h}"][:],
                                      [by_item[k]["labels"][h][r] for k, r in src])
        np.testing.assert_array_equal(g[f"masks/{h}"][:],
                                      np.stack([by_item[k]["masks"][h][r] for k, r in src]))
    np.testing.assert_array_equal(g["meta/group"][:], src[:, 0])
    assert sorted(completed_tasks(str(store))) == list(range(-(-n // 8)))  # no chunk holes
    np.testing.assert_allclose(g["stats/all/mean"][:], x.astype(np.float64).mean(0), rtol=1e-12)


@pytest.fixture(scope="session")
def producers_path() -> str:
    """The directory of ``producers.py`` (for ``source.path`` and ``PYTHONPATH``)."""
    return str(TESTS)


@pytest.fixture(scope="session")
def python_config() -> Callable[..., dict[str, Any]]:
    """``python_config(store, **source)``: a python-source config over ``producers.py``."""
    return _python_config


@pytest.fixture(scope="session")
def assert_exactly_once() -> Callable[..., None]:
    """``assert_exactly_once(store, items, storage_options=None)`` for a store of
    ``producers.process`` items."""
    return _assert_exactly_once


# ------------------------------------------------------------- the synthetic cluster store

SYNTHETIC = {"kind": "synthetic", "n_samples": 30_000, "seed": 3, "item_rows": [1, 700]}


def _synthetic_config(store: Path | str, **ingest_options: Any) -> dict[str, Any]:
    """30,000 synthetic rows, 32 features, chunks of 256, one chunk per task (118 tasks)."""
    return {"store": str(store), "schema": {"features": 32, "heads": {"a": 7, "b": 3}},
            "source": SYNTHETIC,
            "ingest": {"workers": 2, "chunk_rows": 256, "task_chunks": 1, **ingest_options},
            "stats": {"correlation": False}}


def _wait_for_records(store: Path | str, n: int, proc: subprocess.Popen | None = None,
                     seconds: float = 120) -> None:
    """Waits until ``n`` tasks are committed (and ``proc``, when given, still runs)."""
    deadline = time.time() + seconds
    while len(completed_tasks(str(store))) < n:
        assert proc is None or proc.poll() is None, "the ingest ended before the kill"
        assert time.time() < deadline, "the ingest made no progress"
        time.sleep(0.005)


@pytest.fixture(scope="session")
def synthetic_config() -> Callable[..., dict[str, Any]]:
    """``synthetic_config(store, **ingest)``: 30,000 synthetic rows in 118 tasks."""
    return _synthetic_config


@pytest.fixture(scope="session")
def wait_for_records() -> Callable[..., None]:
    """``wait_for_records(store, n, proc=None)``: until ``n`` tasks are committed."""
    return _wait_for_records


# ------------------------------------------------------------------- the statistics oracle

ORACLE_HEADS = {"move": 5, "rare": 4}
ORACLE_SIZES = [0, 1, 255, 1, 0, 513, 2049, 7, 0, 174]  # zero- and one-row blocks; 3000 rows


def adversarial(n: int = 3000, seed: int = 0, chunk: int = 256) -> np.ndarray:
    """float32 columns built to break naive formulas (see tests/core/test_moments.py)."""
    rng = np.random.default_rng(seed)
    cols = [
        rng.normal(1e4, 1.0, n),                         # 0 offset 1e4
        rng.normal(1e6, 1.0, n),                         # 1 offset 1e6
        np.zeros(n),                                     # 2 constant 0
        np.full(n, 3.0),                                 # 3 constant 3.0
        np.full(n, 1e30),                                # 4 constant 1e30
        np.where(rng.random(n) < 0.01, np.nan, rng.normal(0, 1, n)),  # 5 1% NaN
        np.full(n, np.nan),                              # 6 all NaN
        rng.normal(5, 2, n),                             # 7 +/-inf sprinkled below
        base := rng.normal(0, 1, n),                     # 8 near-collinear with 9
        base + rng.normal(0, 1e-3, n),                   # 9
        rng.normal(-2, 0.5, n),                          # 10 an all-NaN chunk below
        rng.exponential(1.0, n),                         # 11 skewed
    ]
    x = np.stack(cols, axis=1).astype(np.float32)
    x[rng.choice(n, 5, replace=False), 7] = np.inf
    x[rng.choice(n, 3, replace=False), 7] = -np.inf
    x[chunk:2 * chunk, 10] = np.nan
    return x


def labels_for(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """'rare': class 3 has one sample and classes are missing from most blocks."""
    rng = np.random.default_rng(seed)
    rare = np.where(np.arange(n) < n // 2, 0, 1)
    rare[n - 7] = 3
    return {"move": rng.integers(0, 5, n), "rare": rare}


def masks_for(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed + 1)
    return {h: (rng.random((n, k)) < 0.4).astype(np.int8) for h, k in ORACLE_HEADS.items()}


def reference(x: np.ndarray) -> dict[str, np.ndarray]:
    """Per-column statistics in float64 over finite values, one column at a time."""
    v = x.astype(np.float64)
    fin = np.isfinite(v)
    out: dict[str, list[float]] = {k: [] for k in (
        "count", "nan", "inf", "min", "max", "mean", "var", "skew", "kurt")}
    for j in range(v.shape[1]):
        c = v[fin[:, j], j]
        out["count"].append(c.size)
        out["nan"].append(int(np.isnan(v[:, j]).sum()))
        out["inf"].append(int(np.isinf(v[:, j]).sum()))
        if c.size == 0:
            for k in ("min", "max", "mean", "var", "skew", "kurt"):
                out[k].append(np.nan)
            continue
        d = c - c.mean()
        m2, m3, m4 = (d ** 2).sum(), (d ** 3).sum(), (d ** 4).sum()
        out["min"].append(c.min())
        out["max"].append(c.max())
        out["mean"].append(c.mean())
        out["var"].append(m2 / c.size)
        out["skew"].append(np.sqrt(c.size) * m3 / m2 ** 1.5 if m2 > 0 else np.nan)
        out["kurt"].append(c.size * m4 / m2 ** 2 - 3.0 if m2 > 0 else np.nan)
    return {k: np.array(a) for k, a in out.items()}


def reference_corr(x: np.ndarray) -> np.ndarray:
    """Pairwise-complete Pearson correlation in float64."""
    v = x.astype(np.float64)
    fin = np.isfinite(v)
    f = v.shape[1]
    r = np.full((f, f), np.nan)
    for i in range(f):
        for j in range(f):
            ok = fin[:, i] & fin[:, j]
            if not ok.any():
                continue
            a, b = v[ok, i] - v[ok, i].mean(), v[ok, j] - v[ok, j].mean()
            den = np.sqrt((a * a).sum() * (b * b).sum())
            if den > 0:
                r[i, j] = (a * b).sum() / den
    return r


def blocks(x: np.ndarray, sizes: list[int] = ORACLE_SIZES) -> list[slice]:
    """Row slices of consecutive blocks of ``sizes`` rows covering ``x``."""
    cuts = np.cumsum([0, *sizes])
    assert cuts[-1] == len(x)
    return [slice(a, b) for a, b in zip(cuts[:-1], cuts[1:], strict=True)]


@pytest.fixture(scope="session")
def oracle() -> SimpleNamespace:
    """Adversarial float32 data and float64 reference statistics (tests/core, tests/stats)."""
    return SimpleNamespace(HEADS=ORACLE_HEADS, SIZES=ORACLE_SIZES, adversarial=adversarial,
                           labels_for=labels_for, masks_for=masks_for, reference=reference,
                           reference_corr=reference_corr, blocks=blocks)


# ------------------------------------------------------------------------ moto S3 servers

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_moto() -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    """A moto S3 server subprocess on a free loopback port, once it accepts connections."""
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                               str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if server.poll() is not None or time.time() > deadline:
                server.kill()
                raise RuntimeError("moto did not start") from None
            time.sleep(0.1)
    return server, {"endpoint_url": f"http://127.0.0.1:{port}", "key": f"key-{port}",
                    "secret": f"secret-{port}"}


@pytest.fixture(scope="session")
def moto_server() -> Iterator[Callable[[], dict[str, Any]]]:
    """``moto_server()`` starts a separate moto S3 server process (on loopback) and returns
    its fsspec storage options; every server started is stopped at the end of the session.

    Separate *processes*: moto's in-process ``ThreadedMotoServer`` keeps one backend per
    process, so two of them would serve the same buckets.
    """
    servers: list[subprocess.Popen[bytes]] = []

    def start() -> dict[str, Any]:
        server, options = _start_moto()
        servers.append(server)
        return options

    yield start
    for server in servers:
        server.kill()
        server.wait()
