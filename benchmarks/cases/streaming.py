"""Streaming ingest of user code vs ordered + counting pass and vs Pool -> npz + merge (issue 6)."""

from __future__ import annotations

import os
import sys
from typing import Any

import numpy as np

from .. import fixtures
from ..harness import REPO, Context, info, summary, target

TITLE = "Streaming ingest from user code (issue 6)"
DEFAULT_ROWS = 547_000
ABOUT = """\
Producer: `examples/replay_producer.py` (0 to ~1,500 samples per replay, 10% empty) with
`REPLAYS_WORK_MS=200` of simulated parsing per replay; the fewest replays whose samples reach
the row count. 2 workers everywhere. (a) `chunkstore ingest` with streaming placement (the
default); (b) `placement: ordered` + `counting_pass: true` (process runs twice); (c1) a
`multiprocessing.Pool(2)` saves one `.npz` per replay, (c2) the two-pass merge of the ingest
case -> `np.save`; (c) = c1 + c2 (peak: the larger). (a') streaming with a quarter of the
replays: worker peak RSS must not grow with N (the summary's `worker_peak_rss`)."""
ENV = {"REPLAYS_WORK_MS": "200"}


def _producer() -> Any:
    sys.path.insert(0, str(REPO / "examples"))
    import replay_producer

    return replay_producer


def produce_npz(out_dir: str, workers: int) -> dict[str, Any]:
    """(c1): a Pool runs ``process_replay`` and saves one uncompressed .npz per replay."""
    import multiprocessing

    os.makedirs(out_dir, exist_ok=True)
    with multiprocessing.Pool(workers) as pool:
        rows = sum(pool.imap_unordered(_save_one, [(k, name, out_dir) for k, name in
                                                   enumerate(_producer().list_replays())]))
    return {"rows": rows}


def _save_one(job: tuple[int, str, str]) -> int:
    k, name, out_dir = job
    d = _producer().process_replay(name)
    np.savez(os.path.join(out_dir, f"replay_{k:06d}.npz"),
             strategic_features=d["features"], group=d["group"],
             **{f"labels_{h}": v for h, v in d["labels"].items()},
             **{f"masks_{h}": v for h, v in d["masks"].items()})
    return len(d["features"])


def run(ctx: Context) -> dict[str, Any]:
    import zarr

    steps, n, total = _producer()._steps, 0, 0
    while total < ctx.rows:
        total, n = total + steps(f"replays/game_{n:06d}.rep"), n + 1
    src = {"kind": "python", "path": [str(REPO / "examples")], "group": True,
           "items": "replay_producer:list_replays", "process": "replay_producer:process_replay"}
    w, runs = ctx.work, {}
    for key, replays, extra in (("a", n, {}), ("b", n, {"placement": "ordered",
                                                          "counting_pass": True}),
                                ("a'", max(1, n // 4), {})):
        cfg = fixtures.write_config(w / f"{key}.yaml", w / f"{key}.zarr", {**src, **extra},
                                    ingest={"workers": 2})
        runs[key] = lambda cfg=cfg, key=key, r=replays: ctx.cli(
            f"({key})", "ingest", cfg, "--quiet", "--overwrite", clean=w / f"{key}.zarr",
            env={**ENV, "REPLAYS_N": str(r)})
    runs["c1"] = lambda: ctx.step("(c1)", "streaming:produce_npz", clean=w / "npz",
                                  env={**ENV, "REPLAYS_N": str(n)}, out_dir=str(w / "npz"),
                                  workers=2)
    runs["c2"] = lambda: ctx.step("(c2)", "ingest:merge_npz", clean=w / "npy",
                                  batch_dir=str(w / "npz"), out_dir=str(w / "npy"))
    best = ctx.best(runs)
    s = {k: summary(w / f"{k}.zarr") for k in ("a", "b", "a'")}
    c_wall = best["c1"].wall + best["c2"].wall
    c_rss = max(best["c1"].peak_rss, best["c2"].peak_rss)
    names = {"a": "(a) streaming (default)", "b": "(b) ordered + counting pass",
             "a'": "(a') streaming, 1/4 of the replays"}
    rows = [{"method": names[k], "rows": s[k]["rows"], **best[k].fields(),
             "coordinator MiB": s[k]["coordinator_peak_rss"] / 2**20,
             "largest worker MiB": s[k]["worker_peak_rss"] / 2**20,
             "leftover rows": s[k].get("leftover_rows")} for k in names]
    rows += [{"method": "(c1) baseline: Pool -> one .npz per replay", **best["c1"].fields()},
             {"method": "(c2) baseline: merge -> np.save", **best["c2"].fields()},
             {"method": "(c) baseline total", "wall s": c_wall, "peak RSS MiB": c_rss / 2**20}]
    for k, replays in (("a", n), ("a'", max(1, n // 4))):  # every (item, row) exactly once
        src_rows = zarr.open_group(str(w / f"{k}.zarr"), mode="r")["meta/source"][:]
        want = [(i, r) for i in range(replays) for r in range(steps(f"replays/game_{i:06d}.rep"))]
        assert sorted(map(tuple, src_rows.tolist())) == want, f"({k}) meta/source"
    assert s["a"]["rows"] == s["b"]["rows"] == best["c2"].result["rows"]
    a = best["a"]
    return {"tables": [{"rows": rows}], "targets": [
        target("(b) wall / (a) wall: streaming vs ordered + counting pass",
               best["b"].wall / a.wall, ">=", 1.5),
        target("largest worker RSS at N / at N/4 (summary)",
               s["a"]["worker_peak_rss"] / s["a'"]["worker_peak_rss"], "<=", 1.25),
        info("(c) wall / (a) wall: batch files + merge vs streaming", c_wall / a.wall),
        info("(c) peak RSS / (a) peak RSS, process trees", c_rss / a.peak_rss)],
        "notes": [f"{n:,} replays -> {total:,} samples; (a') {max(1, n // 4):,} replays",
                  "verified: meta/source of (a) and (a') holds every (replay, row) pair exactly "
                  "once; (a), (b) and the baseline have the same N"]}
