"""The same ingest on the process pool, on a running Dask cluster and with --cluster local."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .. import fixtures
from ..harness import MIB, Context, summary, target

TITLE = "Ingest on a Dask cluster vs the process pool (issue 7)"
DEFAULT_ROWS = 547_000
ABOUT = """\
`configs/large.yaml` written three ways, 2 workers of one thread each: (a) `chunkstore ingest
--workers 2` (process pool); (b) `--scheduler ADDR` on a `dask scheduler` + `dask worker
--nworkers 2 --nthreads 1` started before the timing (their peaks: VmHWM; kept running for all
repeats); (c) `--cluster local --workers 2` (starting and stopping the LocalCluster is
part of its wall). Ingest wall: the summary's. Chunk files of (b) and (c) are compared with (a)
by SHA-256. Scheduler throughput: 2,000 no-op tasks on cluster (b)."""


def digests(store: Path) -> dict[str, str]:
    return {str(p.relative_to(store)): hashlib.sha256(p.read_bytes()).hexdigest()
            for sub in ("features", "labels", "masks", "meta") for p in sorted(
                (store / sub).rglob("*")) if p.is_file()}


def hwm(pid: int) -> int:
    """The kernel's peak RSS of a process (VmHWM), bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def run(ctx: Context) -> dict[str, Any]:
    import psutil
    from distributed import Client, wait

    w, dask = ctx.work, str(Path(sys.executable).with_name("dask"))
    sched_file = w / "scheduler.json"
    sched_file.unlink(missing_ok=True)
    log = open(w / "cluster.log", "wb")  # noqa: SIM115
    procs = [subprocess.Popen([dask, "scheduler", "--scheduler-file", sched_file, "--port", "0",
                               "--dashboard-address", ":0"], stdout=log, stderr=log)]
    try:
        while not sched_file.exists():
            time.sleep(0.2)
        procs.append(subprocess.Popen(
            [dask, "worker", "--scheduler-file", sched_file, "--nworkers", "2", "--nthreads", "1",
             "--memory-limit", "0", "--local-directory", w / "dask"], stdout=log, stderr=log))
        address = json.loads(sched_file.read_text())["address"]
        with Client(address) as client:
            client.wait_for_workers(2, timeout=120)
        argv = {"a": ["--workers", 2], "b": ["--scheduler", address],
                "c": ["--cluster", "local", "--workers", 2]}
        cfgs = {k: fixtures.write_config(w / f"{k}.yaml", w / f"{k}.zarr",
                                         fixtures.synthetic(ctx.rows),
                                         ingest=fixtures.LARGE["ingest"]) for k in argv}
        r = ctx.best({k: (lambda k=k: ctx.cli(f"({k})", "ingest", cfgs[k], *argv[k],
                                              "--overwrite", "--quiet", clean=w / f"{k}.zarr"))
                      for k in argv})
        worker_hwm = max(hwm(p.pid) for p in psutil.Process(procs[1].pid).children(True))
        sched_hwm = hwm(procs[0].pid)
        with Client(address) as client:
            client.submit(abs, -1).result()
            t0 = time.perf_counter()
            wait(client.map(abs, range(-2000, 0)))
            tasks_per_s = 2000 / (time.perf_counter() - t0)
    finally:
        for p in procs[::-1]:
            p.terminate()
            p.wait(timeout=30)
        log.close()
    s = {k: summary(w / f"{k}.zarr") for k in argv}
    want = digests(w / "a.zarr")
    names = {"a": "(a) process pool", "b": "(b) Dask, running scheduler",
             "c": "(c) Dask, --cluster local"}
    rows = [{"method": v, **r[k].fields(), "ingest wall s": s[k]["wall_seconds"],
             "ingest ratio": s[k]["wall_seconds"] / s["a"]["wall_seconds"],
             "coordinator MiB": s[k]["coordinator_peak_rss"] / MIB,
             "largest worker MiB": (worker_hwm if k == "b" else s[k]["worker_peak_rss"]) / MIB,
             "scheduler MiB": sched_hwm / MIB if k == "b" else None,
             "chunk files identical": None if k == "a" else digests(w / f"{k}.zarr") == want}
            for k, v in names.items()]
    tasks = s["a"]["tasks_total"]
    task_s = s["a"]["wall_seconds"] * 2 / tasks
    return {"tables": [{"rows": rows}], "targets": [
        target("ingest wall (b) / (a)", s["b"]["wall_seconds"] / s["a"]["wall_seconds"], "<=",
               1.2)],
        "notes": [f"scheduler: {tasks_per_s:,.0f} no-op tasks/s; an ingest task took ~{task_s:.2f}"
                  f" worker-s ({tasks} tasks), so the scheduler is busy "
                  f"{100 * tasks / tasks_per_s / s['b']['wall_seconds']:.2f}% of ingest (b)",
                  "every run's chunk files compared with (a): see the last column"]}
