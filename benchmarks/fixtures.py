"""Cached inputs, built once under ``benchmarks/work/fixtures/`` and keyed by their parameters.

A fixture is built in a temporary directory and renamed into place when complete, so an
interrupted build is never reused. None of this is measured.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .harness import CODE, REPO, WORK

FIXTURES = WORK / "fixtures"
LARGE = yaml.safe_load((REPO / "configs" / "large.yaml").read_text())
HEADS: dict[str, int] = LARGE["schema"]["heads"]


def cached(name: str, build: Callable[[Path], None]) -> Path:
    path = FIXTURES / name
    if not path.exists():
        tmp = FIXTURES / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        print(f"[fixtures] building {name} (once) ...", file=sys.stderr, flush=True)
        build(tmp)
        tmp.rename(path)
    return path


def write_config(path: Path, store: Path, source: dict[str, Any], **sections: Any) -> Path:
    """An ingest config with the schema of ``configs/large.yaml``."""
    cfg = {"store": str(store), "schema": LARGE["schema"], "source": source, **sections}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def synthetic(rows: int) -> dict[str, Any]:
    return {**LARGE["source"], "n_samples": rows}


def large_store(rows: int) -> Path:
    """``configs/large.yaml`` (synthetic source, seed 0) with ``rows`` samples, ingested."""
    def build(tmp: Path) -> None:
        cfg = write_config(tmp / "large.yaml", tmp / "store.zarr", synthetic(rows),
                           ingest=LARGE["ingest"])
        subprocess.run([sys.executable, "-m", "chunkstore.cli", "ingest", str(cfg), "--quiet"],
                       cwd=CODE[0], check=True)

    return cached(f"large-{rows}", build) / "store.zarr"


def array_names(store: Path) -> list[str]:
    import zarr

    g = zarr.open_group(str(store), mode="r")
    return ["features", *(f"{k}/{h}" for k in ("labels", "masks") for h in g[k].array_keys())]


def memmap_files(rows: int) -> Path:
    """One ``.npy`` per sample array of :func:`large_store` (``labels/x`` -> ``labels__x.npy``)."""
    store = large_store(rows)

    def build(tmp: Path) -> None:
        import zarr

        g = zarr.open_group(str(store), mode="r")
        for name in array_names(store):
            a = g[name]
            m = np.lib.format.open_memmap(tmp / (name.replace("/", "__") + ".npy"), "w+",
                                          a.dtype, a.shape)
            for i in range(0, a.shape[0], a.chunks[0] * 32):
                m[i:i + a.chunks[0] * 32] = a[i:i + a.chunks[0] * 32]
            m.flush()

    return cached(f"memmap-{rows}", build)


def episodes(rows: int) -> Any:
    """(item, batch) of the synthetic source, one episode at a time (labels int16)."""
    from chunkstore.core.schema import Schema
    from chunkstore.sources.synthetic import SyntheticOptions, SyntheticSource

    src = SyntheticSource(SyntheticOptions(n_samples=rows, seed=0),
                          Schema.from_dict(LARGE["schema"]))
    for item, n in enumerate(src.counts()):
        yield item, src.read(item, 0, n)


def rows_in_blocks(rows: int, block: int) -> Any:
    """Dicts of store-named arrays (``features``, ``labels/h``, ``masks/h``, ``meta/group``) of
    exactly ``block`` rows (the last may be shorter), one episode in memory at a time."""
    pending: list[dict[str, np.ndarray]] = []
    buffered = 0
    for _, b in episodes(rows):
        pending.append({"features": np.asarray(b.features, np.float32),
                        "meta/group": np.asarray(b.group, np.int64),
                        **{f"labels/{h}": np.asarray(b.labels[h]) for h in HEADS},
                        **{f"masks/{h}": np.asarray(b.masks[h], np.int8) for h in HEADS}})
        buffered += len(b.group)
        while buffered >= block:
            merged = {k: np.concatenate([p[k] for p in pending]) for k in pending[0]}
            yield {k: v[:block] for k, v in merged.items()}
            pending, buffered = [{k: v[block:] for k, v in merged.items()}], buffered - block
    if buffered:
        yield {k: np.concatenate([p[k] for p in pending]) for k in pending[0]}


def npz_batches(rows: int, batch_rows: int = 500) -> Path:
    """The users' batch-file convention: uncompressed ``np.savez`` files of ``batch_rows`` rows
    (``strategic_features`` float32, ``labels_<head>`` int64, ``masks_<head>`` int8, ``group``)."""
    def build(tmp: Path) -> None:
        for k, b in enumerate(rows_in_blocks(rows, batch_rows)):
            np.savez(tmp / f"batch_{k:06d}.npz", strategic_features=b["features"],
                     group=b["meta/group"],
                     **{f"labels_{h}": b[f"labels/{h}"].astype(np.int64) for h in HEADS},
                     **{f"masks_{h}": b[f"masks/{h}"] for h in HEADS})

    return cached(f"npz-{rows}-{batch_rows}", build)


def interop_files(rows: int, row_group: int = 16384) -> Path:
    """The same rows as Parquet files (one column per feature, fixed-size-list masks, row groups
    of ``row_group``), one HDF5 file (chunks of 1,024 rows, gzip-1 + shuffle) and ``.npy``."""
    def build(tmp: Path) -> None:
        import h5py
        import pyarrow as pa
        import pyarrow.parquet as pq

        from chunkstore.core.schema import default_feature_names

        names = default_feature_names(LARGE["schema"]["features"])
        (tmp / "parquet").mkdir()
        (tmp / "npy").mkdir()
        h5, npy = h5py.File(tmp / "data.h5", "w"), {}
        done = 0
        for b in rows_in_blocks(rows, row_group):
            b = {k: v.astype(np.int16) if k.startswith("labels/") else v for k, v in b.items()}
            n = len(b["features"])
            for name, a in b.items():
                if name not in h5:
                    h5.create_dataset(name, shape=(rows, *a.shape[1:]), dtype=a.dtype,
                                      chunks=(1024, *a.shape[1:]), compression="gzip",
                                      compression_opts=1, shuffle=True)
                    npy[name] = np.lib.format.open_memmap(
                        tmp / "npy" / (name.replace("/", "_") + ".npy"), "w+", a.dtype,
                        (rows, *a.shape[1:]))
                h5[name][done:done + n] = a
                npy[name][done:done + n] = a
            cols = {c: pa.array(b["features"][:, j]) for j, c in enumerate(names)}
            for h, k in HEADS.items():
                cols[f"label_{h}"] = pa.array(b[f"labels/{h}"])
                cols[f"mask_{h}"] = pa.FixedSizeListArray.from_arrays(
                    pa.array(b[f"masks/{h}"].ravel()), k)
            cols["episode"] = pa.array(b["meta/group"])
            pq.write_table(pa.table(cols), tmp / "parquet" / f"part-{done // row_group:05d}"
                           ".parquet", row_group_size=row_group)
            done += n
        h5.close()
        for a in npy.values():
            a.flush()
        (tmp / "done.json").write_text(json.dumps({"rows": done}))

    return cached(f"interop-{rows}-{row_group}", build)
