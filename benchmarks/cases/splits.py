"""Every split method vs reading the arrays it needs (issue 4; issue 14 target 5)."""

from __future__ import annotations

import subprocess
import time
from typing import Any

from .. import fixtures
from ..harness import MIB, Context, info, target

TITLE = "Splits vs reading the arrays they need (issues 4 and 14)"
DEFAULT_ROWS = 547_000
ABOUT = """\
Store: `configs/large.yaml` (episode groups of 100-1,000 rows), stratified by `action_type`,
fractions 0.8/0.1/0.1, seed 0. Each method is its own process; *in-process s* excludes start-up
and imports. (a) plain zarr `g[path][:]` of `meta/group` and `labels/action_type`; (a') the
same with `codec_pipeline.batch_size=128`; (a'') the same with Dask, a task per chunk;
(b) `write_split` stratified-group (what `chunkstore split` runs); (c) the other methods.
*Working MiB*: peak RSS minus that of an idle process with the same imports, a first Dask
compute and a one-chunk read of each array. Balance: worst |class share in a part - overall|."""
METHODS = ("stratified-group", "group", "stratified", "random")


def step(store: str, method: str) -> dict[str, Any]:
    import dask
    import dask.array as da
    import zarr

    from chunkstore.core.splitspec import SplitSpec
    from chunkstore.splits.write import write_split

    t0 = time.perf_counter()
    g = zarr.open_group(store, mode="r")
    if method in ("read", "read-batched"):
        with zarr.config.set({"codec_pipeline.batch_size": 128} if "batched" in method else {}):
            g["meta/group"][:], g["labels/action_type"][:]
    elif method == "read-dask":
        dask.compute(da.from_zarr(g["meta/group"]), da.from_zarr(g["labels/action_type"]))
    elif method == "idle":
        dask.compute(dask.delayed(sum)([1, 2]), scheduler="threads")
        g["meta/group"][:1], g["labels/action_type"][:1]
    else:
        spec = SplitSpec(name=f"bench_{method.replace('-', '_')}", method=method,
                         by="action_type" if "stratified" in method else None, seed=0)
        s = write_split(store, spec, overwrite=True)
        return {"seconds": time.perf_counter() - t0, "rows": list(s.rows),
                "class_counts": s.class_counts}
    return {"seconds": time.perf_counter() - t0}


def run(ctx: Context) -> dict[str, Any]:
    import numpy as np
    import zarr

    store = ctx.work / f"store-{ctx.rows}.zarr"  # a hard-linked copy: splits are not written into
    if not store.exists():  # the shared fixture (zarr replaces files, never edits them)
        subprocess.run(["cp", "-al", str(fixtures.large_store(ctx.rows)), str(store)], check=True)
    names = {"read": "(a) read meta/group + labels (plain zarr)",
             "read-batched": "(a') the same, codec_pipeline.batch_size=128",
             "read-dask": "(a'') the same with Dask", "idle": "idle process (imports, 1 chunk)",
             **{m: f"({'b' if m == 'stratified-group' else 'c'}) split {m}" for m in METHODS}}
    r = ctx.best({k: (lambda k=k, v=v: ctx.step(v, "splits:step", store=str(store), method=k))
                  for k, v in names.items()}, key=lambda r: r.result["seconds"])
    idle = r["idle"].max_process
    f = zarr.open_group(str(store), mode="r")["features"]
    chunk_bytes = f.chunks[0] * f.shape[1] * f.dtype.itemsize
    rows = []
    for k, v in names.items():
        row = {"method": v, "in-process s": r[k].result["seconds"], **r[k].fields("process")}
        if k in METHODS:
            cc = np.array(r[k].result["class_counts"], float)
            row.update({"working MiB": (r[k].max_process - idle) / MIB,
                        "rows per part": "/".join(f"{n:,}" for n in r[k].result["rows"]),
                        "balance pp": float(np.abs(cc / cc.sum(1, keepdims=True)
                                                   - cc.sum(0) / cc.sum()).max() * 100)})
        rows.append(row)
    sec = {k: r[k].result["seconds"] for k in names}
    b = "stratified-group"
    return {"tables": [{"rows": rows}], "targets": [
        *[target(f"in-process time {m} / (a)", sec[m] / sec["read"], "<=", 1.5)
          for m in METHODS],
        target("working memory of (b), in features chunks",
               (r[b].max_process - idle) / chunk_bytes, "<=", 4.0, "{:.1f}"),
        info("(b) / (a') batched zarr read", sec[b] / sec["read-batched"]),
        info("(b) / (a'') Dask read", sec[b] / sec["read-dask"]),
        info("wall time (b) / (a), with start-up", r[b].wall / r["read"].wall)]}
