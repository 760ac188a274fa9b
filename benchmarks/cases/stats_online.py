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


# ------------------------------------------------ issue 13: per-phase profile of one npz task

def _npz_config(rows: int, store: str) -> Any:
    from chunkstore.config import Config

    return Config.from_dict({"store": store, "schema": fixtures.LARGE["schema"],
                             "source": {"kind": "npz",
                                        "paths": str(fixtures.npz_batches(rows) / "*.npz")}})


def _timed(out: dict[str, float], key: str, fn: Any) -> Any:
    """Run ``fn``, adding its CPU seconds (this process, all threads) to ``out[key]``: on a
    shared machine CPU time stays put where wall time follows the other jobs' load."""
    t0 = time.process_time()
    value = fn()
    out[key] = out.get(key, 0.0) + time.process_time() - t0
    return value


def _write(out: dict[str, float], label: str, buffers: dict[str, Any], scratch: str,
           config: Any, shard_rows: int | None, pipeline: str | None) -> None:
    import zarr

    from chunkstore.store.layout import create_store

    rows = len(buffers["features"])
    path = f"{scratch}/{label.replace(' ', '_')}.zarr"
    shutil.rmtree(path, ignore_errors=True)
    Path(path).mkdir(parents=True)
    cfg = {"codec_pipeline.path": pipeline, "threading.max_workers": 1} if pipeline else {}
    with zarr.config.set(cfg):
        g = create_store(path, schema=config.schema, compression=config.compression,
                         n_samples=rows, chunk_rows=1024, has_group=True, config_sha256="b",
                         shard_rows=shard_rows)
        _timed(out, f"write features{label}", lambda: g.__getitem__("features").__setitem__(
            slice(None), buffers["features"]))
        _timed(out, f"write small arrays{label}", lambda: [
            g[k].__setitem__(slice(None), v) for k, v in buffers.items() if k != "features"])


def _assemble_timed(out: dict[str, float], task: Any, raws: list[Any], config: Any
                    ) -> dict[str, Any]:
    """The task's buffers from its read batches (check, copy, row hash, moments), timed."""
    from chunkstore.core.rowhash import row_hashes
    from chunkstore.ingest.task import partial_stats
    from chunkstore.sources import check_batch
    from chunkstore.store import layout

    buf = layout.sample_buffers(config.schema, task.rows, True)
    row = 0
    for raw, p in zip(raws, task.pieces, strict=True):
        b = _timed(out, "check", lambda raw=raw, p=p: check_batch(
            raw, config.schema, where="x", item_start=p.item_start, rows=p.rows, has_group=True))
        sl = slice(row, row + p.rows)
        pairs = [("features", b.features), ("meta/group", b.group),
                 *((f"{k}/{h.name}", getattr(b, k)[h.name]) for k in ("labels", "masks")
                   for h in config.schema.heads)]
        _timed(out, "copy into task buffers", lambda pairs=pairs, sl=sl: [
            buf[k].__setitem__(sl, v) for k, v in pairs])
        row += p.rows
    buf["meta/row_hash"][:] = _timed(out, "row hash", lambda: row_hashes(buf["features"]))
    _timed(out, "moments", lambda: partial_stats(buf, config))
    return buf


def phase_profile(rows: int = 150_000, task_chunks: int = 9, scratch: str = "") -> dict[str, Any]:
    """CPU seconds per phase of one ordered npz task (chunks of 1,024 rows, ``task_chunks`` chunks),
    mean of 3 middle tasks, one process, warm page cache. "before" rows are the code paths the
    levers replaced, run side by side: ``np.load`` member reads, one file per chunk."""
    from chunkstore.core.plan import plan_writes
    from chunkstore.sources import open_source

    scratch = scratch or tempfile.mkdtemp()
    config = _npz_config(rows, f"{scratch}/unused.zarr")
    src = open_source(config.source, config.schema)
    plan = plan_writes(src.counts(), 1024, task_chunks)
    mid = len(plan.tasks) // 2
    tasks = [t for t in plan.tasks[mid - 1:mid + 2] if t.rows == 1024 * task_chunks] * 2  # twice:
    # the first pass warms the caches
    try:
        import zarrs  # noqa: F401
        pipelines = {" (zarr-python)": None, " (zarrs)": "zarrs.ZarrsCodecPipeline"}
    except ImportError:
        pipelines = {" (zarr-python)": None}
    out: dict[str, float] = {}
    for t in tasks:
        for p in t.pieces:  # before: np.load decodes each member whole, then slices
            _timed(out, "read npz (before: np.load)",
                   lambda p=p: src._read_loaded(p.item, p.item_start, p.item_stop))
        raws = [_timed(out, "read npz (after: pread)",
                       lambda p=p: src.read(p.item, p.item_start, p.item_stop)) for p in t.pieces]
        buf = _assemble_timed(out, t, raws, config)
        for name, path in pipelines.items():
            _write(out, f"{name}, 1 file per chunk (before)", buf, scratch, config, None, path)
            _write(out, f"{name}, 1 shard per task", buf, scratch, config, 1024 * task_chunks,
                   path)
    shutil.rmtree(scratch, ignore_errors=True)
    return {"task_rows": tasks[0].rows, "per_task": {k: v / len(tasks) for k, v in out.items()}}


def print_profile(rows: int) -> None:
    r = phase_profile(rows)
    print(f"| phase (one {r['task_rows']:,}-row npz task; 3 tasks x 2, mean) | CPU s |")
    print("|---|---:|")
    for k, v in r["per_task"].items():
        print(f"| {k} | {v:.4f} |")


# --------------------------------- issue 13: files per store and S3 requests, sharded or not

def _sharding(on: bool) -> Any:
    """``layout.create_store`` for this process's ingest: with ``shard_rows`` = one task's rows
    when ``on`` (what the ordered coordinator passes once wired; streaming never shards)."""
    import functools

    from chunkstore.core.plan import choose_task_chunks
    from chunkstore.store import layout

    original = getattr(layout.create_store, "__wrapped__", layout.create_store)

    @functools.wraps(original)
    def create(path: str, **kw: Any) -> Any:
        if on and not (kw.get("extra_attrs") or {}).get("placement"):
            r, row = kw["chunk_rows"], kw["schema"].n_features * 4
            kw["shard_rows"] = r * choose_task_chunks(kw["n_samples"], r, r * row)
        return original(path, **kw)

    layout.create_store = create
    return create


def _count_store(fs: Any, root: str) -> tuple[int, int]:
    files = [p for p in fs.find(root) if "/_chunkstore/" not in p]
    return len(files), sum(fs.size(p) for p in files)


def files_and_requests(rows: int = 40_000, s3: bool = True) -> list[dict[str, Any]]:
    """Ingest the npz fixture (2 workers, default config) locally and, with ``s3``, into a
    moto S3 server on loopback, one file per chunk and one shard per task; count the store's
    files (journal excluded), bytes and the HTTP requests moto logged, by method."""
    import socket
    import subprocess
    import sys

    import fsspec

    from chunkstore import ingest

    paths = str(fixtures.npz_batches(rows) / "*.npz")
    base = {"schema": fixtures.LARGE["schema"], "source": {"kind": "npz", "paths": paths},
            "ingest": {"workers": 2}}
    out, tmp = [], Path(tempfile.mkdtemp())
    server, log = None, tmp / "moto.log"
    try:
        if s3:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                                       "-p", str(port)], stdout=subprocess.DEVNULL,
                                      stderr=log.open("w"))
            options = {"endpoint_url": f"http://127.0.0.1:{port}", "key": "k", "secret": "s"}
            for _ in range(600):
                try:
                    fsspec.filesystem("s3", **options).mkdir("bench")
                    break
                except Exception:
                    time.sleep(0.1)
        for sharded in (False, True):
            _sharding(sharded)
            kind = "1 shard per task" if sharded else "1 file per chunk"
            targets = [("local", str(tmp / f"{sharded}.zarr"), {})]
            if s3:
                targets.append(("s3 (moto)", f"s3://bench/{sharded}.zarr",
                                {"storage_options": options}))
            for where, store, extra in targets:
                before = log.read_text().splitlines() if s3 else []
                t0 = time.perf_counter()
                ingest({**base, "store": store, **extra}, progress=False)
                wall = time.perf_counter() - t0
                lines = log.read_text().splitlines()[len(before):] if s3 else []
                fs, root = fsspec.core.url_to_fs(store, **extra.get("storage_options", {}))
                n, size = _count_store(fs, root)
                row: dict[str, Any] = {"layout": kind, "store": where, "files": n,
                                       "MiB": size / 2**20, "ingest s": wall}
                if where != "local":
                    for m in ("PUT", "GET", "HEAD", "POST", "DELETE"):
                        row[m] = sum(f'"{m} ' in line for line in lines)
                out.append(row)
    finally:
        _sharding(False)
        if server is not None:
            server.kill()
            server.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    return out


if __name__ == "__main__":  # python -m benchmarks.cases.stats_online profile|files ROWS
    import sys

    what, n = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 150_000
    if what == "profile":
        print_profile(n)
    else:
        table = files_and_requests(n, s3="--no-s3" not in sys.argv)
        cols = list(dict.fromkeys(k for r in table for k in r))
        print("| " + " | ".join(cols) + " |")
        for r in table:
            print("| " + " | ".join(f"{r[k]:.2f}" if isinstance(r.get(k), float)
                                    else str(r.get(k, "")) for k in cols) + " |")
