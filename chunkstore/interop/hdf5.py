"""Export to one HDF5 file: the store's layout, the same row chunking, statistics copied whole.

With gzip (the default, readable by every HDF5 tool including ``h5dump``), chunks are shuffled
and deflated by a thread pool and written with ``write_direct_chunk``, which is byte-for-byte
what h5py's shuffle+gzip filters produce, while the next block is read. h5py is optional
(``pip install 'chunkstore[hdf5]'``); it is imported only here, and only when used.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Iterator, Mapping
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from numpy.typing import NDArray

from chunkstore.errors import ExportError
from chunkstore.store import layout

INSTALL_HINT = "pip install 'chunkstore[hdf5]'"


def require_h5py() -> Any:
    """The ``h5py`` module; ExportError with the install hint when it is not installed."""
    try:
        import h5py
    except ImportError as e:
        raise ExportError(f"exporting to HDF5 needs h5py, which is not installed ({e}); "
                          f"install it with: {INSTALL_HINT} (or export with --format npy)"
                          ) from e
    return h5py


def _attr(value: Any) -> Any:
    """A JSON-ish value as an HDF5 attribute: scalars and flat lists as they are, else JSON
    (also a list of strings holding a NUL, which HDF5 strings cannot)."""
    if isinstance(value, (bool, int, float, str, np.generic)):
        return value
    if isinstance(value, (list, tuple)) and value and all(
            isinstance(v, str) and "\x00" not in v for v in value):  # HDF5 strings end at NUL
        return np.array(value, dtype=require_h5py().string_dtype())
    if (isinstance(value, (list, tuple)) and value
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        return np.array(value)
    return json.dumps(value)


def _shuffle_deflate(block: NDArray[Any], chunk_shape: tuple[int, ...], level: int) -> bytes:
    """One chunk as HDF5's shuffle + deflate filters store it (padded to the chunk shape)."""
    if block.shape != chunk_shape:
        full = np.zeros(chunk_shape, dtype=block.dtype)
        full[:block.shape[0]] = block
        block = full
    raw = np.ascontiguousarray(block).view(np.uint8)
    size = block.dtype.itemsize
    if size > 1:
        raw = np.ascontiguousarray(raw.reshape(-1, size).T)
    return zlib.compress(raw.data, level)


def write_hdf5(out: str, group: zarr.Group, attrs: Mapping[str, Any],
               arrays: Mapping[str, zarr.Array], blocks: Iterator[tuple[int, dict[str, Any]]],
               n_out: int, rows: NDArray[np.int64] | None, chunk_rows: int, *, store: str,
               split: str | None, splits: str, compression: str, level: int,
               threads: int) -> None:
    """Write the HDF5 file (see the module docstring) under ``out.partial``, then rename it.

    Raises
    ------
    ExportError
        h5py is not installed (with the install hint); nothing was written.
    """
    h5py = require_h5py()
    tmp = out + ".partial"
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    try:
        with h5py.File(tmp, "w") as f, ThreadPoolExecutor(threads) as pool:
            root = {**attrs, "n_samples": n_out, "exported_from": os.path.abspath(store),
                    "exported": layout.now_iso(), "split": split,
                    "splits_array": splits if split else None}
            write_root_attrs(f, root, attrs)
            dsets = create_datasets(f, attrs, arrays, n_out, min(chunk_rows, n_out),
                                    with_row=rows is not None, compression=compression,
                                    level=level)
            write_blocks(dsets, blocks, rows, pool, compressed=compression == "gzip",
                         level=level)
            _copy_tree(group, layout.STATS, f)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_root_attrs(f: Any, root: Mapping[str, Any], attrs: Mapping[str, Any]) -> None:
    """The file's attributes: the store's ``chunkstore`` attributes (as JSON) and the few
    fields HDF5 tools show directly."""
    f.attrs["chunkstore"] = json.dumps(root)
    f.attrs["format_version"] = layout.FORMAT_VERSION
    f.attrs["n_samples"] = root["n_samples"]
    f.attrs["feature_names"] = _attr(list(attrs["feature_names"]))
    f.attrs["heads"] = json.dumps(attrs["heads"])


def create_datasets(f: Any, attrs: Mapping[str, Any], arrays: Mapping[str, zarr.Array],
                    n_out: int, chunk_rows: int, *, with_row: bool, compression: str,
                    level: int) -> dict[str, Any]:
    """One dataset per exported array (and ``meta/row`` for a split), chunked like the store."""
    shapes = {k: (a.shape[1:], a.dtype) for k, a in arrays.items()}
    if with_row:
        shapes["meta/row"] = ((), np.dtype(np.int64))
    dsets = {}
    for name, (tail, dtype) in shapes.items():
        opts: dict[str, Any] = {}
        if chunk_rows:  # an empty export has no chunks
            opts = {"chunks": (chunk_rows, *tail)}
            if compression == "gzip":
                opts.update(compression="gzip", compression_opts=level, shuffle=True)
            elif compression == "lzf":
                opts.update(compression="lzf", shuffle=True)
        d = f.create_dataset(name, shape=(n_out, *tail), dtype=dtype, **opts)
        if name in arrays:
            d.attrs.update({k: _attr(v) for k, v in arrays[name].attrs.items()})
        dsets[name] = d
    dsets[layout.FEATURES].attrs["feature_names"] = _attr(list(attrs["feature_names"]))
    for h, spec in attrs["heads"].items():
        dsets[layout.label_path(h)].attrs["classes"] = spec["classes"]
        dsets[layout.mask_path(h)].attrs["classes"] = spec["classes"]
    return dsets


def write_blocks(dsets: Mapping[str, Any], blocks: Iterator[tuple[int, dict[str, Any]]],
                 rows: NDArray[np.int64] | None, pool: Executor, *, compressed: bool,
                 level: int) -> None:
    """Write every block; gzip chunks are compressed by ``pool`` and written one block later,
    while the next block is read."""
    pending: list[tuple[Any, tuple[int, ...], Future[bytes]]] = []
    for o, block in blocks:
        if rows is not None:
            block["meta/row"] = rows[o:o + len(block[layout.FEATURES])]
        ready, pending = pending, []
        for name, data in block.items():
            d = dsets[name]
            if not compressed:
                d[o:o + len(data)] = data
                continue
            cr = d.chunks[0]
            for c in range(0, len(data), cr):
                fut = pool.submit(_shuffle_deflate, data[c:c + cr], d.chunks, level)
                pending.append((d, (o + c,) + (0,) * (data.ndim - 1), fut))
        for d, offset, fut in ready:
            d.id.write_direct_chunk(offset, fut.result())
    for d, offset, fut in pending:
        d.id.write_direct_chunk(offset, fut.result())


def _copy_tree(group: zarr.Group, name: str, f: Any) -> None:
    """Copy a small group (statistics) whole: sub-groups, arrays and their attributes."""
    node = group.get(name)
    if not isinstance(node, zarr.Group):
        return
    g = f.require_group(name)
    g.attrs.update({k: _attr(v) for k, v in node.attrs.items()})
    for path, member in node.members(max_depth=None):
        target = f"{name}/{path}"
        if isinstance(member, zarr.Group):
            sub = f.require_group(target)
        else:
            sub = f.create_dataset(target, data=member[...])
        sub.attrs.update({k: _attr(v) for k, v in member.attrs.items()})
