"""The Dask graphs of ``chunkstore stats``: block reads, per-block partials, tree reductions.

Each block is a whole number of store chunks of every array read (features, labels, masks and
the split codes when a split is asked for). Blocks are read with the direct chunk decoder of
:mod:`chunkstore.store.chunkfiles` where it applies (a local store in chunkstore's layout), else
with zarr; both give the same arrays. Pass 1 (moments), pass 2 (histograms with fixed edges)
and the fused single pass (both at once, when the edges are known before reading) map a pure
function over the blocks and merge the partials in a fixed tree, so results do not depend on
the scheduler, the number of workers or their timing.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import reduce
from typing import Any, TypeVar

import numpy as np
import zarr
from numpy.typing import NDArray

from chunkstore.core.histograms import Binning, HistPartial
from chunkstore.core.moments import Partial
from chunkstore.core.plan import whole_chunk_rows
from chunkstore.errors import ChunkstoreError, ReadError
from chunkstore.store import layout
from chunkstore.store.chunkfiles import ChunkSource, chunk_source, read_chunk
from chunkstore.store.membership import split_array
from chunkstore.store.stats_io import node_array, scope_name

DEFAULT_SPLITS = layout.DEFAULT_SPLITS
SPLIT_EVERY = 4  # partials merged per tree node: few partials (up to ~50 MB each) alive

T = TypeVar("T")


@dataclass(frozen=True)
class Selection:
    """Which rows a scope covers: all, or those whose code in ``splits/<array>`` is ``code``."""

    scope: str
    rows: int
    array: str | None = None
    name: str | None = None
    code: int = -1

    def describe(self) -> dict[str, Any] | None:
        if self.array is None:
            return None
        return {"array": f"splits/{self.array}", "name": self.name, "code": self.code}


def select_rows(group: zarr.Group, path: str, split: str | None, splits: str = DEFAULT_SPLITS
                ) -> Selection:
    """Resolve ``--split NAME`` (looked up in ``splits/<splits>``) to a scope and a code.

    The scope is ``NAME`` for the default split array, else ``<splits>/NAME``.
    """
    n = int(node_array(group, "features").shape[0])
    if split is None:
        return Selection("all", n)
    resolved = split_array(group, path, splits, n)
    code = resolved.code(split)
    key = resolved.path
    rows = int(np.count_nonzero(resolved.array[...] == code))
    if rows == 0:
        raise ReadError(f"split {split!r} of {key!r} holds no rows; nothing to compute")
    return Selection(scope_name(split, splits), rows, splits, split, code)


def _rows(codes: NDArray[Any] | None, code: int, *arrays: Any) -> list[Any]:
    if codes is None:
        return list(arrays)
    keep = codes == code
    return [{h: a[keep] for h, a in x.items()} if isinstance(x, dict) else x[keep]
            for x in arrays]


def _pass1(x: NDArray[Any], labels: dict[str, NDArray[Any]], masks: dict[str, NDArray[Any]],
           codes: NDArray[Any] | None, code: int, heads: dict[str, int], correlation: bool
           ) -> Partial:
    x, labels, masks = _rows(codes, code, x, labels, masks)
    return Partial.of_block(x, labels, masks, heads, correlation=correlation)


def _pass2(x: NDArray[Any], labels: dict[str, NDArray[Any]], codes: NDArray[Any] | None,
           code: int, binning: Binning, heads: dict[str, int], dtype: type) -> HistPartial:
    x, labels = _rows(codes, code, x, labels)
    return HistPartial.of_block(x, labels, binning, heads, dtype)


def _fused(x: NDArray[Any], labels: dict[str, NDArray[Any]], masks: dict[str, NDArray[Any]],
           codes: NDArray[Any] | None, code: int, heads: dict[str, int], correlation: bool,
           binning: Binning, dtype: type) -> tuple[Partial, HistPartial]:
    x, labels, masks = _rows(codes, code, x, labels, masks)
    return (Partial.of_block(x, labels, masks, heads, correlation=correlation),
            HistPartial.of_block(x, labels, binning, heads, dtype))


def _merge_pair(a: tuple[Partial, HistPartial], b: tuple[Partial, HistPartial]
                ) -> tuple[Partial, HistPartial]:
    return a[0].merge(b[0]), a[1].merge(b[1])


def _merge_list(merge: Callable[[T, T], T], parts: list[T]) -> T:
    return reduce(merge, parts)


def tree_reduce(leaves: list[Any], merge: Callable[[Any, Any], Any],
                split_every: int = SPLIT_EVERY) -> Any:
    """A Dask delayed tree merging ``leaves`` in order, ``split_every`` per node."""
    from dask import delayed

    level = list(leaves)
    while len(level) > 1:
        level = [delayed(_merge_list, pure=True)(merge, level[i:i + split_every])
                 for i in range(0, len(level), split_every)]
    return level[0]


def block_rows(chunk_rows: int, n_features: int, itemsize: int, block_mib: float) -> int:
    """Rows per Dask block: whole store chunks, about ``block_mib`` MiB of features."""
    return whole_chunk_rows(chunk_rows, n_features * itemsize, block_mib * 2**20)


class CheckedReads:
    """A store array as Dask reads it, whose failed reads name the array and rows.

    zarr raises a plain exception from inside a Dask task when a chunk is unreadable (its
    crc32c checksum does not match, its file is truncated): this turns it into a ReadError
    that says where and what to do, which the CLI prints as one line.

    Whole chunks of rows are decoded with :func:`chunkstore.store.chunkfiles.read_chunk`
    (~2x less CPU than zarr's pipeline; it falls back to zarr by itself where its layout does
    not apply). The chunk source is made in the process that reads, never pickled.
    """

    def __init__(self, array: zarr.Array, path: str) -> None:
        self.array = array
        self.path = path
        self.shape = tuple(array.shape)
        self.dtype = array.dtype
        self.ndim = array.ndim
        self._source: ChunkSource | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_source": None}

    def _whole_chunks(self, key: Any) -> NDArray[Any] | None:
        """Rows ``key[0]`` (from a chunk boundary, all columns) chunk by chunk, else None."""
        key = key if isinstance(key, tuple) else (key,)
        first = key[0] if key else None
        if not isinstance(first, slice) or first.step not in (None, 1) or any(
                k.indices(n) != (0, n, 1) for k, n in zip(key[1:], self.shape[1:], strict=False)
                if isinstance(k, slice)) or not all(isinstance(k, slice) for k in key[1:]):
            return None
        if self._source is None:
            self._source = chunk_source(self.path, self.array)
        src = self._source
        if src.root is None:  # zarr reads a remote or sharded block's chunks concurrently
            return None
        a, b, _ = first.indices(self.shape[0])
        r = src.chunk_rows
        if a % r or b <= a:
            return None
        out = np.empty((-(-(b - a) // r) * r, *self.shape[1:]), src.dtype)
        for i, c in enumerate(range(a // r, -(-b // r))):
            read_chunk(src, c, out[i * r:(i + 1) * r])
        return out[:b - a]

    def __getitem__(self, key: Any) -> Any:
        try:
            fast = self._whole_chunks(key)
            return self.array[key] if fast is None else fast
        except ChunkstoreError:
            raise
        except Exception as e:
            first = key[0] if isinstance(key, tuple) and key else key
            rows = (f"rows [{first.start}, {first.stop})" if isinstance(first, slice)
                    else f"rows {first!r}")
            hint = ("; a chunk whose checksum does not match was changed or damaged after it "
                    "was written: `chunkstore verify STORE` lists them, `chunkstore repair "
                    "CONFIG` rewrites them") if "checksum" in str(e) else ""
            raise ReadError(f"reading {self.path!r} {rows} of store {self.array.store_path} "
                            f"failed: {type(e).__name__}: {e}{hint}") from e


def _blocks(group: zarr.Group, heads: Mapping[str, int], rows: int, sel: Selection,
            with_masks: bool) -> list[tuple[Any, ...]]:
    """Per block: delayed (features, labels, masks, codes) chunks of ``da.from_zarr`` arrays."""
    import dask.array as da
    from dask.base import tokenize

    def delayed_blocks(name: str) -> list[Any]:
        a = node_array(group, name)
        chunks = (rows, *a.shape[1:])
        lazy = da.from_array(CheckedReads(a, name), chunks=chunks,
                             name=f"read-{name}-{tokenize(a, chunks)}",
                             meta=np.empty((0,) * a.ndim, dtype=a.dtype))
        return list(lazy.to_delayed().ravel())

    feats = delayed_blocks("features")
    labels = {h: delayed_blocks(f"labels/{h}") for h in heads}
    masks = {h: delayed_blocks(f"masks/{h}") for h in heads} if with_masks else {}
    codes = delayed_blocks(f"splits/{sel.array}") if sel.array else [None] * len(feats)
    return [(f, {h: labels[h][i] for h in heads}, {h: masks[h][i] for h in masks}, codes[i])
            for i, f in enumerate(feats)]


def _heads(group: zarr.Group) -> dict[str, int]:
    attrs: dict[str, Any] = dict(group.attrs[layout.ATTR_KEY])  # type: ignore[arg-type]
    return {h: int(d["classes"]) for h, d in attrs["heads"].items()}


def moments_graph(group: zarr.Group, sel: Selection, *, correlation: bool, rows: int) -> Any:
    """Pass 1 as a Dask delayed: the merged :class:`Partial` of the selected rows."""
    from dask import delayed

    heads = _heads(group)
    leaves = [delayed(_pass1, pure=True)(x, lab, msk, cod, sel.code, heads, correlation)
              for x, lab, msk, cod in _blocks(group, heads, rows, sel, with_masks=True)]
    return tree_reduce(leaves, Partial.merge)


def histogram_graph(group: zarr.Group, sel: Selection, binning: Binning, *, rows: int,
                    heads: Mapping[str, int] | None = None) -> Any:
    """Pass 2 as a Dask delayed: the merged :class:`HistPartial` of the selected rows (the
    feature-bin x class tables of ``heads``; default every head of the store)."""
    from dask import delayed

    heads = _heads(group) if heads is None else dict(heads)
    dtype = count_dtype(sel)
    leaves = [delayed(_pass2, pure=True)(x, lab, cod, sel.code, binning, heads, dtype)
              for x, lab, _, cod in _blocks(group, heads, rows, sel, with_masks=False)]
    return tree_reduce(leaves, HistPartial.merge)


def _nbytes(*arrays: Any) -> int:
    return sum(a.nbytes for a in arrays if isinstance(a, np.ndarray)) + sum(
        _nbytes(*a.values()) for a in arrays if isinstance(a, dict))


def read_graph(group: zarr.Group, sel: Selection, *, rows: int) -> Any:
    """The same reads as pass 1 and nothing else: decoded bytes, a baseline for benchmarks."""
    from dask import delayed

    leaves = [delayed(_nbytes, pure=True)(*block)
              for block in _blocks(group, _heads(group), rows, sel, with_masks=True)]
    return tree_reduce(leaves, operator.add)


def count_dtype(sel: Selection) -> type:
    """int32 histogram counts while they cannot overflow: half the memory of int64 partials."""
    return np.int32 if sel.rows < 2**31 else np.int64


def fused_graph(group: zarr.Group, sel: Selection, binning: Binning, *, correlation: bool,
                rows: int) -> Any:
    """Pass 1 and pass 2 in one read, with edges known beforehand: (Partial, HistPartial)."""
    from dask import delayed

    heads = _heads(group)
    leaves = [delayed(_fused, pure=True)(x, lab, msk, cod, sel.code, heads, correlation,
                                         binning, count_dtype(sel))
              for x, lab, msk, cod in _blocks(group, heads, rows, sel, with_masks=True)]
    return tree_reduce(leaves, _merge_pair)


def stored_binning(group: zarr.Group, sel: Selection, bins: int) -> Binning | None:
    """Edges from the stored finite min and max of the scope (ingest writes exact ones for
    ``all``), or None when the scope has none. They may be stale (the caller checks them
    against the ones the pass computes)."""
    try:
        got = {k: node_array(group, f"stats/{sel.scope}/{k}")[...] for k in ("count", "min",
                                                                             "max")}
    except (KeyError, ChunkstoreError):
        return None
    f = int(node_array(group, "features").shape[1])
    if any(np.shape(v) != (f,) for v in got.values()):
        return None
    return Binning.of_range(np.asarray(got["count"]) > 0, np.asarray(got["min"]),
                            np.asarray(got["max"]), bins)
