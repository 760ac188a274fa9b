"""Shared helpers for the benchmark scripts in this folder.

- :func:`run_measured` runs a command as a subprocess and measures its wall time and the memory
  of its whole process tree (the command plus every process it starts, e.g. a process pool).
- :func:`markdown_table` formats a table; :func:`write_section` replaces one script's section of
  ``RESULTS.md`` (between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``), leaving the rest of
  the file as it is.
- :func:`machine_info`, :func:`package_versions`, :func:`git_state`, :func:`tree_bytes`: the
  context every result needs.

Only the standard library and psutil are imported at module level, so a measured child process
that imports this module stays small.

How memory is measured (Linux)
------------------------------
The measured command is started through a tiny wrapper process (``python -c WRAPPER cmd ...``)
that only starts the command, waits for it and reports ``getrusage(RUSAGE_CHILDREN).ru_maxrss``.
Meanwhile the parent polls the wrapper's descendants every ``interval`` seconds, reading
``/proc/<pid>/status`` (VmRSS, VmHWM) and, when ``pss=True``, ``/proc/<pid>/smaps_rollup`` (Pss).
The wrapper itself is not counted. Reported:

- ``peak_rss_total``: the largest *sum* of VmRSS over all processes of the tree seen at one poll.
  This is the number to compare: the memory the job needs at once. It is sampled, so a spike
  shorter than the poll interval can be missed (a lower bound on the true peak).
- ``sum_hwm``: the sum over processes of each one's kernel high-water mark (VmHWM, exact per
  process). Peaks of different processes need not coincide, so this is an upper bound.
- ``peak_pss_total``: like ``peak_rss_total`` but proportional set size, which splits shared pages
  (shared libraries, ...) between the processes that map them instead of counting them in each.
- ``max_rss_single``: the largest single process, from the poller (max VmHWM) and from
  ``RUSAGE_CHILDREN`` in the wrapper (exact, kernel-reported; covers every descendant that was
  waited for, as pool workers are). ``RUSAGE_CHILDREN`` is a *maximum over processes*, not a sum,
  so it alone is wrong for a multi-process job; it is only a cross-check here.

CPU: the wrapper also reports user + system time of its waited-for descendants (the whole
tree's CPU seconds). The machine's busy CPU time during the run, minus that and the poller's own
CPU, is ``other_cpu_seconds``: work of unrelated processes that competed with the run and can
skew its wall time on a shared machine. :func:`wait_for_idle` waits for such load to pass first.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

MIB = 2**20

# Runs argv[1:], waits, then writes the command's wall time (start to exit, without the
# wrapper's own start-up) and the rusage of its waited-for descendants (peak RSS of the largest
# one, KiB on Linux; CPU seconds of all of them) as JSON to the file named by the environment
# variable, and exits with the command's return code.
_WRAPPER = (
    "import json, os, resource, subprocess, sys, time\n"
    "t0 = time.perf_counter()\n"
    "rc = subprocess.call(sys.argv[1:])\n"
    "wall = time.perf_counter() - t0\n"
    "ru = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
    "with open(os.environ['BENCH_RUSAGE_OUT'], 'w') as fh:\n"
    "    json.dump({'maxrss_kib': ru.ru_maxrss, 'utime': ru.ru_utime, 'stime': ru.ru_stime,\n"
    "               'wall': wall}, fh)\n"
    "sys.exit(rc)\n"
)


def _busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent not idle since boot."""
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


@dataclass
class ProcStats:
    """What the poller saw of one process."""

    pid: int
    cmd: str
    max_rss: int = 0  # bytes, largest sampled VmRSS
    hwm: int = 0  # bytes, last VmHWM read (the kernel's peak RSS of the process)
    max_pss: int = 0  # bytes


@dataclass
class RunResult:
    """A measured run of a command."""

    argv: list[str]
    returncode: int
    wall_seconds: float
    stdout: str
    stderr: str
    peak_rss_total: int  # bytes: max over polls of the sum of VmRSS over the tree
    peak_pss_total: int  # bytes: same with Pss (0 when not sampled)
    sum_hwm: int  # bytes: sum over processes of VmHWM (upper bound of the tree's peak)
    max_rss_single: int  # bytes: largest VmHWM of one process seen by the poller
    rusage_maxrss: int  # bytes: RUSAGE_CHILDREN ru_maxrss reported by the wrapper
    cpu_seconds: float  # user + system CPU of the command and every waited-for descendant
    other_cpu_seconds: float  # busy CPU of the machine during the run not explained by the
    #                           command or the poller: other load that may skew the timing
    load_before: tuple[float, float, float]  # os.getloadavg() just before the start
    polls: int
    interval: float
    processes: list[ProcStats] = field(default_factory=list)
    lock_wait_seconds: float = 0.0  # time spent waiting for other benchmarks' runs to end
    idle_wait_seconds: float = 0.0  # time spent in wait_for_idle before the start

    def check(self) -> RunResult:
        """Raise with the command's output when it failed."""
        if self.returncode != 0:
            raise RuntimeError(
                f"command failed with exit code {self.returncode}: {' '.join(self.argv)}\n"
                f"--- stdout ---\n{self.stdout[-5000:]}\n--- stderr ---\n{self.stderr[-5000:]}")
        return self


def _read_status(pid: int) -> tuple[int, int] | None:
    """(VmRSS, VmHWM) in bytes from /proc/<pid>/status; None if gone or a zombie."""
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:
            text = fh.read()
    except OSError:
        return None
    rss = hwm = -1
    for line in text.splitlines():
        if line.startswith(b"VmRSS:"):
            rss = int(line.split()[1]) * 1024
        elif line.startswith(b"VmHWM:"):
            hwm = int(line.split()[1]) * 1024
    if rss < 0 or hwm < 0:  # a zombie has no memory lines
        return None
    return rss, hwm


def _read_pss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as fh:
            for line in fh:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _cmdline(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())[:200]
    except psutil.Error:
        return "?"


MEASURE_LOCK = Path(tempfile.gettempdir()) / "chunkstore-bench-measure.lock"


def run_measured(argv: Sequence[str], *, interval: float = 0.05, pss: bool = True,
                 cwd: str | os.PathLike[str] | None = None,
                 env: Mapping[str, str] | None = None, idle_wait: float = 0.0,
                 log: Any = None) -> RunResult:
    """Run ``argv`` and measure wall time and process-tree memory (see the module docstring).

    stdout and stderr go to temporary files (no pipe can fill up and block the child) and are
    returned as text. Wall time is measured in the wrapper, from just before it starts the
    command to the command's exit, so it includes the command's interpreter start-up and
    imports, as a user running it would see, but not the wrapper's own start-up.

    Measured runs of every benchmark script that uses this function take turns: each holds an
    exclusive lock on :data:`MEASURE_LOCK` while it runs, so two benchmarks never time their
    runs against each other. With ``idle_wait`` > 0, :func:`wait_for_idle` (at most that many
    seconds) is called once the lock is held, just before the start.
    """
    import fcntl

    t_lock = time.monotonic()
    with open(MEASURE_LOCK, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if log:
                log(f"another benchmark is measuring ({MEASURE_LOCK}); waiting for its run")
            fcntl.flock(lock, fcntl.LOCK_EX)
        lock_wait = time.monotonic() - t_lock
        idle = wait_for_idle(max_wait=idle_wait, log=log)[0] if idle_wait > 0 else 0.0
        result = _run_measured(argv, interval=interval, pss=pss, cwd=cwd, env=env)
    result.lock_wait_seconds = lock_wait
    result.idle_wait_seconds = idle
    return result


def _run_measured(argv: Sequence[str], *, interval: float, pss: bool,
                  cwd: str | os.PathLike[str] | None,
                  env: Mapping[str, str] | None) -> RunResult:
    argv = [str(a) for a in argv]
    with tempfile.TemporaryDirectory(prefix="bench_") as tmp:
        out_p, err_p, ru_p = (Path(tmp) / n for n in ("stdout", "stderr", "rusage"))
        full_env = dict(os.environ if env is None else env)
        full_env["BENCH_RUSAGE_OUT"] = str(ru_p)
        procs: dict[int, ProcStats] = {}
        peak_rss = peak_pss = polls = 0
        load_before = os.getloadavg()
        with open(out_p, "wb") as out, open(err_p, "wb") as err:
            self_cpu0 = sum(os.times()[:2])
            busy0 = _busy_cpu_seconds()
            t0 = time.perf_counter()
            wrapper = subprocess.Popen([sys.executable, "-c", _WRAPPER, *argv], stdout=out,
                                       stderr=err, cwd=cwd, env=full_env)
            root = psutil.Process(wrapper.pid)
            while True:
                done = wrapper.poll() is not None
                if done:
                    wall = time.perf_counter() - t0
                    busy = _busy_cpu_seconds() - busy0
                    self_cpu = sum(os.times()[:2]) - self_cpu0
                    break
                try:
                    tree = root.children(recursive=True)
                except psutil.Error:
                    tree = []
                total_rss = total_pss = 0
                for p in tree:
                    st = _read_status(p.pid)
                    if st is None:
                        continue
                    rss, hwm = st
                    ps = procs.get(p.pid)
                    if ps is None:
                        ps = procs[p.pid] = ProcStats(p.pid, _cmdline(p))
                    ps.max_rss = max(ps.max_rss, rss)
                    ps.hwm = max(ps.hwm, hwm)
                    total_rss += rss
                    if pss:
                        v = _read_pss(p.pid)
                        ps.max_pss = max(ps.max_pss, v)
                        total_pss += v
                peak_rss = max(peak_rss, total_rss)
                peak_pss = max(peak_pss, total_pss)
                polls += 1
                time.sleep(interval)
        import json

        ru = json.loads(ru_p.read_text()) if ru_p.exists() else {}
        cpu = float(ru.get("utime", 0.0) + ru.get("stime", 0.0))
        wall = float(ru.get("wall", wall))  # without the wrapper's start-up
        return RunResult(
            argv=argv, returncode=wrapper.returncode, wall_seconds=wall,
            stdout=out_p.read_text(errors="replace"), stderr=err_p.read_text(errors="replace"),
            peak_rss_total=peak_rss, peak_pss_total=peak_pss,
            sum_hwm=sum(p.hwm for p in procs.values()),
            max_rss_single=max((p.hwm for p in procs.values()), default=0),
            rusage_maxrss=int(ru.get("maxrss_kib", 0)) * 1024, cpu_seconds=cpu,
            other_cpu_seconds=max(0.0, busy - cpu - self_cpu), load_before=load_before,
            polls=polls, interval=interval,
            processes=sorted(procs.values(), key=lambda p: p.pid),
        )


def wait_for_idle(threshold: float = 15.0, settle: float = 3.0, max_wait: float = 600.0,
                  log: Any = None) -> tuple[float, float]:
    """Wait until the machine's CPU use stays below ``threshold`` percent for ``settle`` s.

    Gives up after ``max_wait`` seconds. Returns (seconds waited, last CPU percent seen). The
    settle time is stretched by a random 0-100%, so that several waiting benchmarks do not all
    start at the same moment the machine goes quiet.
    """
    import random

    settle *= 1.0 + random.random()
    t0 = time.monotonic()
    quiet_since = None
    told = False
    while True:
        pct = psutil.cpu_percent(interval=0.5)
        now = time.monotonic()
        if pct < threshold:
            quiet_since = quiet_since or now
            if now - quiet_since >= settle:
                return now - t0, pct
        else:
            quiet_since = None
            if log and not told:
                log(f"machine busy ({pct:.0f}% CPU); waiting up to {max_wait:.0f} s for it to "
                    "settle")
                told = True
        if now - t0 > max_wait:
            if log:
                log(f"still {pct:.0f}% CPU busy after {max_wait:.0f} s; measuring anyway")
            return now - t0, pct


def tree_bytes(path: str | os.PathLike[str], exclude: Iterable[str] = ()) -> tuple[int, int, int]:
    """(apparent bytes, allocated bytes, files) of every file under ``path``.

    Directories named in ``exclude`` are skipped at any depth. Apparent bytes are file sizes
    (what ``ls``/``stat`` report); allocated bytes are the filesystem blocks used (``du``), which
    is larger for many small files.
    """
    skip = set(exclude)
    apparent = allocated = files = 0
    p = Path(path)
    if p.is_file():
        st = p.stat()
        return st.st_size, st.st_blocks * 512, 1
    for root, dirs, names in os.walk(p):
        dirs[:] = [d for d in dirs if d not in skip]
        for n in names:
            st = os.stat(os.path.join(root, n))
            apparent += st.st_size
            allocated += st.st_blocks * 512
            files += 1
    return apparent, allocated, files


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]],
                   align: str | None = None) -> str:
    """A GitHub-flavoured Markdown table, padded so it also reads well in a terminal.

    ``align`` has one letter per column, ``l`` or ``r`` (default: first left, others right).
    """
    body = [[str(c) for c in r] for r in rows]
    align = align or "l" + "r" * (len(headers) - 1)
    widths = [max(len(str(h)), *(len(r[i]) for r in body)) if body else len(str(h))
              for i, h in enumerate(headers)]

    def fmt(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) if a == "l" else c.rjust(w)
                                 for c, w, a in zip(cells, widths, align, strict=True)) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if a == "r" else (":" + "-" * (w + 1))
                          for w, a in zip(widths, align, strict=True)) + "|"
    return "\n".join([fmt([str(h) for h in headers]), rule, *(fmt(r) for r in body)])


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def write_section(results: str | os.PathLike[str], name: str, body: str) -> None:
    """Put ``body`` between ``name``'s markers in ``results``, creating the file or section.

    Everything outside the markers is kept byte for byte; a missing section is appended. The
    file is replaced atomically, so a concurrent reader never sees half of it, and writers
    that use this function take turns (an flock), so none loses another's section.
    """
    import fcntl
    import hashlib

    path = Path(results).resolve()
    start, end = markers(name)
    block = f"{start}\n{body.strip()}\n{end}"
    # several benchmark scripts may finish at once: serialize their read-modify-write
    key = hashlib.sha256(str(path).encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"bench-results-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        text = path.read_text() if path.exists() else "# Benchmark results\n\n"
        i, j = text.find(start), text.find(end)
        if i >= 0 and j > i:
            text = text[:i] + block + text[j + len(end):]
        elif i >= 0 or j >= 0:
            raise ValueError(f"{path}: unbalanced markers for section {name!r}; fix the file "
                             "by hand")
        else:
            text = text.rstrip("\n") + "\n\n" + block + "\n"
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        tmp.write_text(text)
        os.replace(tmp, path)


def machine_info() -> dict[str, Any]:
    """CPU count, RAM, CPU model, OS and Python of this machine."""
    model = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    return {
        "nproc": usable,
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "ram_bytes": psutil.virtual_memory().total,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }


def package_versions(names: Iterable[str]) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for n in names:
        try:
            out[n] = version(n)
        except PackageNotFoundError:
            out[n] = "not installed"
    return out


def git_state(repo: str | os.PathLike[str], paths: Sequence[str] = ()) -> str:
    """``<short commit>`` plus ``(uncommitted changes in: ...)`` for ``paths`` if any."""
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--", *paths],
                               capture_output=True, text=True, check=True).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout?)"
    changed = sorted(line[3:] for line in dirty if line.strip())
    return head + (f" (uncommitted changes in: {', '.join(changed)})" if changed else "")


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def mib(n: float) -> float:
    return n / MIB
