"""Ingest from Parquet / HDF5 / npy vs reading it all and np.save (issue 8)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from .. import fixtures
from ..harness import MIB, Context, info

TITLE = "Ingest from Parquet / HDF5 / npy vs read all + np.save (issue 8)"
DEFAULT_ROWS = 100_000
ROW_BYTES = 893 * 4 + 7 * 2 + 206 + 8
ABOUT = """\
The same rows of the `configs/large.yaml` schema as Parquet (row groups of 16,384 rows, one
column per feature, fixed-size-list masks), one HDF5 file (chunks of 1,024 rows, gzip-1 +
shuffle) and `.npy` files. Baseline: read everything into memory the usual way (pyarrow
`read_table` -> numpy, h5py `[:]`, `np.load`) then `np.save` each array. chunkstore:
`chunkstore ingest --workers 2` with the parquet / hdf5 / npy source (store deleted first)."""


def baseline(kind: str, data: str, out: str) -> dict[str, Any]:
    import numpy as np

    os.makedirs(out, exist_ok=True)
    t0, arrays = time.perf_counter(), {}
    if kind == "parquet":
        import pyarrow.parquet as pq

        t = pq.read_table(data)
        arrays["X"] = np.stack([t.column(c).to_numpy() for c in t.column_names
                                if c.startswith("f")], axis=1)
        for c in t.column_names:
            if c.startswith("label_") or c == "episode":
                arrays[c] = t.column(c).to_numpy()
            elif c.startswith("mask_"):
                col = t.column(c).combine_chunks()
                arrays[c] = col.flatten().to_numpy().reshape(len(col), -1)
    elif kind == "hdf5":
        import h5py

        with h5py.File(data, "r") as f:
            f.visititems(lambda n, o: arrays.__setitem__(n.replace("/", "_"), o[:])
                         if isinstance(o, h5py.Dataset) else None)
    else:
        arrays = {p.stem: np.load(p) for p in sorted(Path(data).glob("*.npy"))}
    t1 = time.perf_counter()
    for name, a in arrays.items():
        np.save(os.path.join(out, f"{name}.npy"), a)
    return {"read_s": t1 - t0, "write_s": time.perf_counter() - t1}


def run(ctx: Context) -> dict[str, Any]:
    import numpy as np
    import zarr

    data, w = fixtures.interop_files(ctx.rows), ctx.work
    npy = data / "npy"
    sources = {"parquet": ({"kind": "parquet", "paths": str(data / "parquet"), "group": "episode"},
                           data / "parquet"),
               "hdf5": ({"kind": "hdf5", "paths": str(data / "data.h5")}, data / "data.h5"),
               "npy": ({"kind": "npy", "features": str(npy / "features.npy"),
                        "labels": str(npy / "labels_{head}.npy"),
                        "masks": str(npy / "masks_{head}.npy"),
                        "group": str(npy / "meta_group.npy")}, npy)}
    methods = {}
    for kind, (src, path) in sources.items():
        cfg = fixtures.write_config(w / f"{kind}.yaml", w / f"{kind}.zarr", src,
                                    ingest={"workers": 2})
        methods[f"b {kind}"] = lambda kind=kind, path=path: ctx.step(
            f"{kind}: baseline, read all + np.save", "interop_ingest:baseline", kind=kind,
            data=str(path), out=str(w / f"baseline-{kind}"), clean=w / f"baseline-{kind}")
        methods[f"c {kind}"] = lambda kind=kind, cfg=cfg: ctx.cli(
            f"{kind}: chunkstore ingest --workers 2", "ingest", cfg, "--overwrite", "--quiet",
            clean=w / f"{kind}.zarr")
    r = ctx.best(methods)
    rows, targets, nbytes = [], [], ctx.rows * ROW_BYTES
    x = np.load(npy / "features.npy", mmap_mode="r")
    for kind in sources:
        b, c = r[f"b {kind}"], r[f"c {kind}"]
        rows += [{"method": b.label, **b.fields(), "MiB/s": nbytes / MIB / b.wall},
                 {"method": c.label, **c.fields(), "MiB/s": nbytes / MIB / c.wall}]
        targets += [info(f"{kind}: wall chunkstore / baseline", c.wall / b.wall),
                    info(f"{kind}: peak RSS chunkstore / baseline", c.peak_rss / b.peak_rss)]
        f = zarr.open_group(str(w / f"{kind}.zarr"), mode="r")["features"]
        assert np.array_equal(f[-500:], x[-500:], equal_nan=True), kind
    return {"tables": [{"rows": rows}], "targets": targets,
            "notes": ["verified: the last 500 rows of features of each store equal the source"]}
