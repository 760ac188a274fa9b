"""Interop benchmark (issue 8): ingest from parquet/hdf5/npy, export to HDF5/npy.

Steps (each measured run is its own process, measured with ``common.run_measured``):

1. Generate ``--rows`` rows (default 100,000) of the ``configs/large.yaml`` schema (893 float32
   features, 7 heads, 206 mask columns, episode ids) from the synthetic source, streaming, as
   (a) a directory of Parquet files (row groups of 16,384 rows; one column per feature, a
   fixed-size list column per mask, ``episode``), (b) one HDF5 file with chunked, gzip-1 +
   shuffle datasets in chunkstore's layout, (c) ``.npy`` files. Not measured.
2. Ingest, per kind: ``chunkstore ingest`` (``--workers 2``) vs the user's baseline "read it all,
   then ``np.save`` the arrays" (pyarrow ``read_table`` -> numpy, h5py ``[:]``, ``np.load``).
3. Export ``data/large.zarr`` (547,000 rows; built with ``chunkstore ingest configs/large.yaml``
   if missing) with ``chunkstore export`` to HDF5 (gzip-1 + shuffle) and to npy, vs a baseline
   that loads every array into memory and writes it with plain h5py (same chunks and filters) or
   ``np.save``; the baseline's write phase is also timed alone ("from memory").
4. Spot-check the outputs against the source, print one table, write the ``bench_interop``
   section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from common import (  # noqa: E402  (benchmarks/ is not a package)
    git_state,
    machine_info,
    markdown_table,
    now_iso,
    package_versions,
    run_measured,
    wait_for_idle,
    write_section,
)

SECTION = "bench_interop"
LARGE = REPO / "configs" / "large.yaml"
ROW_GROUP = 16384
MIB = 2**20


# ------------------------------------------------------------------ baselines (own processes)

def baseline_ingest(kind: str, data: str, out: str) -> dict[str, float]:
    """Read everything into memory the usual way, then np.save each array."""
    os.makedirs(out, exist_ok=True)
    t0 = time.perf_counter()
    arrays: dict[str, np.ndarray] = {}
    if kind == "parquet":
        import pyarrow.parquet as pq

        t = pq.read_table(data)
        feats = [c for c in t.column_names if c.startswith("f")]
        arrays["X"] = np.stack([t.column(c).to_numpy() for c in feats], axis=1)
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
        for p in sorted(Path(data).glob("*.npy")):
            arrays[p.stem] = np.load(p)
    t1 = time.perf_counter()
    for name, a in arrays.items():
        np.save(os.path.join(out, f"{name}.npy"), a)
    return {"read_s": t1 - t0, "write_s": time.perf_counter() - t1}


def baseline_export(fmt: str, store: str, out: str) -> dict[str, float]:
    """Load every array of the store into memory, then write it with plain h5py / np.save."""
    import zarr

    t0 = time.perf_counter()
    g = zarr.open_group(store, mode="r")
    attrs = g.attrs["chunkstore"]
    names = ["features", *(f"{k}/{h}" for k in ("labels", "masks") for h in attrs["heads"])]
    names += ["meta/group"] if attrs.get("has_group") else []
    arrays = {n: g[n][:] for n in names}
    t1 = time.perf_counter()
    if fmt == "hdf5":
        import h5py

        with h5py.File(out, "w") as f:
            for n, a in arrays.items():
                f.create_dataset(n, data=a, chunks=(attrs["chunk_rows"], *a.shape[1:]),
                                 compression="gzip", compression_opts=1, shuffle=True)
    else:
        os.makedirs(out, exist_ok=True)
        for n, a in arrays.items():
            np.save(os.path.join(out, n.replace("/", "_") + ".npy"), a)
    return {"read_s": t1 - t0, "write_s": time.perf_counter() - t1}


# ------------------------------------------------------------------ data generation

def generate(work: Path, rows: int) -> dict[str, Path]:
    """Write the same rows as parquet, hdf5 and npy, one block of rows at a time."""
    import h5py
    import pyarrow as pa
    import pyarrow.parquet as pq

    from chunkstore.config import load_config
    from chunkstore.sources.synthetic import SyntheticOptions, SyntheticSource

    schema = load_config(LARGE).schema
    src = SyntheticSource(SyntheticOptions(n_samples=rows, seed=0), schema)
    heads = {h.name: h.classes for h in schema.heads}
    paths = {"parquet": work / "parquet", "hdf5": work / "data.h5", "npy": work / "npy"}
    for p in paths.values():
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    paths["parquet"].mkdir(parents=True)
    paths["npy"].mkdir(parents=True)
    f_names = list(schema.feature_names)
    shapes = {"features": ((schema.n_features,), "float32"), "meta/group": ((), "int64"),
              **{f"labels/{h}": ((), "int16") for h in heads},
              **{f"masks/{h}": ((k,), "int8") for h, k in heads.items()}}
    h5 = h5py.File(paths["hdf5"], "w")
    npy = {}
    for name, (tail, dtype) in shapes.items():
        h5.create_dataset(name, shape=(rows, *tail), dtype=dtype, chunks=(1024, *tail),
                          compression="gzip", compression_opts=1, shuffle=True)
        npy[name] = np.lib.format.open_memmap(
            paths["npy"] / (name.replace("/", "_") + ".npy"), "w+", dtype, (rows, *tail))
    h5["features"].attrs["feature_names"] = f_names
    pending: list[Any] = []
    done = 0

    def flush() -> None:
        nonlocal done, pending
        b = {k: np.concatenate([p[k] for p in pending]) for k in pending[0]}
        n = len(b["features"])
        for name in shapes:
            h5[name][done:done + n] = b[name]
            npy[name][done:done + n] = b[name]
        cols = {c: pa.array(b["features"][:, j]) for j, c in enumerate(f_names)}
        for h, k in heads.items():
            cols[f"label_{h}"] = pa.array(b[f"labels/{h}"])
            cols[f"mask_{h}"] = pa.FixedSizeListArray.from_arrays(pa.array(b[f"masks/{h}"].ravel()),
                                                                  k)
        cols["episode"] = pa.array(b["meta/group"])
        pq.write_table(pa.table(cols), paths["parquet"] / f"part-{done // ROW_GROUP:05d}.parquet",
                       row_group_size=ROW_GROUP)
        done += n
        pending = []

    buffered = 0
    for item, n in enumerate(src.counts()):
        batch = src.generate(item, n)
        start = 0
        while start < n:
            take = min(n - start, ROW_GROUP - buffered)
            sl = slice(start, start + take)
            pending.append({"features": batch.features[sl], "meta/group": batch.group[sl],
                            **{f"labels/{h}": batch.labels[h][sl].astype(np.int16)
                               for h in heads},
                            **{f"masks/{h}": batch.masks[h][sl] for h in heads}})
            buffered += take
            start += take
            if buffered == ROW_GROUP:
                flush()
                buffered = 0
    if pending:
        flush()
    h5.close()
    for a in npy.values():
        a.flush()
    return paths


def ingest_config(work: Path, kind: str, data: Path) -> Path:
    import yaml

    heads = yaml.safe_load(LARGE.read_text())["schema"]["heads"]
    source: dict[str, Any] = {
        "parquet": {"kind": "parquet", "paths": str(data), "group": "episode"},
        "hdf5": {"kind": "hdf5", "paths": str(data)},
        "npy": {"kind": "npy", "features": str(data / "features.npy"),
                "labels": str(data / "labels_{head}.npy"), "masks": str(data / "masks_{head}.npy"),
                "group": str(data / "meta_group.npy")},
    }[kind]
    cfg = {"store": str(work / f"{kind}.zarr"), "schema": {"features": 893, "heads": heads},
           "source": source, "ingest": {"workers": 2}}
    path = work / f"{kind}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


# ------------------------------------------------------------------ checks

def check_store(store: Path, npy_dir: Path, rng: np.random.Generator) -> None:
    import zarr

    g = zarr.open_group(str(store), mode="r")
    x = np.load(npy_dir / "features.npy", mmap_mode="r")
    for s in rng.integers(0, len(x) - 100, 5):
        np.testing.assert_array_equal(g["features"][s:s + 100], x[s:s + 100])
    for name in ("labels/ability", "masks/target_unit"):
        np.testing.assert_array_equal(g[name][:], np.load(npy_dir / (name.replace("/", "_")
                                                                     + ".npy")))


def check_export(store: str, h5: Path, npy_dir: Path, rng: np.random.Generator) -> None:
    import h5py
    import zarr

    g = zarr.open_group(store, mode="r")
    x = np.load(npy_dir / "X.npy", mmap_mode="r")
    with h5py.File(h5, "r") as f, np.load(npy_dir / "masks.npz") as m:
        for s in rng.integers(0, g["features"].shape[0] - 500, 5):
            ref = g["features"][s:s + 500]
            np.testing.assert_array_equal(f["features"][s:s + 500], ref)
            np.testing.assert_array_equal(x[s:s + 500], ref)
        np.testing.assert_array_equal(f["masks/ability"][:], g["masks/ability"][:])
        np.testing.assert_array_equal(m["ability"], g["masks/ability"][:])


# ------------------------------------------------------------------ main

def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=100_000, help="rows of the ingest dataset")
    p.add_argument("--store", default=str(REPO / "data" / "large.zarr"),
                   help="store to export (built from configs/large.yaml if missing)")
    p.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    p.add_argument("--only", choices=["export", "ingest"], default=None,
                   help="run only the export or only the ingest part (default: both)")
    p.add_argument("--baseline-ingest", nargs=3, metavar=("KIND", "DATA", "OUT"))
    p.add_argument("--baseline-export", nargs=3, metavar=("FORMAT", "STORE", "OUT"))
    a = p.parse_args()
    if a.baseline_ingest:
        print(json.dumps(baseline_ingest(*a.baseline_ingest)))
        return
    if a.baseline_export:
        print(json.dumps(baseline_export(*a.baseline_export)))
        return

    work = HERE / "work" / "interop"
    work.mkdir(parents=True, exist_ok=True)
    py, me = sys.executable, str(Path(__file__).resolve())
    cli = [py, "-m", "chunkstore.cli"]
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    if not Path(a.store, "zarr.json").exists():
        log(f"building {a.store} from {LARGE} ...")
        subprocess.run([*cli, "ingest", str(LARGE), "--quiet"], cwd=REPO, check=True)
    import zarr

    n_large = zarr.open_group(a.store, mode="r").attrs["chunkstore"]["n_samples"]
    rng = np.random.default_rng(0)
    row_bytes = 893 * 4 + 7 * 2 + 206 + 8
    results: list[tuple[str, str, Any, int, dict[str, float]]] = []

    def measure(task: str, method: str, argv: list[str], nbytes: int) -> Any:
        wait_for_idle(threshold=30.0, settle=2.0, max_wait=20.0, log=log)
        r = run_measured(argv, cwd=REPO).check()
        phases = json.loads(r.stdout.strip().splitlines()[-1]) if "baseline" in method else {}
        results.append((task, method, r, nbytes, phases))
        log(f"{task:<22} {method:<40} {r.wall_seconds:7.1f} s {r.peak_rss_total / MIB:7.0f} MiB")
        if "chunkstore" in method:  # keep what is measured so far, in case the run is cut short
            report(a, results, n_large, final=False)
        return r

    if a.only in (None, "export"):
        h5, npy_out = work / "export.h5", work / "export-npy"
        for fmt, target in (("hdf5", h5), ("npy", npy_out)):
            base = work / f"baseline-export.{'h5' if fmt == 'hdf5' else 'd'}"
            measure(f"export {fmt}", "baseline: load all, write from memory",
                    [py, me, "--baseline-export", fmt, a.store, str(base)], n_large * row_bytes)
            shutil.rmtree(base, ignore_errors=True) if base.is_dir() else base.unlink(
                missing_ok=True)
            measure(f"export {fmt}", f"chunkstore export{' --format npy' if fmt == 'npy' else ''}",
                    [*cli, "export", a.store, str(target), "--format", fmt, "--overwrite"],
                    n_large * row_bytes)
        check_export(a.store, h5, npy_out, rng)

    if a.only in (None, "ingest"):
        log(f"generating {a.rows:,} rows as parquet, hdf5 and npy ...")
        data = generate(work, a.rows)
        for kind in ("parquet", "hdf5", "npy"):
            out = work / f"baseline-{kind}"
            shutil.rmtree(out, ignore_errors=True)
            measure(f"ingest {kind}", "baseline: read all + np.save",
                    [py, me, "--baseline-ingest", kind, str(data[kind]), str(out)],
                    a.rows * row_bytes)
            shutil.rmtree(out, ignore_errors=True)
            cfg = ingest_config(work, kind, data[kind])
            shutil.rmtree(work / f"{kind}.zarr", ignore_errors=True)
            measure(f"ingest {kind}", "chunkstore ingest --workers 2",
                    [*cli, "ingest", str(cfg), "--overwrite", "--quiet"], a.rows * row_bytes)
            check_store(work / f"{kind}.zarr", data["npy"], rng)
    report(a, results, n_large, final=True)


def report(a: Any, results: list[Any], n_large: int, *, final: bool) -> None:
    rows, base = [], {}
    for task, method, r, nbytes, phases in results:
        is_base = "baseline" in method
        if is_base:
            base[task] = (r, phases)
        b, _ = base[task]
        rows.append([task, method, f"{nbytes / MIB:,.0f}", f"{r.wall_seconds:.1f}",
                     f"{nbytes / MIB / r.wall_seconds:,.0f}", f"{r.peak_rss_total / MIB:,.0f}",
                     f"{phases['write_s']:.1f}" if is_base else "",
                     "" if is_base else f"{r.wall_seconds / b.wall_seconds:.2f}",
                     "" if is_base else f"{r.peak_rss_total / b.peak_rss_total:.2f}"])
    table = markdown_table(["task", "method", "data MiB", "wall s", "MiB/s", "peak RSS MiB",
                            "write phase s", "wall / baseline", "RSS / baseline"], rows)
    exports = [(t, r, n, base[t][1]) for t, m, r, n, _ in results
               if t.startswith("export") and "chunkstore" in m]
    checks = []
    for task, r, nbytes, bp in exports:
        checks.append(f"- {task}: peak RSS {r.peak_rss_total / MIB:,.0f} MiB = "
                      f"{r.peak_rss_total / nbytes:.3f} of the exported data (target < 0.25: "
                      f"{'PASS' if r.peak_rss_total < 0.25 * nbytes else 'MISS'}); throughput "
                      f"{nbytes / r.wall_seconds / MIB:,.0f} MiB/s vs "
                      f"{nbytes / bp['write_s'] / MIB:,.0f} MiB/s for the baseline's write "
                      "phase alone (target >= 1x: "
                      f"{'PASS' if r.wall_seconds <= bp['write_s'] else 'MISS'})")
    m = machine_info()
    pk = package_versions(["numpy", "zarr", "numcodecs", "pyarrow", "h5py"])
    load = os.getloadavg()
    body = f"""## Interop: parquet/hdf5/npy ingest, HDF5/npy export (issue 8)

Written by `benchmarks/bench_interop.py` on {now_iso()}; `uptime` load average at the end:
{load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f} (the machine is shared, so figures may be disturbed).

**Command:** `.venv/bin/python benchmarks/bench_interop.py {' '.join(sys.argv[1:])}`
{'' if final else chr(10) + '**Partial run:** the section is rewritten after every measurement; '
 'this one was cut short, so some rows are missing.' + chr(10)}

**Machine:** {m['nproc']} CPUs ({m['cpu_model']}), {m['ram_bytes'] / 2**30:.1f} GiB RAM,
{m['os']}, Python {m['python']}. **Packages:** {', '.join(f'{k} {v}' for k, v in pk.items())}.
**chunkstore:** {git_state(REPO, ['chunkstore', 'benchmarks/bench_interop.py'])}.

**Data:** ingest: {a.rows:,} rows of the `configs/large.yaml` schema (893 float32 features,
7 heads, 206 mask columns, episode ids) from the synthetic source, as Parquet (row groups of
{ROW_GROUP:,} rows, one column per feature, fixed-size list masks), one HDF5 file (chunks of
1,024 rows, gzip-1 + shuffle) and `.npy` files; stores use lz4 + bitshuffle. Export:
`{os.path.relpath(a.store, REPO)}` ({n_large:,} rows) to HDF5 (gzip-1 + shuffle, chunks as the
store's) and to `X.npy` + `labels.npz` + `masks.npz`.

{table}

{chr(10).join(checks)}

How it was measured: every row is its own process run by `common.run_measured` (wall time from
process start to exit, imports included; peak RSS = largest sum of RSS over the process tree,
polled every 50 ms). Baselines: ingest = read every array into memory (pyarrow `read_table` ->
numpy, h5py `[:]`, `np.load`) then `np.save`; export = read every array of the store into memory
with zarr, then write it with plain h5py using the same chunks and gzip-1 + shuffle filters, or
`np.save`. "write phase s" is the baseline's write phase alone, i.e. writing the same
arrays from memory. Outputs are spot-checked against the source after the runs. One run each,
warm page cache.
"""
    if final:
        print(table)
    if not a.no_write:
        write_section(HERE / "RESULTS.md", SECTION, body)


if __name__ == "__main__":
    main()
