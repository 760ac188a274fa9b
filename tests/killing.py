"""Crash-test helpers: SIGKILL a coordinator once it has committed some records; check that the
statistics of a resumed store are exact."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable

import numpy as np
import psutil
import zarr


def kill_after(proc: subprocess.Popen, done: Callable[[], set[int]], records: int,
               seconds: float = 120) -> bool:
    """SIGKILL the coordinator ``proc`` (only it: its workers must notice by themselves) once
    ``done()`` holds ``records`` committed records; False if it finished first. Asserts that
    no worker outlives it."""
    deadline = time.time() + seconds
    while proc.poll() is None and len(committed(done)) < records:
        assert time.time() < deadline, "no progress"
        time.sleep(0.003)
    if proc.poll() is not None:
        return False
    children = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _, alive = psutil.wait_procs(children, timeout=15)
    assert not alive, f"workers outlived the killed coordinator: {alive}"
    return True


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
