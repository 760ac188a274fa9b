"""What online statistics add to ingest: per task, and for the whole command (issues 3, 13)."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from .. import fixtures
from ..harness import Context, info, summary, target

TITLE = "Online statistics during ingest (issues 3, 13)"
DEFAULT_ROWS = 547_000
ABOUT = """\
Per task (one process, mean of 3 full tasks of the store's own plan, warm cache): assemble
(source read + checks), zarr write of features and of the 15 small arrays into a scratch store
with zarr-python's codec pipeline and (when installed) with zarrs', and `partial_stats` with
moments only and with the co-moment matrix. Whole ingest: `chunkstore ingest` of
`configs/large.yaml` with `stats.online: false`, with moments only (`correlation: false`) and
with `correlation: true`; journal = `_chunkstore/tasks/` bytes."""
VARIANTS = {"off": {"online": False}, "moments": {"online": True, "correlation": False},
            "corr": {"online": True, "correlation": True}}


def task_profile(store: str, scratch: str) -> dict[str, Any]:
    import zarr

    from chunkstore.config import Config, StatsOptions
    from chunkstore.core.plan import Plan
    from chunkstore.ingest.task import assemble, partial_stats
    from chunkstore.sources import open_source
    from chunkstore.store.layout import create_store

    j = Path(store) / "_chunkstore"
    config = Config.from_dict(json.loads((j / "config.json").read_text()))
    plan = Plan.from_dict(json.loads((j / "plan.json").read_text()))
    source = open_source(config.source, config.schema)
    chunk_rows = zarr.open_group(store, mode="r").attrs["chunkstore"]["chunk_rows"]
    mid = len(plan.tasks) // 2
    tasks = [t for t in plan.tasks[mid:mid + 4] if t.rows == plan.tasks[mid].rows][:3]
    try:
        import zarrs  # noqa: F401
        pipelines = {"": None, " (zarrs)": "zarrs.ZarrsCodecPipeline"}
    except ImportError:
        pipelines = {"": None}
    out = dict.fromkeys(["assemble", *(f"write {w}{p}" for p in pipelines
                                       for w in ("features", "small arrays")),
                         "moments", "corr"], 0.0)
    for task in tasks:
        t0 = time.perf_counter()
        buffers = assemble(task, config, source, source.has_group)
        out["assemble"] += time.perf_counter() - t0
        for p, path in pipelines.items():
            with zarr.config.set({"codec_pipeline.path": path} if path else {}):
                g = create_store(f"{scratch}/{task.task_id}{p.strip()}.zarr",
                                 schema=config.schema, compression=config.compression,
                                 n_samples=task.rows, chunk_rows=chunk_rows,
                                 has_group=source.has_group, config_sha256="b")
                for name, data in buffers.items():
                    t0 = time.perf_counter()
                    g[name][:] = data
                    what = "features" if name == "features" else "small arrays"
                    out[f"write {what}{p}"] += time.perf_counter() - t0
        for name, opts in (("moments", StatsOptions(correlation=False)),
                           ("corr", StatsOptions(correlation=True))):
            t0 = time.perf_counter()
            partial_stats(buffers, replace(config, stats=opts))
            out[name] += time.perf_counter() - t0
    shutil.rmtree(scratch, ignore_errors=True)
    return {"per_task": {k: v / len(tasks) for k, v in out.items()}, "task_rows": tasks[0].rows}


def run(ctx: Context) -> dict[str, Any]:
    store, w = fixtures.large_store(ctx.rows), ctx.work
    methods = {"task": lambda: ctx.step("per-task profile", "stats_online:task_profile",
                                        store=str(store), scratch=tempfile.mkdtemp(dir=w))}
    for k, stats in VARIANTS.items():
        cfg = fixtures.write_config(w / f"{k}.yaml", w / f"{k}.zarr", fixtures.synthetic(ctx.rows),
                                    ingest=fixtures.LARGE["ingest"], stats=stats)
        methods[k] = lambda k=k, cfg=cfg: ctx.cli(f"ingest, stats {k}", "ingest", cfg, "--quiet",
                                                  clean=w / f"{k}.zarr")
    r = ctx.best(methods)
    pt = r["task"].result["per_task"]
    base = pt["assemble"] + pt["write features"] + pt["write small arrays"]
    tasks = [{"one task, in one process": k, "seconds": v,
              "share of assemble + write": v / base if k in ("moments", "corr") else None}
             for k, v in pt.items()]
    ingest = []
    for k in VARIANTS:
        s = summary(w / f"{k}.zarr")
        journal = sum(p.stat().st_size for p in (w / f"{k}.zarr/_chunkstore/tasks").iterdir())
        ingest.append({"ingest": f"stats {k}", **r[k].fields(), "ingest wall s (summary)":
                       s["wall_seconds"], "coordinator MiB": s["coordinator_peak_rss"] / 2**20,
                       "largest worker MiB": s["worker_peak_rss"] / 2**20,
                       "journal MiB": journal / 2**20})
    off = r["off"].wall
    return {"tables": [{"title": f"Per task ({r['task'].result['task_rows']:,} rows)",
                        "rows": tasks}, {"title": "Whole ingest", "rows": ingest}],
            "targets": [target("task time added by online moments", pt["moments"] / base, "<=",
                               0.15),
                        info("task time added by moments + correlation", pt["corr"] / base),
                        info("ingest wall added by moments", r["moments"].wall / off - 1),
                        info("ingest wall added by moments + correlation",
                             r["corr"].wall / off - 1)]}
