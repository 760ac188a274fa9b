"""Export a store to one HDF5 file or to ``.npy``/``.npz`` files, streaming block by block.

Memory stays at a few blocks of rows (``block_mib``, 32 MiB of sample data by default) whatever
the store's size:

- ``hdf5``: the store's layout in one file (``features``, ``labels/<head>``, ``masks/<head>``,
  ``meta/*``, ``splits/*`` with the same row chunking, ``stats/...`` copied whole), attributes
  for feature names and heads. With gzip (the default, readable by every HDF5 tool including
  ``h5dump``), chunks are shuffled and deflated by a thread pool and written with
  ``write_direct_chunk``, which is byte-for-byte what h5py's shuffle+gzip filters produce.
- ``npy``: ``X[_split].npy``, ``labels[_split].npz`` and ``masks[_split].npz`` (one array per
  head, stored uncompressed so they can be memory-mapped), each written through memory maps one
  block at a time.

``split`` keeps only the rows whose code in ``splits/<splits>`` is that split's; the exported
HDF5 file then also holds ``meta/row``, the store row of every exported row.
Outputs are written under a ``.partial`` name and renamed at the end, so a failed export
leaves no half-written file behind.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from numpy.typing import NDArray

from chunkstore.errors import ExportError
from chunkstore.runtime.memory import peak_rss
from chunkstore.store import layout
from chunkstore.store.membership import split_array
from chunkstore.store.urls import open_group

FORMATS = ("hdf5", "npy")
COMPRESSIONS = ("gzip", "lzf", "none")


@dataclass(frozen=True)
class ExportSummary:
    """What an export wrote; ``format()`` is what the CLI prints."""

    store: str
    out: str
    output_format: str
    split: str | None
    rows: int
    files: tuple[str, ...]
    raw_bytes: int
    out_bytes: int
    seconds: float
    peak_rss: int

    def format(self) -> str:
        mib = 2**20
        rate = self.raw_bytes / mib / self.seconds if self.seconds else 0.0
        return "\n".join([
            f"exported         {self.store} -> {self.out}  ({self.output_format})",
            f"rows             {self.rows:,}" + (f"  (split {self.split!r})" if self.split else ""),
            f"files            {', '.join(self.files)}",
            f"raw bytes        {self.raw_bytes / mib:,.1f} MiB",
            f"written bytes    {self.out_bytes / mib:,.1f} MiB",
            f"wall time        {self.seconds:,.1f} s  ({rate:,.0f} MiB/s raw)",
            f"peak memory      {self.peak_rss / mib:,.0f} MiB",
        ])


def export(
    store: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    format: str | None = None,
    split: str | None = None,
    splits: str = "default",
    compression: str = "gzip",
    level: int = 1,
    overwrite: bool = False,
    block_mib: float = 32.0,
    threads: int | None = None,
) -> ExportSummary:
    """Export ``store`` to an HDF5 file or a directory of ``.npy``/``.npz`` files.

    Parameters
    ----------
    store : path of a complete chunkstore store.
    out : the ``.h5`` file (hdf5) or the output directory (npy).
    format : ``"hdf5"`` or ``"npy"``; by default ``hdf5`` when ``out`` ends in ``.h5`` or
        ``.hdf5``, else ``npy`` (see :func:`guess_format`).
    split : export only this split's rows (looked up in ``splits/<splits>``).
    splits : the split array holding ``split``'s codes.
    compression, level : HDF5 only: ``gzip`` (level 0-9, default 1), ``lzf`` or ``none``.
    overwrite : replace existing output files.
    block_mib : uncompressed sample bytes per block; memory is a few blocks.
    threads : HDF5 gzip compression threads (default: CPU count).

    Returns
    -------
    ExportSummary with rows, files, bytes, wall time and this process's peak RSS.

    Raises
    ------
    ExportError
        Unknown format, compression or split; an incomplete store; output exists.
    NotAStoreError
        ``store`` holds no chunkstore store.

    Examples
    --------
    >>> export("data/demo.zarr", "demo.h5")  # doctest: +SKIP
    >>> export("data/demo.zarr", "out", format="npy", split="train")  # doctest: +SKIP
    """
    t0 = time.perf_counter()
    store, out = str(store), str(out)
    fmt = format or guess_format(out)
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; expected one of {list(FORMATS)}")
    if compression not in COMPRESSIONS:
        raise ExportError(f"unknown compression {compression!r}; expected one of "
                          f"{list(COMPRESSIONS)}")
    if not 0 <= level <= 9:
        raise ExportError(f"gzip level {level} is outside 0..9")
    attrs = layout.read_attrs(store)
    if attrs.get("status") != layout.COMPLETE:
        raise ExportError(f"store {store!r} is incomplete (status {attrs.get('status')!r}); "
                          "finish the ingest (rerun it) before exporting")
    group = open_group(store, mode="r")
    rows = split_rows(group, store, split, splits)
    arrays = sample_arrays(group, attrs, with_splits=fmt == "hdf5")
    n_out = int(attrs["n_samples"]) if rows is None else len(rows)
    row_bytes = sum(int(np.prod(a.shape[1:], dtype=np.int64)) * a.dtype.itemsize
                    for a in arrays.values())
    chunk_rows = int(attrs["chunk_rows"])
    block_rows = chunk_rows * max(1, int(block_mib * 2**20 // max(1, chunk_rows * row_bytes)))
    blocks = prefetch(iter_blocks(arrays, rows, block_rows, chunk_rows))
    if fmt == "hdf5":
        files = [out]
        _refuse_existing(files, overwrite)
        write_hdf5(out, group, attrs, arrays, blocks, n_out, rows, chunk_rows, store=store,
                   split=split, splits=splits, compression=compression, level=level,
                   threads=threads or os.cpu_count() or 1)
    else:
        files = write_npy(out, arrays, attrs, blocks, n_out, split, overwrite)
    return ExportSummary(store, out, fmt, split, n_out, tuple(files), n_out * row_bytes,
                         sum(os.path.getsize(f) for f in files), time.perf_counter() - t0,
                         peak_rss())


def guess_format(out: str) -> str:
    """``hdf5`` for ``.h5``/``.hdf5`` outputs, else ``npy`` (``out`` is then a directory)."""
    return "hdf5" if out.lower().endswith((".h5", ".hdf5", ".he5")) else "npy"


def split_rows(group: zarr.Group, store: str, split: str | None, splits: str
               ) -> NDArray[np.int64] | None:
    """Store rows whose code in ``splits/<splits>`` is ``split``'s; None for every row."""
    if split is None:
        return None
    n = int(group[layout.FEATURES].shape[0])
    return split_array(group, store, splits, n).rows(split)


def sample_arrays(group: zarr.Group, attrs: Mapping[str, Any], *, with_splits: bool
                  ) -> dict[str, zarr.Array]:
    """Every per-sample array to export, by store path (the root is never listed: the journal
    directory there is not a Zarr node)."""
    heads = list(attrs["heads"])
    paths = ["features", *(f"{k}/{h}" for k in ("labels", "masks") for h in heads)]
    for sub in ("meta", "splits") if with_splits else ("meta",):
        node = group.get(sub)
        if isinstance(node, zarr.Group):
            paths.extend(f"{sub}/{k}" for k in sorted(node.array_keys()))
    arrays = {}
    for p in paths:
        a = group.get(p)
        if not isinstance(a, zarr.Array):
            raise ExportError(f"store is missing array {p!r}; it does not follow the layout")
        arrays[p] = a
    return arrays


def iter_blocks(arrays: Mapping[str, zarr.Array], rows: NDArray[np.int64] | None,
                block_rows: int, chunk_rows: int) -> Iterator[tuple[int, dict[str, NDArray[Any]]]]:
    """Yield ``(first output row, {path: block})`` in output order, ``block_rows`` at a time.

    With ``rows``, each output block gathers its rows from store windows of at most
    ``block_rows`` rows aligned to the store's chunks, skipping windows with no selected row,
    so memory stays at two blocks however sparse the split.
    """
    n_store = next(iter(arrays.values())).shape[0]
    n_out = n_store if rows is None else len(rows)
    for o in range(0, n_out, block_rows):
        e = min(o + block_rows, n_out)
        if rows is None:
            yield o, {k: np.asarray(a[o:e]) for k, a in arrays.items()}
            continue
        sel = rows[o:e]
        out = {k: np.empty((e - o, *a.shape[1:]), dtype=a.dtype) for k, a in arrays.items()}
        lo, hi, pos = int(sel[0]), int(sel[-1]) + 1, 0
        for w in range(lo - lo % chunk_rows, hi, block_rows):
            s, t = max(w, lo), min(w + block_rows, hi)
            end = int(np.searchsorted(sel, t))
            if end > pos:
                take = sel[pos:end] - s
                for k, a in arrays.items():
                    out[k][pos:end] = np.asarray(a[s:t])[take]
                pos = end
        yield o, out


def prefetch(blocks: Iterator[Any]) -> Iterator[Any]:
    """Produce the next block in a background thread while the caller writes the current one.

    Reading a block is mostly zarr decoding (which releases the GIL), so it overlaps with the
    writes; one block ahead keeps memory at two blocks.
    """
    with ThreadPoolExecutor(1) as reader:
        ahead = reader.submit(next, blocks, None)
        while (block := ahead.result()) is not None:
            ahead = reader.submit(next, blocks, None)
            yield block


def _refuse_existing(paths: list[str], overwrite: bool) -> None:
    existing = [p for p in paths if os.path.exists(p)]
    if existing and not overwrite:
        raise ExportError(f"{existing} already exist; pass --overwrite to replace them")


def _attr(value: Any) -> Any:
    """A JSON-ish value as an HDF5 attribute: scalars and flat lists as they are, else JSON."""
    if isinstance(value, (bool, int, float, str, np.generic)):
        return value
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        import h5py

        return np.array(value, dtype=h5py.string_dtype())
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
    """Write the HDF5 file (see the module docstring) under ``out.partial``, then rename it."""
    import h5py

    tmp = out + ".partial"
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    cr = min(chunk_rows, n_out)
    heads = attrs["heads"]
    try:
        with h5py.File(tmp, "w") as f, ThreadPoolExecutor(threads) as pool:
            root = {**attrs, "n_samples": n_out, "exported_from": os.path.abspath(store),
                    "exported": layout.now_iso(), "split": split,
                    "splits_array": splits if split else None}
            f.attrs["chunkstore"] = json.dumps(root)
            f.attrs["format_version"] = layout.FORMAT_VERSION
            f.attrs["n_samples"] = n_out
            f.attrs["feature_names"] = _attr(list(attrs["feature_names"]))
            f.attrs["heads"] = json.dumps(heads)
            shapes = {k: (a.shape[1:], a.dtype) for k, a in arrays.items()}
            if rows is not None:
                shapes["meta/row"] = ((), np.dtype(np.int64))
            dsets = {}
            for name, (tail, dtype) in shapes.items():
                opts: dict[str, Any] = {}
                if cr:
                    opts = {"chunks": (cr, *tail)}
                    if compression == "gzip":
                        opts.update(compression="gzip", compression_opts=level, shuffle=True)
                    elif compression == "lzf":
                        opts.update(compression="lzf", shuffle=True)
                d = f.create_dataset(name, shape=(n_out, *tail), dtype=dtype, **opts)
                if name in arrays:
                    d.attrs.update({k: _attr(v) for k, v in arrays[name].attrs.items()})
                dsets[name] = d
            dsets["features"].attrs["feature_names"] = _attr(list(attrs["feature_names"]))
            for h, spec in heads.items():
                dsets[f"labels/{h}"].attrs["classes"] = spec["classes"]
                dsets[f"masks/{h}"].attrs["classes"] = spec["classes"]
            pending: list[tuple[Any, tuple[int, ...], Future[bytes]]] = []
            for o, block in blocks:
                if rows is not None:
                    block["meta/row"] = rows[o:o + len(block["features"])]
                ready, pending = pending, []
                for name, data in block.items():
                    d = dsets[name]
                    if compression != "gzip":
                        d[o:o + len(data)] = data
                        continue
                    for c in range(0, len(data), cr):
                        piece = data[c:c + cr]
                        fut = pool.submit(_shuffle_deflate, piece, d.chunks, level)
                        pending.append((d, (o + c,) + (0,) * (data.ndim - 1), fut))
                for d, offset, fut in ready:  # written while the next block was read
                    d.id.write_direct_chunk(offset, fut.result())
            for d, offset, fut in pending:
                d.id.write_direct_chunk(offset, fut.result())
            _copy_tree(group, "stats", f)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


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
    process never maps (or holds) more than one block of the output.
    """
    suffix = f"_{split}" if split else ""
    heads = list(attrs["heads"])
    final = {"X": os.path.join(outdir, f"X{suffix}.npy"),
             "labels": os.path.join(outdir, f"labels{suffix}.npz"),
             "masks": os.path.join(outdir, f"masks{suffix}.npz")}
    _refuse_existing(list(final.values()), overwrite)
    os.makedirs(outdir, exist_ok=True)
    tmpdir = os.path.join(outdir, f".export-{os.getpid()}.partial")
    os.makedirs(tmpdir, exist_ok=True)
    try:
        paths = {"features": os.path.join(tmpdir, "X.npy")}
        paths.update({f"{k}/{h}": os.path.join(tmpdir, f"{k}-{h}.npy")
                      for k in ("labels", "masks") for h in heads})
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
        for kind in ("labels", "masks"):
            with zipfile.ZipFile(final[kind] + ".partial", "w", zipfile.ZIP_STORED) as zf:
                for h in heads:
                    zf.write(paths[f"{kind}/{h}"], arcname=f"{h}.npy")
        os.replace(paths["features"], final["X"])
        for kind in ("labels", "masks"):
            os.replace(final[kind] + ".partial", final[kind])
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
        for kind in ("labels", "masks"):
            if os.path.exists(final[kind] + ".partial"):
                os.unlink(final[kind] + ".partial")
    return list(final.values())
