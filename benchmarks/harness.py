"""The one measurement harness: every measured run of every case goes through :class:`Context`.

- **One run at a time**: ``python -m benchmarks run`` holds an exclusive lock
  (``benchmarks/work/.lock``) for its whole duration, so two benchmark runs never overlap.
- **Idle wait**: before each measured run, wait (at most ``--idle-wait`` s) until the machine's
  CPU use stays below 15% for 3 s; the CPU time other processes used *during* the run is
  recorded as ``other load %`` (share of the machine's CPU time over the run's wall time).
- **Memory**: the process tree (command + every descendant) is sampled every 50 ms with psutil;
  ``peak RSS MiB`` is the largest sum of RSS at one sample. Each sample also reads every
  process's kernel high-water mark (``VmHWM``, Linux), whose largest value is ``max_process``
  (``rss="process"`` columns). Not ``os.wait4``'s ``ru_maxrss``: a child inherits the harness's
  own peak across fork and exec, so every step run after a large one reported the harness's
  size. ``os.wait4`` gives the tree's CPU.
- **Repeats** are interleaved (round 1 of every method, then round 2, ...) and the fastest run
  of each method is kept.
- A measured step of Python code runs in its own process: ``python -m benchmarks step
  MODULE:FUNC JSON``, which prints ``RESULT <json>`` (the function's dict) as its last line.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
WORK = BENCH / "work"
MIB = 2**20
NCPU = os.cpu_count() or 1
CODE = [REPO]  # where chunkstore is imported from: the working tree, or a --rev export


@contextlib.contextmanager
def exclusive(log: Callable[[str], None]) -> Iterator[None]:
    WORK.mkdir(parents=True, exist_ok=True)
    with open(WORK / ".lock", "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log("another benchmark run holds benchmarks/work/.lock; waiting for it")
            fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def wait_for_idle(max_wait: float, threshold: float = 15.0, settle: float = 3.0) -> float:
    """Seconds waited until CPU use stayed below ``threshold`` % for ``settle`` s (or timeout)."""
    import psutil

    t0 = time.monotonic()
    quiet = None
    while (now := time.monotonic()) - t0 < max_wait:
        if psutil.cpu_percent(interval=0.5) < threshold:
            quiet = quiet or now
            if now - quiet >= settle:
                break
        else:
            quiet = None
    return time.monotonic() - t0


@dataclass
class Run:
    label: str
    wall: float  # process start to exit, s
    peak_rss: int  # largest sampled sum of RSS over the process tree, bytes
    max_process: int  # peak RSS (VmHWM) of the largest single process, bytes
    cpu: float  # user + system s of the tree (waited-for processes)
    other_load: float  # % of the machine's CPU used by other processes during the run
    waited: float  # s of idle wait before the run
    result: dict[str, Any] = field(default_factory=dict)  # a step's RESULT dict
    procs: dict[int, tuple[str, int]] = field(default_factory=dict)  # pid -> (cmdline, peak RSS)

    def fields(self, rss: str = "tree") -> dict[str, Any]:
        """The standard columns of a method's row. ``rss="process"``: single-process steps."""
        return {"wall s": self.wall, "peak RSS MiB": (self.peak_rss if rss == "tree" else
                                                      self.max_process) / MIB,
                "CPU s": self.cpu, "other load %": self.other_load}


def _busy() -> float:
    import psutil

    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def _hwm(pid: int) -> int:
    """The kernel's peak RSS of one process's memory since its exec (0 where unknown)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _sample(root: Any, procs: dict[int, tuple[str, int]]) -> int:
    import psutil

    total = 0
    try:
        tree = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    for p in tree:
        try:
            rss = p.memory_info().rss
            cmd = procs[p.pid][0] if p.pid in procs else " ".join(p.cmdline())[:160]
        except psutil.Error:
            continue
        procs[p.pid] = (cmd, max(rss, _hwm(p.pid), procs.get(p.pid, ("", 0))[1]))
        total += rss
    return total


def measure(label: str, argv: list[str], env: dict[str, str], cwd: Path,
            idle_wait: float) -> Run:
    """Run ``argv`` once, measured (see the module docstring); raise if it fails."""
    import psutil

    waited = wait_for_idle(idle_wait) if idle_wait > 0 else 0.0
    os.sync()  # the previous run's dirty pages are not this run's cost
    out_path = WORK / ".stdout"
    with open(out_path, "wb") as out:
        busy0, self0, t0 = _busy(), sum(os.times()[:2]), time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        root, procs, peak = psutil.Process(proc.pid), {}, 0
        while True:
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            peak = max(peak, _sample(root, procs))
            time.sleep(0.05)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        other = _busy() - busy0 - (ru.ru_utime + ru.ru_stime) - (sum(os.times()[:2]) - self0)
    text = out_path.read_text(errors="replace")
    if proc.returncode:
        raise RuntimeError(f"{label}: exit {proc.returncode}: {' '.join(argv)}\n{text[-4000:]}")
    lines = [ln for ln in text.splitlines() if ln.startswith("RESULT ")]
    largest = max((r for _, r in procs.values()), default=ru.ru_maxrss * 1024)
    return Run(label, wall, peak, largest, ru.ru_utime + ru.ru_stime,
               max(0.0, 100 * other / (wall * NCPU)), waited,
               json.loads(lines[-1][7:]) if lines else {}, procs)


@dataclass
class Context:
    """What a case gets: its size, where to work, and measured ways to run things."""

    case: str
    rows: int
    repeats: int
    idle_wait: float
    smoke: bool
    runs: list[Run] = field(default_factory=list)

    @property
    def work(self) -> Path:
        path = WORK / self.case
        path.mkdir(parents=True, exist_ok=True)
        return path

    def log(self, msg: str) -> None:
        print(f"[{self.case} {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {**os.environ, **(extra or {})}

    def run(self, label: str, argv: list[Any], *, env: dict[str, str] | None = None,
            clean: Path | None = None) -> Run:
        """Measure a command (``python ...`` uses this interpreter); ``clean`` is deleted first."""
        if clean is not None:
            shutil.rmtree(clean, ignore_errors=True) if clean.is_dir() else clean.unlink(
                missing_ok=True)
        argv = [sys.executable if a == "python" else str(a) for a in argv]
        self.log(f"{label} ...")
        r = measure(label, argv, self.env(env), CODE[0], self.idle_wait)
        self.log(f"{label}: {r.wall:.2f} s, peak RSS {r.peak_rss / MIB:,.0f} MiB, other load "
                 f"{r.other_load:.0f}%")
        self.runs.append(r)
        return r

    def step(self, label: str, func: str, *, clean: Path | None = None,
             env: dict[str, str] | None = None, **kwargs: Any) -> Run:
        """Measure ``benchmarks.cases.<func>`` (``module:function``) in its own process."""
        return self.run(label, ["python", "-m", "benchmarks", "step", func, json.dumps(kwargs)],
                        clean=clean, env=env)

    def cli(self, label: str, *args: Any, **kw: Any) -> Run:
        return self.run(label, ["python", "-m", "chunkstore.cli", *args], **kw)

    def best(self, methods: dict[str, Callable[[], Run]],
             key: Callable[[Run], float] = lambda r: r.wall) -> dict[str, Run]:
        """Interleaved repeats of every method; the fastest run (by ``key``) of each."""
        best: dict[str, Run] = {}
        for _ in range(self.repeats):
            for label, fn in methods.items():
                r = fn()
                if label not in best or key(r) < key(best[label]):
                    best[label] = r
        return best


def use_code(path: Path) -> None:
    """Run every command (and this process's imports) against chunkstore in ``path``."""
    CODE[0] = path
    os.environ["PYTHONPATH"] = os.pathsep.join([str(path), str(REPO)])
    sys.path.insert(0, str(path))


def run_step(func: str, kwargs_json: str) -> None:
    """The child side of :meth:`Context.step`."""
    import importlib
    import resource

    module, name = func.split(":")
    out = getattr(importlib.import_module(f"benchmarks.cases.{module}"), name)(
        **json.loads(kwargs_json))
    out["self_peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print("RESULT " + json.dumps(out), flush=True)


def target(name: str, measured: float, op: str, want: float, fmt: str = "{:.2f}") -> dict:
    """One line of a case's ``targets``: ``op`` is ``<``, ``<=`` or ``>=``."""
    ok = {"<": measured < want, "<=": measured <= want, ">=": measured >= want}[op]
    return {"name": name, "target": f"{op} {fmt.format(want)}", "measured": fmt.format(measured),
            "pass": bool(ok)}


def info(name: str, measured: float, fmt: str = "{:.2f}") -> dict:
    """A measured ratio without a target (kept for comparison)."""
    return {"name": name, "target": "-", "measured": fmt.format(measured), "pass": None}


def tree_bytes(path: Path, exclude: tuple[str, ...] = ("_chunkstore",)) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*")
               if p.is_file() and not set(p.relative_to(path).parts) & set(exclude))


def summary(store: Path) -> dict[str, Any]:
    """What ``chunkstore ingest`` saved about itself in the store."""
    return dict(json.loads((store / "_chunkstore" / "summary.json").read_text()))
