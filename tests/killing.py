"""SIGKILL of a coordinator process once it has committed some records (crash tests)."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable

import psutil


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
