"""Benchmark of chunkstore statistics (issue 3); prints one table, updates RESULTS.md.

Measured, each step in its own fresh Python process that reports its wall time and its own peak
RSS (``getrusage(RUSAGE_SELF)``: the steps are single-process, Dask runs threads):

(a) read only: the Dask graph of pass 1 with a leaf that only decodes the blocks (features,
    labels, masks) -- the I/O floor of a pass;
(b) ``chunkstore stats`` pass 1 without correlation (moments, class and mask counts), and
(b') with correlation;
(c) pass 2 alone: histograms, quantiles' fine histograms, contingency tables for MI;
(e) the whole ``chunkstore stats STORE`` command (both passes + writing stats/all) on a
    hard-linked copy of the store, so the original is never modified;
(d) numpy on the same features fully in memory: load, ``np.mean``/``np.std`` with
    ``dtype=float64``, ``np.corrcoef``; and chunkstore's own partial moments + co-moments
    (``block_stats``) on the same in-memory array.
(f) ingest of the same schema and rows (``configs/large.yaml``, synthetic source) with
    ``stats.online: false``, with moments only (``correlation: false``), and with the default
    (moments + correlation), to measure what online statistics add to ingest.

Usage::

    python benchmarks/bench_stats.py                       # the 547,000-row store
    python benchmarks/bench_stats.py --store S --ingest-rows 20000 --results /tmp/R.md  # dev
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / "work" / "stats"
MIB = 2**20
SECTION = "bench_stats"


# --------------------------------------------------------------------------- steps (children)

def _rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _graph_step(store: str, what: str) -> dict[str, Any]:
    import dask
    import zarr
    from threadpoolctl import threadpool_limits

    from chunkstore.core.histograms import Binning
    from chunkstore.stats.compute import (
        BLOCK_MIB,
        block_rows,
        histogram_graph,
        moments_graph,
        read_graph,
        select_rows,
    )

    g = zarr.open_group(store, mode="r")
    feats = g["features"]
    rows = block_rows(g.attrs["chunkstore"]["chunk_rows"], feats.shape[1],
                      feats.dtype.itemsize, BLOCK_MIB)
    sel = select_rows(g, store, None)
    with threadpool_limits(1, user_api="blas"):  # as compute_stats does
        if what == "hist":
            first = dask.compute(moments_graph(g, sel, correlation=False, rows=rows),
                                 scheduler="threads")[0]
            binning = Binning.from_moments(first.moments, 32)
            graph = histogram_graph(g, sel, binning, rows=rows)
        elif what == "read":
            graph = read_graph(g, sel, rows=rows)
        else:
            graph = moments_graph(g, sel, correlation=what == "corr", rows=rows)
        t0 = time.perf_counter()
        out = dask.compute(graph, scheduler="threads")[0]
        secs = time.perf_counter() - t0
    extra = {"decoded_bytes": out} if what == "read" else {}
    return {"seconds": secs, "rows": int(feats.shape[0]), **extra}


def _numpy_step(store: str, what: str) -> dict[str, Any]:
    import numpy as np
    import zarr

    t0 = time.perf_counter()
    x = zarr.open_group(store, mode="r")["features"][...]
    load = time.perf_counter() - t0
    t0 = time.perf_counter()
    if what == "np_moments":
        mean, std = np.mean(x, axis=0, dtype=np.float64), np.std(x, axis=0, dtype=np.float64)
        np.savez(WORK / "np_moments.npz", mean=mean, std=std)
    elif what == "np_corr":
        with np.errstate(invalid="ignore", divide="ignore"):  # constant features -> NaN
            corr = np.corrcoef(x, rowvar=False)
        np.save(WORK / "np_corr.npy", corr)
    elif what == "inmem_corr":
        from chunkstore.core.moments import block_stats

        _, com = block_stats(x, correlation=True)
        corr = com.correlation()
    secs = time.perf_counter() - t0
    return {"seconds": secs, "load_seconds": load, "rows": int(x.shape[0])}


def _task_step(store: str) -> dict[str, Any]:
    """Per write task of the store's own plan: assemble, zarr write and partial_stats."""
    import tempfile
    from dataclasses import replace

    import zarr

    from chunkstore import layout
    from chunkstore.config import Config, StatsOptions
    from chunkstore.core.plan import Plan
    from chunkstore.ingest.task import assemble, partial_stats
    from chunkstore.sources import open_source

    jdir = Path(store) / "_chunkstore"
    config = Config.from_dict(json.loads((jdir / "config.json").read_text()))
    plan = Plan.from_dict(json.loads((jdir / "plan.json").read_text()))
    source = open_source(config.source, config.schema)
    variants = {"moments": StatsOptions(correlation=False), "corr": StatsOptions()}
    mid = len(plan.tasks) // 2
    tasks = [t for t in plan.tasks[mid:mid + 4] if t.rows == plan.tasks[mid].rows][:3]
    out: dict[str, float] = {"assemble": 0.0, "write": 0.0, "moments": 0.0, "corr": 0.0}
    scratch = tempfile.mkdtemp(dir=WORK)
    chunk_rows = zarr.open_group(store, mode="r").attrs["chunkstore"]["chunk_rows"]
    for task in tasks:
        t0 = time.perf_counter()
        buffers = assemble(task, config, source, source.has_group)
        out["assemble"] += time.perf_counter() - t0
        group = layout.create_store(f"{scratch}/{task.task_id}.zarr", schema=config.schema,
                                    compression=config.compression, n_samples=task.rows,
                                    chunk_rows=chunk_rows, has_group=source.has_group,
                                    config_sha256="bench")
        t0 = time.perf_counter()
        for name, data in buffers.items():
            group[name][:] = data
        out["write"] += time.perf_counter() - t0
        for name, opts in variants.items():
            t0 = time.perf_counter()
            partial_stats(buffers, replace(config, stats=opts))
            out[name] += time.perf_counter() - t0
    shutil.rmtree(scratch)
    per = {k: v / len(tasks) for k, v in out.items()}
    return {"seconds": per["moments"], "per_task": per, "task_rows": tasks[0].rows,
            "tasks": len(tasks)}


def _cli_step(store: str) -> dict[str, Any]:
    from chunkstore.cli import main

    t0 = time.perf_counter()
    rc = main(["stats", store, "--quiet"])
    return {"seconds": time.perf_counter() - t0, "rc": rc}


def run_step(step: str, store: str) -> None:
    if step in ("read", "moments", "corr", "hist"):
        out = _graph_step(store, step)
    elif step in ("np_moments", "np_corr", "inmem_corr"):
        out = _numpy_step(store, step)
    elif step == "cli":
        out = _cli_step(store)
    elif step == "task":
        out = _task_step(store)
    else:
        raise SystemExit(f"unknown step {step!r}")
    out["peak_rss"] = _rss()
    print("RESULT " + json.dumps(out))


# --------------------------------------------------------------------------- orchestration

def child(step: str, store: str) -> dict[str, Any]:
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, __file__, "--step", step, "--store", store],
                       capture_output=True, text=True, cwd=ROOT)
    if p.returncode != 0:
        raise RuntimeError(f"step {step} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    line = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    out: dict[str, Any] = json.loads(line[len("RESULT "):])
    out["process_seconds"] = time.perf_counter() - t0
    return out


def ingest_run(name: str, stats: dict[str, bool], rows: int | None) -> dict[str, Any]:
    import yaml

    cfg = yaml.safe_load((ROOT / "configs" / "large.yaml").read_text())
    store = WORK / f"ingest_{name}.zarr"
    cfg["store"] = str(store)
    cfg["stats"] = stats
    if rows:
        cfg["source"]["n_samples"] = rows
    path = WORK / f"ingest_{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    shutil.rmtree(store, ignore_errors=True)
    os.sync()
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "chunkstore.cli", "ingest", str(path), "--quiet"],
                       capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"ingest {name} failed: {p.stderr[-3000:]}")
    summary = json.loads((store / "_chunkstore" / "summary.json").read_text())
    tasks = store / "_chunkstore" / "tasks"
    journal = sum(f.stat().st_size for f in tasks.iterdir())
    return {"seconds": wall, "summary": summary, "journal_bytes": journal,
            "rows": summary["rows"]}


def hardlink_copy(src: Path, dst: Path) -> None:
    """A copy whose chunk files are hard links: zarr replaces files by rename, never in place."""
    shutil.rmtree(dst, ignore_errors=True)
    subprocess.run(["cp", "-al", str(src), str(dst)], check=True)


def compare_with_numpy(store: Path) -> dict[str, float]:
    import numpy as np
    import zarr

    g = zarr.open_group(str(store), mode="r")["stats/all"]
    ref = np.load(WORK / "np_moments.npz")
    corr = np.load(WORK / "np_corr.npy")
    ok = ~np.isnan(corr)
    mean, std = g["mean"][...], g["std"][...]
    scale = np.maximum(np.abs(ref["mean"]), ref["std"])
    both = ok & ~np.isnan(g["corr"][...])
    return {"mean_rel": float(np.nanmax(np.abs(mean - ref["mean"]) / np.where(scale > 0, scale,
                                                                                1))),
            "std_rel": float(np.nanmax(np.abs(std - ref["std"]) / np.where(ref["std"] > 0,
                                                                           ref["std"], 1))),
            "corr_abs": float(np.max(np.abs(g["corr"][...][both] - corr[both]))),
            "corr_nan_agree": bool(np.array_equal(np.isnan(g["corr"][...]), ~ok))}


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    rule = "|" + "|".join(":" + "-" * (w + 1) if i == 0 else "-" * (w + 1) + ":"
                          for i, w in enumerate(widths)) + "|"
    body = ["| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w)
                              for i, (c, w) in enumerate(zip(r, widths, strict=True))) + " |"
            for r in rows]
    return "\n".join([line, rule, *body])


def update_results(path: Path, body: str) -> None:
    """Replace this script's section of RESULTS.md (append it if absent); keep the rest."""
    start, end = f"<!-- {SECTION}:start -->", f"<!-- {SECTION}:end -->"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    block = f"{start}\n{body.strip()}\n{end}"
    if start in text and end in text:
        text = text[:text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def orchestrate(args: argparse.Namespace) -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    store = Path(args.store).resolve()
    if not (store / "zarr.json").exists():
        subprocess.run([sys.executable, "-m", "chunkstore.cli", "ingest", "configs/large.yaml",
                        "--quiet"], check=True, cwd=ROOT)
    load_before = os.getloadavg()
    r: dict[str, dict[str, Any]] = {}
    for rep in range(args.repeat):  # interleaved repeats; the fastest run of each is kept
        for step in ("read", "moments", "corr", "hist", "np_moments", "np_corr", "inmem_corr",
                     "task"):
            print(f"bench_stats: {step} (run {rep + 1}) ...", file=sys.stderr, flush=True)
            out = child(step, str(store))
            if step not in r or out["seconds"] < r[step]["seconds"]:
                r[step] = out
    copy = WORK / "large_copy.zarr"
    hardlink_copy(store, copy)
    print("bench_stats: chunkstore stats (cli) ...", file=sys.stderr, flush=True)
    r["cli"] = child("cli", str(copy))
    check = compare_with_numpy(copy)
    ing: dict[str, dict[str, Any]] = {}
    for rep in range(0 if args.skip_ingest else args.repeat):
        for name, stats in (("off", {"online": False}),
                            ("moments", {"online": True, "correlation": False}),
                            ("corr", {"online": True, "correlation": True})):
            print(f"bench_stats: ingest {name} (run {rep + 1}) ...", file=sys.stderr, flush=True)
            out = ingest_run(name, stats, args.ingest_rows)
            if name not in ing or out["seconds"] < ing[name]["seconds"]:
                ing[name] = out
    load_after = os.getloadavg()
    raw = {"steps": r, "ingest": ing, "check": check, "load": [load_before, load_after]}
    (WORK / "results.json").write_text(json.dumps(raw, indent=1))  # the raw figures
    report(args, store, r, ing, check, load_before, load_after)


def report(args: argparse.Namespace, store: Path, r: dict[str, dict[str, Any]],
           ing: dict[str, dict[str, Any]], check: dict[str, float],
           load_before: tuple[float, ...], load_after: tuple[float, ...]) -> None:
    import zarr

    g = zarr.open_group(str(store), mode="r")
    n, f = g["features"].shape
    raw = n * f * g["features"].dtype.itemsize

    def rate(sec: float) -> str:
        return f"{raw / MIB / sec:,.0f}"

    def mb(x: int) -> str:
        return f"{x / MIB:,.0f}"

    rows = [
        ["(a) read only (features, labels, masks; Dask threads)", f"{r['read']['seconds']:.1f}",
         rate(r["read"]["seconds"]), mb(r["read"]["peak_rss"])],
        ["(b) stats pass 1: moments, class/mask counts", f"{r['moments']['seconds']:.1f}",
         rate(r["moments"]["seconds"]), mb(r["moments"]["peak_rss"])],
        ["(b') stats pass 1 with correlation (default)", f"{r['corr']['seconds']:.1f}",
         rate(r["corr"]["seconds"]), mb(r["corr"]["peak_rss"])],
        ["(c) stats pass 2: histograms, quantiles, MI tables", f"{r['hist']['seconds']:.1f}",
         rate(r["hist"]["seconds"]), mb(r["hist"]["peak_rss"])],
        ["(e) `chunkstore stats STORE` end to end", f"{r['cli']['seconds']:.1f}",
         rate(r["cli"]["seconds"]), mb(r["cli"]["peak_rss"])],
        ["(d) numpy: load features into memory", f"{r['np_corr']['load_seconds']:.1f}",
         rate(r["np_corr"]["load_seconds"]), "-"],
        ["(d) numpy in memory: np.mean + np.std (float64)", f"{r['np_moments']['seconds']:.1f}",
         rate(r["np_moments"]["seconds"]), mb(r["np_moments"]["peak_rss"])],
        ["(d) numpy in memory: np.corrcoef", f"{r['np_corr']['seconds']:.1f}",
         rate(r["np_corr"]["seconds"]), mb(r["np_corr"]["peak_rss"])],
        ["(d) chunkstore block_stats in memory (moments + co-moments)",
         f"{r['inmem_corr']['seconds']:.1f}", rate(r["inmem_corr"]["seconds"]),
         mb(r["inmem_corr"]["peak_rss"])],
    ]
    for name, label in (("off", "stats.online: false"), ("moments", "moments, no correlation"),
                        ("corr", "moments + correlation (default)")):
        if name in ing:
            s = ing[name]["summary"]
            rows.append([f"(f) ingest, {label}", f"{ing[name]['seconds']:.1f}",
                         rate(ing[name]["seconds"]) if ing[name]["rows"] == n else "-",
                         f"{mb(s['coordinator_peak_rss'])} + {mb(s['worker_peak_rss'])}/worker"])
    main_table = table(["step", "wall s", "MiB/s of features", "peak RSS MiB"], rows)

    read_s, mom_s = r["read"]["seconds"], r["moments"]["seconds"]
    targets = [
        ["moments pass throughput / read-only throughput", f"{read_s / mom_s:.2f}", ">= 0.50",
         "PASS" if read_s / mom_s >= 0.5 else "MISS"],
        ["correlation on in-memory data: block_stats / np.corrcoef",
         f"{r['inmem_corr']['seconds'] / r['np_corr']['seconds']:.2f}", "<= 1.5",
         "PASS" if r["inmem_corr"]["seconds"] / r["np_corr"]["seconds"] <= 1.5 else "MISS"],
        ["pass 1 with correlation, reading the store / np.corrcoef in memory (no load)",
         f"{r['corr']['seconds'] / r['np_corr']['seconds']:.2f}", "measured", "-"],
    ]
    pt = r["task"]["per_task"]
    base = pt["assemble"] + pt["write"]
    for name, label in (("moments", "moments"), ("corr", "moments + correlation")):
        extra = pt[name] / base
        targets.append([f"task time added by online {label} (per-task profile)",
                        f"{extra:+.1%}", "<= 15%" if name == "moments" else "measured",
                        ("PASS" if extra <= 0.15 else "MISS") if name == "moments" else "-"])
    if ing:
        off = ing["off"]["seconds"]
        for name, label in (("moments", "online moments"), ("corr", "online moments + corr")):
            extra = ing[name]["seconds"] / off - 1
            targets.append([f"whole-ingest wall time added by {label}", f"{extra:+.1%}",
                            "measured", "-"])
    targets.append(["peak RSS of pass 1 with correlation / features bytes",
                    f"{r['corr']['peak_rss'] / raw:.2f}", "bounded", "-"])
    target_table = table(["ratio", "measured", "target", "result"], targets)
    task_table = table(
        [f"one ingest task ({r['task']['task_rows']:,} rows), in one process", "seconds",
         "share of assemble + write"],
        [["assemble: read the source items + check them (store dtypes)",
          f"{pt['assemble']:.3f}", "-"],
         ["zarr write of every array of the task", f"{pt['write']:.3f}", "-"],
         ["partial_stats, moments + class/mask counts", f"{pt['moments']:.3f}",
          f"{pt['moments'] / base:.1%}"],
         ["partial_stats, moments + co-moment matrix (default)", f"{pt['corr']:.3f}",
          f"{pt['corr'] / base:.1%}"]])

    journal = ""
    if ing:
        journal = ("Journal records (`_chunkstore/tasks/`): "
                   + ", ".join(f"{k} {ing[k]['journal_bytes'] / MIB:,.1f} MiB" for k in ing)
                   + f" over {ing['off']['summary']['tasks_total']} tasks (the co-moment "
                   "matrix is kept as one triangle, float64, per task).")
    cmd = "python benchmarks/bench_stats.py" + "".join(
        f" {a}" for a in sys.argv[1:])
    when = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    loads = [" / ".join(f"{x:.2f}" for x in la) for la in (load_before, load_after)]
    where = store.relative_to(ROOT) if store.is_relative_to(ROOT) else store
    paragraphs = [
        "## Statistics (issue 3)",
        f"Written by `benchmarks/bench_stats.py` on {when}; rerun it to update this section.",
        f"**Command:** `{cmd}` (from the repository root). **Load average** (1/5/15 min, "
        f"`uptime`): {loads[0]} before, {loads[1]} after -- the machine is shared, so "
        "figures may be disturbed.",
        f"**Machine:** {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{_versions()}.",
        f"**Data:** `{where}`, {n:,} x {f} {g['features'].dtype} features "
        f"({raw / MIB:,.0f} MiB raw), chunks of {g['features'].chunks[0]} rows, 7 heads; Dask "
        "blocks of ~32 MiB, local threaded scheduler (one thread per core, one BLAS thread "
        "per Dask thread).",
        main_table,
        target_table,
        "What online statistics add to a write task, measured back to back in one process "
        f"(mean of {r['task']['tasks']} tasks of the store's own plan, written to a scratch "
        "store): far less disturbed by the machine's load than the whole ingests (f), whose "
        "differences on this shared machine were within their run-to-run noise:",
        task_table,
        f"**Agreement** of `chunkstore stats` (e) with numpy (d) on the same data: mean max "
        f"|diff| / max(|mean|, std) = {check['mean_rel']:.1e}, std max rel diff = "
        f"{check['std_rel']:.1e}, correlation max |diff| = {check['corr_abs']:.1e}, NaN "
        f"pattern of the correlation equal (constant features): {check['corr_nan_agree']}.",
        journal,
        "Each step runs in a fresh process; wall s is the computation only (graph built, "
        "then timed), except (e) and (f), which are whole commands; peak RSS is the process's "
        "`ru_maxrss` (for ingest: coordinator + largest worker, from its summary). MiB/s are "
        "of raw features, so the rows compare like for like. Numpy steps hold the whole "
        "feature matrix (float32) in memory, plus the float64 copies numpy makes. Each step "
        f"ran {args.repeat} times, interleaved with the others; the fastest run is shown.",
    ]
    body = "\n\n".join(x for x in paragraphs if x)
    print(main_table)
    print()
    print(target_table)
    update_results(Path(args.results), body)


def _versions() -> str:
    from importlib.metadata import version

    return ", ".join(f"{p} {version(p)}" for p in ("numpy", "zarr", "dask", "numcodecs"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--store", default=str(ROOT / "data" / "large.zarr"),
                    help="a complete store (default: data/large.zarr, built if absent)")
    ap.add_argument("--results", default=str(HERE / "RESULTS.md"))
    ap.add_argument("--skip-ingest", action="store_true", help="skip the ingest overhead runs")
    ap.add_argument("--ingest-rows", type=int, default=None,
                    help="rows for the ingest runs (default: those of configs/large.yaml)")
    ap.add_argument("--repeat", type=int, default=2,
                    help="runs of each step, interleaved; the fastest is reported (default 2)")
    ap.add_argument("--step", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.step:
        run_step(args.step, args.store)
    else:
        orchestrate(args)


if __name__ == "__main__":
    main()
