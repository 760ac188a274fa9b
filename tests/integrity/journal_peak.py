"""Measure a streaming ingest's journal: its peak size during the run vs the data written.

Not a test (pytest does not collect it); run it by hand:

    .venv/bin/python tests/integrity/journal_peak.py --replays 40 --correlation

It ingests ``examples/replay_producer.py`` (893 features, 7 heads, 0-1,500 rows per replay) with
streaming placement and 2 workers through the CLI, samples the size of ``_chunkstore/`` every
20 ms, and prints the peak (also without ``versions/``, the stats snapshot a version keeps
after finalize), the size after finalize, the raw data size and the stored size.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).parents[2]


def du(path: Path, skip: str = "") -> int:
    total = 0
    for root, _, files in os.walk(path):
        if skip and skip in Path(root).parts:
            continue
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except FileNotFoundError:  # renamed or removed while we walked
                pass
    return total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--replays", type=int, default=40)
    ap.add_argument("--correlation", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="journal_peak_"))
    store = tmp / "s.zarr"
    cfg = {"store": str(store), "schema": {"features": 893, "heads": {
        "action_type": 12, "ability": 48, "target_unit": 64, "target_x": 32, "target_y": 32,
        "queue": 2, "delay": 16}},
        "source": {"kind": "python", "path": [str(REPO / "examples")], "group": True,
                   "items": "replay_producer:list_replays",
                   "process": "replay_producer:process_replay"},
        "ingest": {"workers": 2}, "stats": {"correlation": args.correlation}}
    (tmp / "c.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "REPLAYS_N": str(args.replays), "REPLAYS_WORK_MS": "0"}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "chunkstore.cli", "ingest",
                             str(tmp / "c.yaml"), "--quiet"], env=env)
    peak = peak_records = 0
    while proc.poll() is None:
        peak = max(peak, du(store / "_chunkstore"))
        peak_records = max(peak_records, du(store / "_chunkstore", skip="versions"))
        time.sleep(0.02)
    assert proc.returncode == 0
    summary = json.loads((store / "_chunkstore" / "summary.json").read_text())
    after = du(store / "_chunkstore")
    raw, stored = summary["raw_bytes"], du(store) - after
    print(json.dumps({"rows": summary["rows"], "correlation": args.correlation,
                      "wall_s": round(time.perf_counter() - t0, 1),
                      "raw_MiB": round(raw / 2**20, 1), "stored_MiB": round(stored / 2**20, 1),
                      "journal_peak_MiB": round(peak / 2**20, 2),
                      "journal_peak_without_versions_MiB": round(peak_records / 2**20, 2),
                      "journal_after_MiB": round(after / 2**20, 2),
                      "peak_over_raw": round(peak / raw, 4),
                      "peak_over_stored": round(peak / stored, 4)}, indent=1))


if __name__ == "__main__":
    main()
