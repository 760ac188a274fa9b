"""``chunkstore export`` vs loading everything and writing it with h5py / np.save (issue 8)."""

from __future__ import annotations

import os
import time
from typing import Any

from .. import fixtures
from ..harness import MIB, Context, target

TITLE = "Export to HDF5 / npy vs writing from memory (issue 8)"
DEFAULT_ROWS = 547_000
ABOUT = """\
Store: `configs/large.yaml`. Baseline: read every sample array with zarr into memory, then write
it with plain h5py (the store's chunks, gzip-1 + shuffle) or `np.save`; its write phase alone is
"writing from memory". chunkstore: `chunkstore export STORE OUT [--format npy] --overwrite`."""


def baseline(store: str, fmt: str, out: str) -> dict[str, Any]:
    import numpy as np
    import zarr

    t0 = time.perf_counter()
    g = zarr.open_group(store, mode="r")
    names = fixtures.array_names(store) + (["meta/group"] if "meta" in g else [])
    arrays = {n: g[n][:] for n in names}
    t1 = time.perf_counter()
    if fmt == "hdf5":
        import h5py

        with h5py.File(out, "w") as f:
            for n, a in arrays.items():
                f.create_dataset(n, data=a, chunks=(g[n].chunks[0], *a.shape[1:]),
                                 compression="gzip", compression_opts=1, shuffle=True)
    else:
        os.makedirs(out, exist_ok=True)
        for n, a in arrays.items():
            np.save(os.path.join(out, n.replace("/", "_") + ".npy"), a)
    return {"read_s": t1 - t0, "write_s": time.perf_counter() - t1,
            "bytes": sum(a.nbytes for a in arrays.values())}


def run(ctx: Context) -> dict[str, Any]:
    import h5py
    import numpy as np
    import zarr

    store, w = fixtures.large_store(ctx.rows), ctx.work
    out = {"hdf5": w / "export.h5", "npy": w / "export-npy"}
    methods = {}
    for fmt, path in out.items():
        base = w / f"baseline.{fmt}"
        methods[f"baseline {fmt}"] = lambda fmt=fmt, base=base: ctx.step(
            f"{fmt}: baseline, load all + write from memory", "export:baseline",
            store=str(store), fmt=fmt, out=str(base), clean=base)
        methods[f"chunkstore {fmt}"] = lambda fmt=fmt, path=path: ctx.cli(
            f"{fmt}: chunkstore export", "export", store, path, "--format", fmt, "--overwrite")
    r = ctx.best(methods)
    rows, targets = [], []
    for fmt in out:
        b, c = r[f"baseline {fmt}"], r[f"chunkstore {fmt}"]
        data = b.result["bytes"]
        rows += [{"method": b.label, "data MiB": data / MIB, **b.fields(), "MiB/s": data / MIB
                  / b.wall, "write phase s": b.result["write_s"]},
                 {"method": c.label, "data MiB": data / MIB, **c.fields(),
                  "MiB/s": data / MIB / c.wall, "wall / baseline": c.wall / b.wall,
                  "RSS / baseline": c.peak_rss / b.peak_rss}]
        targets += [target(f"{fmt}: peak RSS / exported data", c.peak_rss / data, "<", 0.25,
                           "{:.3f}"),
                    target(f"{fmt}: throughput / baseline's write phase alone",
                           b.result["write_s"] / c.wall, ">=", 1.0)]
    g, rng = zarr.open_group(str(store), mode="r"), np.random.default_rng(0)
    i = int(rng.integers(0, g["features"].shape[0] - 1000))
    with h5py.File(out["hdf5"], "r") as f:
        assert np.array_equal(f["features"][i:i + 1000], g["features"][i:i + 1000],
                              equal_nan=True)
    return {"tables": [{"rows": rows}], "targets": targets,
            "notes": [f"verified: features rows [{i}:{i + 1000}] of the HDF5 export equal the "
                      "store's"]}
