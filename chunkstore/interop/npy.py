"""Export to ``.npy``/``.npz`` files: ``X[_split].npy``, ``labels[_split].npz`` and
``masks[_split].npz`` (one array per head, stored uncompressed so that they can be
memory-mapped), each written through memory maps one block at a time. A store without heads
(features only) exports ``X[_split].npy`` alone; every array keeps its stored dtype (integer
token ids stay integers)."""

from __future__ import annotations

import os
import shutil
import zipfile
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import zarr

from chunkstore.errors import ExportError
from chunkstore.store import layout

KINDS = ("labels", "masks")  # one .npz per kind, one member per head


def refuse_existing(paths: list[str], overwrite: bool) -> None:
    """ExportError when an output exists and ``overwrite`` is off."""
    existing = [p for p in paths if os.path.exists(p)]
    if existing and not overwrite:
        raise ExportError(f"{existing} already exist; pass --overwrite to replace them")


def _memmap_file(path: str, dtype: np.dtype[Any], shape: tuple[int, ...]) -> int:
    """Create a ``.npy`` of its final size (sparse) and return the data offset."""
    m = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    offset = int(m.offset)
    del m
    return offset


def write_npy(outdir: str, arrays: Mapping[str, zarr.Array], attrs: Mapping[str, Any],
              blocks: Iterator[tuple[int, dict[str, Any]]], n_out: int, split: str | None,
              overwrite: bool) -> list[str]:
    """Write ``X``, ``labels`` and ``masks`` files through per-block memory maps.

    Each block is copied into a map of just its rows, which is dropped right after, so the
    process never maps (or holds) more than one block of the output. Files are built in a
    temporary directory and renamed at the end: a failed export leaves no half-written file.
    """
    suffix = f"_{split}" if split else ""
    heads = list(attrs["heads"])
    kinds = KINDS if heads else ()  # no heads: no empty labels/masks archives
    final = {"X": os.path.join(outdir, f"X{suffix}.npy"),
             **{kind: os.path.join(outdir, f"{kind}{suffix}.npz") for kind in kinds}}
    refuse_existing(list(final.values()), overwrite)
    os.makedirs(outdir, exist_ok=True)
    tmpdir = os.path.join(outdir, f".export-{os.getpid()}.partial")
    os.makedirs(tmpdir, exist_ok=True)
    try:
        paths = {layout.FEATURES: os.path.join(tmpdir, "X.npy")}
        paths.update({f"{k}/{h}": os.path.join(tmpdir, f"{k}-{h}.npy")
                      for k in KINDS for h in heads})
        fill_files(paths, arrays, blocks, n_out)
        for kind in kinds:
            with zipfile.ZipFile(final[kind] + ".partial", "w", zipfile.ZIP_STORED) as zf:
                for h in heads:
                    zf.write(paths[f"{kind}/{h}"], arcname=f"{h}.npy")
        os.replace(paths[layout.FEATURES], final["X"])
        for kind in kinds:
            os.replace(final[kind] + ".partial", final[kind])
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
        for kind in kinds:
            if os.path.exists(final[kind] + ".partial"):
                os.unlink(final[kind] + ".partial")
    return list(final.values())


def fill_files(paths: Mapping[str, str], arrays: Mapping[str, zarr.Array],
               blocks: Iterator[tuple[int, dict[str, Any]]], n_out: int) -> None:
    """Create one ``.npy`` per array at its final size, then copy every block into it."""
    offsets, shapes = {}, {}
    for name, path in paths.items():
        a = arrays[name]
        shapes[name] = (n_out, *a.shape[1:])
        offsets[name] = _memmap_file(path, a.dtype, shapes[name])
    for o, block in blocks:
        for name, path in paths.items():
            data = block[name]
            row = int(np.prod(shapes[name][1:], dtype=np.int64)) * data.dtype.itemsize
            m = np.memmap(path, dtype=data.dtype, mode="r+", offset=offsets[name] + o * row,
                          shape=data.shape)
            m[:] = data
            del m  # unmapped: the dirty pages belong to the page cache, not to us
