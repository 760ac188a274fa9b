"""Ingest + loader of two chunkstore versions, interleaved: `python -m benchmarks.compare_revisions
REV [REPEATS]` compares `git archive REV` with the working tree on a 100,000 x 893 synthetic
store (2 workers; loader: 2 epochs of 256-row shuffled batches). Works for versions before the
layered package too, since it only uses the CLI and ``chunkstore.open``. Prints JSON lines;
measure on a quiet machine."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

CONFIG = """store: {store}
schema: {{features: 893, heads: {{action_type: 12, ability: 48, target_unit: 64, target_x: 32,
  target_y: 32, queue: 2, delay: 16}}}}
source: {{kind: synthetic, n_samples: 100000, seed: 0, item_rows: [100, 1000]}}
ingest: {{workers: 2}}
"""
LOADER = """import sys, time, chunkstore
ld = chunkstore.open(sys.argv[1]).loader(batch_size=256, seed=0)
n, t0 = 0, time.perf_counter()
for epoch in range(2):
    ld.set_epoch(epoch)
    n += sum(1 for _ in ld)
print(n / (time.perf_counter() - t0))
"""


def measure(tag: str, path: str | None, work: str, rep: int) -> dict[str, object]:
    d = os.path.join(work, f"{tag}{rep}")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    with open(os.path.join(d, "c.yaml"), "w") as f:
        f.write(CONFIG.format(store=os.path.join(d, "s.zarr")))
    env = {**os.environ, **({"PYTHONPATH": path} if path else {})}
    run = {"env": env, "cwd": work, "check": True, "capture_output": True, "text": True}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "chunkstore.cli", "ingest", f"{d}/c.yaml", "--quiet"],
                   **run)  # type: ignore[call-overload]
    wall = time.perf_counter() - t0
    with open(f"{d}/s.zarr/_chunkstore/summary.json") as f:
        summary = json.load(f)
    out = subprocess.run([sys.executable, "-c", LOADER, f"{d}/s.zarr"], **run)  # type: ignore
    return {"version": tag, "repeat": rep, "ingest_wall_s": round(wall, 2),
            "ingest_summary_s": round(summary["wall_seconds"], 2),
            "loader_batches_per_s": round(float(out.stdout), 1), "load1": os.getloadavg()[0]}


def main() -> None:
    rev, repeats = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 3
    work = tempfile.mkdtemp(prefix="chunkstore-revisions-")
    old = os.path.join(work, "src")
    os.makedirs(old)
    archive = subprocess.run(["git", "archive", rev, "chunkstore"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", old], input=archive, check=True)
    for rep in range(repeats):
        for tag, path in ((rev, old), ("worktree", None)):
            print(json.dumps(measure(tag, path, work, rep)), flush=True)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
