"""Crash-test helpers: SIGKILL a coordinator once it has committed some records; check that the
statistics of a resumed store are exact."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psutil
import zarr


def kill_after(proc: subprocess.Popen, done: Callable[[], set[int]], records: int,
               seconds: float = 120) -> bool:
    """SIGKILL the coordinator ``proc`` (only it: its workers must notice by themselves) once
    ``done()`` holds ``records`` committed records; False if it finished first. Asserts that
    no worker outlives it."""
    return kill_when(proc, lambda: len(committed(done)) >= records, seconds=seconds)


def kill_when(proc: subprocess.Popen, ready: Callable[[], bool], delay: float = 0.0,
              seconds: float = 120) -> bool:
    """SIGKILL the coordinator ``proc`` ``delay`` seconds after ``ready()`` first holds; False
    if it finished first. Asserts that no worker outlives it."""
    deadline = time.time() + seconds
    while proc.poll() is None and not ready():
        assert time.time() < deadline, "no progress"
        time.sleep(0.003)
    time.sleep(delay)
    if proc.poll() is not None:
        return False
    children = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _, alive = psutil.wait_procs(children, timeout=60)  # a spawning worker first imports
    assert not alive, f"workers outlived the killed coordinator: {alive}"
    return True


def lock_holder(store: Path | str) -> int | None:
    """The pid in ``<store>/_chunkstore/lock`` (None while there is no readable lock)."""
    try:
        return int(json.loads((Path(store) / "_chunkstore" / "lock").read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def chain_kills(launch: Callable[[], subprocess.Popen], store: Path | str,
                done: Callable[[], set[int]], kills: int, total: int, seed: int) -> int:
    """Start the same ingest ``kills`` times, SIGKILLing each run at a seeded random point:
    three runs in four once ``done()`` holds the next of ``kills`` increasing record counts
    (below 85% of ``total``) plus up to 50 ms; every fourth run 0-0.5 s after it takes the
    store's lock, i.e. during its resume analysis. Returns how many kills landed (a run may
    finish first); the caller then lets one last run finish and checks the store."""
    rng = np.random.default_rng(seed)
    points = np.sort(rng.choice(np.arange(1, max(kills + 1, int(total * 0.85))), kills,
                                replace=False))
    landed = 0
    for i, k in enumerate(points.tolist()):
        proc = launch()
        in_resume = i % 4 == 3
        delay = float(rng.uniform(0, 0.5 if in_resume else 0.05))

        def ready(p: subprocess.Popen = proc, k: int = k, in_resume: bool = in_resume) -> bool:
            return lock_holder(store) == p.pid if in_resume else len(committed(done)) >= k

        landed += kill_when(proc, ready, delay)
    return landed


def committed(done: Callable[[], set[int]]) -> set[int]:
    """``done()``, or nothing while the journal does not exist yet."""
    try:
        return done()
    except OSError:
        return set()


def assert_stats_exact(store: str) -> None:
    """``stats/all`` of a finished store equals a full float64 recompute from its rows: mean
    within 1e-12 relative, variance 1e-10, correlation 1e-9 (when stored), class counts equal."""
    g = zarr.open_group(str(store), mode="r")
    x = g["features"][:].astype(np.float64)
    s = g["stats/all"]
    np.testing.assert_allclose(s["mean"][:], x.mean(0), rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(s["std"][:] ** 2, x.var(0), rtol=1e-10)
    assert (s["count"][:] == len(x)).all()
    if "corr" in s:
        np.testing.assert_allclose(s["corr"][:], np.corrcoef(x, rowvar=False), atol=1e-9)
    for head in g["labels"]:
        k = g[f"masks/{head}"].shape[1]
        np.testing.assert_array_equal(s[f"class_counts/{head}"][:],
                                      np.bincount(g[f"labels/{head}"][:], minlength=k))
