"""Ingest vs the two-pass npz merge users run today (issues 2 and 13)."""

from __future__ import annotations

import glob
import os
import time
from typing import Any

import numpy as np

from .. import fixtures
from ..harness import MIB, Context, summary, target, tree_bytes

TITLE = "Ingest vs the two-pass npz merge (issues 2, 13)"
DEFAULT_ROWS = 547_000
ABOUT = """\
Input: `.npz` batch files of 500 rows (uncompressed `np.savez`) of the `configs/large.yaml`
schema (893 float32 features, 7 heads, 206 mask columns, episode ids), page-cache warm.
(a) one process: pass 1 reads each file's row count, preallocates every array, pass 2 copies
each batch in, then `np.save` per array. (b) `chunkstore ingest --workers 2 --overwrite` (store
deleted first; the zarrs codec pipeline in the workers when installed, ingest-time correlation
as the config default says); (b') the same with `CHUNKSTORE_ZARRS=0` (zarr-python's own codec
pipeline); (b'') the same with the other `stats.correlation` than the default (the (F, F)
co-moments at ingest: on if the default is off, and the other way round).
Bytes: `.npy` files vs the summary's stored bytes (journal excluded); coordinator and worker
peaks are the summary's `ru_maxrss`."""


def merge_npz(batch_dir: str, out_dir: str) -> dict[str, Any]:
    """(a): the users' two-pass merge (also the second half of the streaming baseline)."""
    t0 = time.perf_counter()
    files = sorted(glob.glob(os.path.join(batch_dir, "*.npz")))
    with np.load(files[0]) as z:
        spec = {k: (z[k].shape[1:], z[k].dtype) for k in z.files}
    small = next(k for k in spec if k.startswith("labels_"))
    counts = []
    for f in files:
        with np.load(f) as z:
            counts.append(len(z[small]))
    arrays = {k: np.empty((sum(counts), *tail), dtype) for k, (tail, dtype) in spec.items()}
    row, t1 = 0, time.perf_counter()
    for f, c in zip(files, counts, strict=True):
        with np.load(f) as z:
            for k, a in arrays.items():
                a[row:row + c] = z[k]
        row += c
    t2 = time.perf_counter()
    os.makedirs(out_dir, exist_ok=True)
    for k, a in arrays.items():
        np.save(os.path.join(out_dir, f"{k}.npy"), a)
    return {"rows": row, "pass1_s": t1 - t0, "pass2_s": t2 - t1,
            "save_s": time.perf_counter() - t2}


def run(ctx: Context) -> dict[str, Any]:
    import zarr

    from chunkstore.config import StatsOptions

    corr = not StatsOptions().correlation  # (b''): the setting the default is not
    batches, w = fixtures.npz_batches(ctx.rows), ctx.work
    npy, stores = w / "npy", {k: w / f"{k}.zarr" for k in ("b", "nozarrs", "corr")}
    src = {"kind": "npz", "paths": str(batches / "*.npz")}
    cfgs = {k: fixtures.write_config(w / f"{k}.yaml", s, src, **(
        {"stats": {"correlation": corr}} if k == "corr" else {})) for k, s in stores.items()}
    envs = {"nozarrs": {"CHUNKSTORE_ZARRS": "0"}}
    labels = {"a": "(a) baseline: two-pass npz merge -> .npy", "b": "(b) chunkstore ingest",
              "nozarrs": "(b') chunkstore ingest, zarr-python codec pipeline",
              "corr": f"(b'') chunkstore ingest, stats.correlation: {str(corr).lower()}"}
    best = ctx.best({
        labels["a"]: lambda: ctx.step(labels["a"], "ingest:merge_npz", clean=npy,
                                      batch_dir=str(batches), out_dir=str(npy)),
        **{labels[k]: (lambda k=k: ctx.cli(labels[k], "ingest", cfgs[k], "--workers", 2,
                                           "--overwrite", "--quiet", clean=stores[k],
                                           env=envs.get(k)))
           for k in stores}})
    a, b, z, c = (best[labels[k]] for k in ("a", "b", "nozarrs", "corr"))
    sums = {k: summary(s) for k, s in stores.items()}
    npy_bytes = tree_bytes(npy)
    rows = [{"method": labels["a"], **a.fields(), "bytes MiB": npy_bytes / MIB,
             "phases s (pass 1/pass 2/save)": "{pass1_s:.1f}/{pass2_s:.1f}/{save_s:.1f}".format(
                 **a.result)}]
    for k in stores:
        s, r = sums[k], best[labels[k]]
        rows.append({"method": labels[k], **r.fields(), "bytes MiB": s["stored_bytes"] / MIB,
                     "ingest wall s (summary)": s["wall_seconds"],
                     "coordinator MiB": s["coordinator_peak_rss"] / MIB,
                     "largest worker MiB": s["worker_peak_rss"] / MIB})
    g, rng = zarr.open_group(str(stores["b"]), mode="r"), np.random.default_rng(0)
    x = np.load(npy / "strategic_features.npy", mmap_mode="r")
    for i in rng.integers(0, len(x) - 1000, 4):  # verify: the store holds what the merge did
        assert np.array_equal(g["features"][i:i + 1000], x[i:i + 1000], equal_nan=True)
    for h in fixtures.HEADS:
        assert np.array_equal(g[f"labels/{h}"][:], np.load(npy / f"labels_{h}.npy"))
    return {"tables": [{"rows": rows}], "targets": [
        target("wall (b) / (a)", b.wall / a.wall, "<=", 0.6),
        target("peak RSS tree (b) / (a)", b.peak_rss / a.peak_rss, "<=", 0.25),
        target("stored bytes (b) / npy bytes", sums["b"]["stored_bytes"] / npy_bytes, "<=", 0.5),
        target("wall (b') / (a), zarr-python pipeline", z.wall / a.wall, "<=", 0.6),
        target(f"wall (b'') / (a), correlation {corr}", c.wall / a.wall, "<=", 0.6),
        target("peak RSS tree (b'') / (a)", c.peak_rss / a.peak_rss, "<=", 0.25)],
        "notes": ["verified: 4 random 1,000-row ranges of features and every head's labels equal "
                  "in the store and the merged .npy files"]}
