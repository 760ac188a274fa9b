"""Export a store to one HDF5 file or to ``.npy``/``.npz`` files, streaming block by block.

Memory stays at a few blocks of rows (``block_mib``, 32 MiB of sample data by default) whatever
the store's size:

- ``hdf5`` (:mod:`chunkstore.interop.hdf5`, needs h5py): the store's layout in one file
  (``features``, ``labels/<head>``, ``masks/<head>``, ``meta/*``, ``splits/*`` with the same
  row chunking, ``stats/...`` copied whole), attributes for feature names and heads.
- ``npy`` (:mod:`chunkstore.interop.npy`): ``X[_split].npy``, ``labels[_split].npz`` and
  ``masks[_split].npz`` (one array per head, uncompressed so they can be memory-mapped).

This module reads: it opens the store, resolves the split's rows and yields blocks of rows,
one block read ahead while the writer writes the current one.

``split`` keeps only the rows whose code in ``splits/<splits>`` is that split's; the exported
HDF5 file then also holds ``meta/row``, the store row of every exported row.
Outputs are written under a ``.partial`` name and renamed at the end, so a failed export
leaves no half-written file behind.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr
from numpy.typing import NDArray

from chunkstore.core.plan import whole_chunk_rows
from chunkstore.errors import ExportError
from chunkstore.interop.hdf5 import require_h5py, write_hdf5
from chunkstore.interop.npy import refuse_existing, write_npy
from chunkstore.runtime.memory import peak_rss
from chunkstore.store import layout
from chunkstore.store.membership import split_array
from chunkstore.store.stats_io import node_array
from chunkstore.store.urls import open_group
from chunkstore.store.version_view import VersionView
from chunkstore.store.view import read_checked

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
    version: str | int | None = None,
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
    version : export the store as it was at this version id or tag (``chunkstore log``):
        rows ``[0, N_v)``, that version's split codes, statistics and heads. None: as it is.

    Returns
    -------
    ExportSummary with rows, files, bytes, wall time and this process's peak RSS.

    Raises
    ------
    ExportError
        Unknown format, compression or split; an incomplete store; output exists.
    VersionError
        ``store`` has no version or tag ``version``.
    NotAStoreError
        ``store`` holds no chunkstore store.

    Examples
    --------
    >>> export("data/demo.zarr", "demo.h5")  # doctest: +SKIP
    >>> export("data/demo.zarr", "out", format="npy", split="train")  # doctest: +SKIP
    """
    t0 = time.perf_counter()
    store, out = str(store), str(out)
    fmt = check_request(out, format, compression, level)
    if fmt == "hdf5":
        require_h5py()  # the install hint before any work
    src = open_export(store, split, splits, with_splits=fmt == "hdf5", block_mib=block_mib,
                      version=version)
    blocks = prefetch(iter_blocks(src.arrays, src.rows, src.block_rows, src.chunk_rows))
    if fmt == "hdf5":
        files = [out]
        refuse_existing(files, overwrite)
        write_hdf5(out, src.group, src.attrs, src.arrays, blocks, src.n_out, src.rows,
                   src.chunk_rows, store=store, split=split, splits=splits,
                   compression=compression, level=level, threads=threads or os.cpu_count() or 1)
    else:
        files = write_npy(out, src.arrays, src.attrs, blocks, src.n_out, split, overwrite)
    return ExportSummary(store, out, fmt, split, src.n_out, tuple(files),
                         src.n_out * src.row_bytes, sum(os.path.getsize(f) for f in files),
                         time.perf_counter() - t0, peak_rss())


def check_request(out: str, format: str | None, compression: str, level: int) -> str:
    """The export format (given, or guessed from ``out``); ExportError for a bad option."""
    fmt = format or guess_format(out)
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; expected one of {list(FORMATS)}")
    if compression not in COMPRESSIONS:
        raise ExportError(f"unknown compression {compression!r}; expected one of "
                          f"{list(COMPRESSIONS)}")
    if not 0 <= level <= 9:
        raise ExportError(f"gzip level {level} is outside 0..9")
    return fmt


@dataclass(frozen=True)
class ExportSource:
    """What an export reads: the open store, its arrays, the selected rows and the blocking."""

    group: zarr.Group
    attrs: dict[str, Any]
    arrays: dict[str, zarr.Array]
    rows: NDArray[np.int64] | None  # store rows of a split; None for every row
    n_out: int
    row_bytes: int  # uncompressed bytes of one row over every exported array
    chunk_rows: int
    block_rows: int  # rows per block: whole store chunks, about block_mib MiB


def open_export(store: str, split: str | None, splits: str, *, with_splits: bool,
                block_mib: float, version: str | int | None = None) -> ExportSource:
    """Open a complete store (or one of its versions) for export and resolve the split's
    rows."""
    attrs = layout.read_attrs(store)
    if attrs.get("status") != layout.COMPLETE:
        raise ExportError(f"store {store!r} is incomplete (status {attrs.get('status')!r}); "
                          "finish the ingest (rerun it) before exporting")
    if version is None:
        group = open_group(store, mode="r")
        rows = split_rows(group, store, split, splits)
        arrays = sample_arrays(group, attrs, with_splits=with_splits)
    else:
        view = VersionView(store, version, warn=False)
        group, n = view.group, view.n_samples
        attrs = {**view.attrs, "version": {"id": view.version.id, "time": view.version.time,
                                           "command": view.version.command}}
        rows = None if split is None else split_array(group, store, splits, n).rows(split)
        arrays = {p: view.array(p) for p in sample_arrays(view.live_group, attrs,
                                                          with_splits=False)}
        if with_splits:
            arrays.update(sample_arrays(group, {"heads": {}}, with_splits=True, only_splits=True))
    row_bytes = sum(int(np.prod(a.shape[1:], dtype=np.int64)) * a.dtype.itemsize
                    for a in arrays.values())
    chunk_rows = int(attrs["chunk_rows"])
    block_rows = whole_chunk_rows(chunk_rows, row_bytes, block_mib * 2**20)
    return ExportSource(group, attrs, arrays, rows,
                        int(attrs["n_samples"]) if rows is None else len(rows), row_bytes,
                        chunk_rows, block_rows)


def guess_format(out: str) -> str:
    """``hdf5`` for ``.h5``/``.hdf5`` outputs, else ``npy`` (``out`` is then a directory)."""
    return "hdf5" if out.lower().endswith((".h5", ".hdf5", ".he5")) else "npy"


def split_rows(group: zarr.Group, store: str, split: str | None, splits: str
               ) -> NDArray[np.int64] | None:
    """Store rows whose code in ``splits/<splits>`` is ``split``'s; None for every row."""
    if split is None:
        return None
    n = int(node_array(group, layout.FEATURES).shape[0])
    return split_array(group, store, splits, n).rows(split)


def sample_arrays(group: zarr.Group, attrs: Mapping[str, Any], *, with_splits: bool,
                  only_splits: bool = False) -> dict[str, zarr.Array]:
    """Every per-sample array to export, by store path (the root is never listed: the journal
    directory there is not a Zarr node); ``only_splits``: the split arrays alone."""
    heads = list(attrs["heads"])
    paths = [] if only_splits else [
        layout.FEATURES, *(f(h) for f in (layout.label_path, layout.mask_path) for h in heads)]
    subs = (layout.META,) * (not only_splits) + (layout.SPLITS,) * with_splits
    for sub in subs:
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
            yield o, {k: np.asarray(read_checked(a, o, e)) for k, a in arrays.items()}
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
                    out[k][pos:end] = np.asarray(read_checked(a, s, t))[take]
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
