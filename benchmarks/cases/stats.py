"""Statistics passes vs a plain read and vs numpy in memory (issue 3)."""

from __future__ import annotations

import subprocess
import time
from typing import Any

from .. import fixtures
from ..harness import MIB, Context, info, target

TITLE = "Statistics passes vs a plain read and numpy in memory (issue 3)"
DEFAULT_ROWS = 547_000
ABOUT = """\
Store: `configs/large.yaml` (synthetic, 893 float32 features, chunks of 1,024 rows). Each step
is its own process; *in-process s* is the computation only (graph built, then timed), *peak RSS*
the process's exact high-water mark. (z) plain zarr, `a[i:i+rows]` for every array stats reads,
in one process (the issue-14 yardstick). Dask steps: blocks of ~32 MiB, threaded scheduler, one BLAS
thread per Dask thread (as `compute_stats`). (a) read only (the I/O floor of a pass); (b) pass 1
moments + class/mask counts; (b') pass 1 with correlation; (c) pass 2: histograms, quantiles, MI
tables; (e) `chunkstore stats STORE` end to end on a hard-linked copy; (d) numpy with the
features in memory (load not timed): mean+std (float64), `np.corrcoef`, and chunkstore's
`block_stats` (moments + co-moments) on the same array."""
GRAPH = ("read", "moments", "corr", "hist")
NUMPY = ("np_moments", "np_corr", "inmem_corr")


def zarr_step(store: str) -> dict[str, Any]:
    """Plain zarr, one process: every array `chunkstore stats` reads, block by block."""
    import zarr

    from benchmarks.fixtures import array_names
    from chunkstore.stats import compute as c

    g = zarr.open_group(store, mode="r")
    f = g["features"]
    rows = c.block_rows(g.attrs["chunkstore"]["chunk_rows"], f.shape[1], f.dtype.itemsize,
                        c.BLOCK_MIB)
    t0, total = time.perf_counter(), 0
    for name in array_names(store):
        a = g[name]
        for i in range(0, a.shape[0], rows):
            total += a[i:i + rows].nbytes
    return {"seconds": time.perf_counter() - t0, "bytes": total}


def graph_step(store: str, what: str) -> dict[str, Any]:
    import dask
    import zarr
    from threadpoolctl import threadpool_limits

    from chunkstore.core.histograms import Binning
    from chunkstore.stats import compute as c

    g = zarr.open_group(store, mode="r")
    f = g["features"]
    rows = c.block_rows(g.attrs["chunkstore"]["chunk_rows"], f.shape[1], f.dtype.itemsize,
                        c.BLOCK_MIB)
    sel = c.select_rows(g, store, None)
    with threadpool_limits(1, user_api="blas"):
        if what == "hist":
            first = dask.compute(c.moments_graph(g, sel, correlation=False, rows=rows),
                                 scheduler="threads")[0]
            graph = c.histogram_graph(g, sel, Binning.from_moments(first.moments, 32), rows=rows)
        elif what == "read":
            graph = c.read_graph(g, sel, rows=rows)
        else:
            graph = c.moments_graph(g, sel, correlation=what == "corr", rows=rows)
        t0 = time.perf_counter()
        dask.compute(graph, scheduler="threads")
    return {"seconds": time.perf_counter() - t0}


def numpy_step(store: str, what: str, out: str) -> dict[str, Any]:
    import numpy as np
    import zarr

    x = zarr.open_group(store, mode="r")["features"][...]
    t0 = time.perf_counter()
    if what == "np_moments":
        m, s = np.mean(x, axis=0, dtype=np.float64), np.std(x, axis=0, dtype=np.float64)
    elif what == "np_corr":
        with np.errstate(invalid="ignore", divide="ignore"):
            corr = np.corrcoef(x, rowvar=False)
    else:
        from chunkstore.core.moments import block_stats

        block_stats(x, correlation=True)[1].correlation()
    secs = time.perf_counter() - t0
    if what != "inmem_corr":
        np.savez(out, **({"mean": m, "std": s} if what == "np_moments" else {"corr": corr}))
    return {"seconds": secs}


def run(ctx: Context) -> dict[str, Any]:
    import numpy as np
    import zarr

    store, w = fixtures.large_store(ctx.rows), ctx.work
    copy = w / "copy.zarr"
    methods = {s: (lambda s=s: ctx.step(s, "stats:graph_step", store=str(store), what=s))
               for s in GRAPH}
    methods.update({s: (lambda s=s: ctx.step(s, "stats:numpy_step", store=str(store), what=s,
                                              out=str(w / f"{s}.npz"))) for s in NUMPY})

    def cli() -> Any:
        subprocess.run(["rm", "-rf", str(copy)], check=True)
        subprocess.run(["cp", "-al", str(store), str(copy)], check=True)
        return ctx.cli("cli", "stats", copy, "--quiet")

    methods["cli"] = cli
    methods["zarr"] = lambda: ctx.step("zarr", "stats:zarr_step", store=str(store))
    r = ctx.best(methods, key=lambda r: r.result.get("seconds", r.wall))
    raw = zarr.open_group(str(store), mode="r")["features"].nbytes
    names = {"zarr": "(z) plain zarr block-by-block read, one process",
             "read": "(a) read only (features, labels, masks)", "moments": "(b) pass 1: moments",
             "corr": "(b') pass 1 with correlation", "hist": "(c) pass 2: histograms, MI",
             "cli": "(e) chunkstore stats STORE", "np_moments": "(d) numpy: mean + std",
             "np_corr": "(d) numpy: np.corrcoef", "inmem_corr": "(d) block_stats in memory"}
    sec = {k: r[k].result.get("seconds", r[k].wall) for k in names}
    rows = [{"step": v, "in-process s": sec[k] if k != "cli" else None,
             **r[k].fields("process"), "MiB/s of features": raw / MIB / sec[k]}
            for k, v in names.items()]
    g = zarr.open_group(str(copy), mode="r")["stats/all"]
    ref, corr = np.load(w / "np_moments.npz"), np.load(w / "np_corr.npz")["corr"]
    ok = ~np.isnan(corr) & ~np.isnan(g["corr"][...])
    scale = np.maximum(np.abs(ref["mean"]), ref["std"])
    agree = {"mean": float(np.nanmax(np.abs(g["mean"][...] - ref["mean"]) / np.where(
                 scale > 0, scale, 1))),
             "corr": float(np.max(np.abs(g["corr"][...][ok] - corr[ok])))}
    assert agree["mean"] < 1e-9 and agree["corr"] < 1e-9, agree
    return {"tables": [{"rows": rows}], "targets": [
        target("(e) chunkstore stats, whole process / (z) plain zarr read, whole process",
               r["cli"].wall / r["zarr"].wall, "<=", 3.0),
        info("(e) whole process / (z) in-process read", r["cli"].wall / sec["zarr"]),
        target("moments pass throughput / read-only throughput", sec["read"] / sec["moments"],
               ">=", 0.8),
        target("block_stats / np.corrcoef, in memory", sec["inmem_corr"] / sec["np_corr"], "<=",
               1.0),
        info("pass 1 with correlation from the store / np.corrcoef in memory",
             sec["corr"] / sec["np_corr"]),
        info("peak RSS of (b') / features bytes", r["corr"].max_process / raw)],
        "notes": [f"agreement of (e) with numpy: mean max rel diff {agree['mean']:.1e}, "
                  f"correlation max abs diff {agree['corr']:.1e} (checked < 1e-9)"]}
