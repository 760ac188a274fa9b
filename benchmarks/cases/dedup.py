"""Exact duplicate detection vs a read of the features (issue 17)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

from .. import fixtures
from ..harness import MIB, Context, info, target

TITLE = "Duplicate detection vs reading the features (issue 17)"
DEFAULT_ROWS = 547_000
SHARE = 0.05
ABOUT = f"""\
Store: `configs/large.yaml` with {SHARE:.0%} of its rows overwritten by copies of other rows
(random rows, seed 0; `meta/row_hash` rewritten to match, or added to a fixture built before
ingest wrote it). Each method is
its own process; *in-process s* excludes start-up and imports. (a) plain zarr read of
`features` block by block (64 MiB blocks, `codec_pipeline.batch_size=64`, as dedup reads);
(a'') the same with Dask, a task per block; (b) `chunkstore.dedup.dedup(store)` (what `chunkstore
dedup` runs: stored row hashes when present); (c) the same computing the hashes from the
features (a store written before `meta/row_hash`). *Working MiB*: peak RSS minus that of an
idle process with the same imports."""


def plant(store: str, share: float = SHARE, seed: int = 0) -> int:
    """Overwrite ``share`` of the rows with copies of other rows; returns the copies planted."""
    import numpy as np
    import zarr

    from chunkstore.core.rowhash import row_hashes

    g = zarr.open_group(store, mode="r+")
    f = g["features"]
    n = f.shape[0]
    rng = np.random.default_rng(seed)
    rows = rng.permutation(n)
    k = int(n * share)
    dst, src = np.sort(rows[:k]), rows[k:2 * k]  # a copy is never itself copied
    order = np.argsort(src)
    values = np.empty((k, f.shape[1]), dtype=f.dtype)
    values[order] = f.get_orthogonal_selection((src[order], slice(None)))
    by_dst = np.argsort(rows[:k])
    values = values[by_dst]
    block = f.chunks[0] * max(1, 2**26 // (f.chunks[0] * f.shape[1] * f.dtype.itemsize))
    fresh = "meta/row_hash" not in g  # a fixture built before ingest wrote the hashes
    hashes = (g.create_array("meta/row_hash", shape=(n,), chunks=(f.chunks[0],), dtype="uint64")
              if fresh else g["meta/row_hash"])
    for a in range(0, n, block):
        b = min(n, a + block)
        lo, hi = np.searchsorted(dst, [a, b])
        if lo == hi and not fresh:
            continue
        x = f[a:b]
        if hi > lo:
            x[dst[lo:hi] - a] = values[lo:hi]
            f[a:b] = x
        hashes[a:b] = row_hashes(x)
    return k


def step(store: str, method: str) -> dict[str, Any]:
    import dask
    import dask.array as da
    import zarr

    from chunkstore.core.rowhash import row_hashes
    from chunkstore.dedup import dedup

    t0 = time.perf_counter()
    f = zarr.open_group(store, mode="r")["features"]
    block = f.chunks[0] * max(1, 2**26 // (f.chunks[0] * f.shape[1] * f.dtype.itemsize))
    if method == "read":
        with zarr.config.set({"codec_pipeline.batch_size": 64}):
            for a in range(0, f.shape[0], block):
                f[a:a + block]
    elif method == "read-dask":
        dask.compute(da.from_zarr(f, chunks=(block, f.shape[1])).sum(axis=1),
                     scheduler="threads")
    elif method == "idle":
        dask.compute(dask.delayed(sum)([1, 2]), scheduler="threads")
        f[:1]
    else:
        s = dedup(store, hasher=row_hashes if method == "dedup-computed" else None)
        return {"seconds": time.perf_counter() - t0, "duplicate_rows": s.duplicate_rows,
                "groups": s.groups, "hashes": s.hash_source}
    return {"seconds": time.perf_counter() - t0}


def _planted(ctx: Context) -> Path:
    store = ctx.work / f"planted-{ctx.rows}.zarr"
    done = ctx.work / f"planted-{ctx.rows}.done"
    if not done.exists():  # a hard-linked copy: zarr replaces chunk files, never edits them
        subprocess.run(["rm", "-rf", str(store)], check=True)
        subprocess.run(["cp", "-al", str(fixtures.large_store(ctx.rows)), str(store)], check=True)
        ctx.log(f"planted {plant(str(store)):,} duplicate rows")
        done.write_text("ok")
    return store


def run(ctx: Context) -> dict[str, Any]:
    store = _planted(ctx)
    names = {"read": "(a) read features (plain zarr, blocks)",
             "read-dask": "(a'') read features (Dask)",
             "idle": "idle process (imports, 1 chunk)",
             "dedup": "(b) dedup (stored row hashes)",
             "dedup-computed": "(c) dedup (hashes computed)"}
    r = ctx.best({k: (lambda k=k, v=v: ctx.step(v, "dedup:step", store=str(store), method=k))
                  for k, v in names.items()}, key=lambda r: r.result["seconds"])
    idle = r["idle"].max_process
    rows = []
    for k, v in names.items():
        row = {"method": v, "in-process s": r[k].result["seconds"], **r[k].fields("process")}
        if k.startswith("dedup"):
            row.update({"working MiB": (r[k].max_process - idle) / MIB,
                        "duplicate rows": r[k].result["duplicate_rows"],
                        "groups": r[k].result["groups"], "hashes": r[k].result["hashes"]})
        rows.append(row)
    sec = {k: r[k].result["seconds"] for k in names}
    return {"tables": [{"rows": rows}], "targets": [
        target("in-process time (b) / (a)", sec["dedup"] / sec["read"], "<=", 2.0),
        info("(c) / (a), hashes computed", sec["dedup-computed"] / sec["read"]),
        info("(b) / (a'') Dask read", sec["dedup"] / sec["read-dask"]),
        info("wall time (b) / (a), with start-up", r["dedup"].wall / r["read"].wall)]}
