"""Lazy split graphs over a store: inputs in blocks of whole chunks, global tables, codes.

The assignment functions of :mod:`chunkstore.splits` run one block of whole store chunks at a
time (``BLOCK_ROWS`` rows rounded to a multiple of the chunk rows, so that a block maps to whole
chunks -- and to one shard of ``splits/<name>``, which therefore has exactly one writer).
Methods that need a global table (group sizes, (group, class) counts, per-class hash
histograms, rows per item) reduce small per-block tables with a tree of Dask tasks first, then
assign. Memory stays at a few blocks plus the table (O(groups) or O(classes x 1024)). Writing
is in :mod:`chunkstore.splits_write`, views in :mod:`chunkstore.splits_view`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cached_property, partial
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr

from chunkstore.core import assign as splits
from chunkstore.core import splitspec
from chunkstore.core.plan import whole_chunk_rows
from chunkstore.core.splitspec import SplitSpec
from chunkstore.errors import SplitError
from chunkstore.splits.duplicates import group_components, load_duplicates
from chunkstore.store import layout

if TYPE_CHECKING:
    import dask.array as da
    from dask.delayed import Delayed

    from chunkstore.store.view import StoreView

DEFAULT_ARRAY = "default"
SPLITS_GROUP = "splits"
BLOCK_ROWS = 131072  # target rows per Dask block: fewer, larger zarr reads are faster


# ------------------------------------------------------------------------------ inputs --

class Inputs:
    """The store's arrays as Dask arrays in blocks of whole chunks, each built once."""

    def __init__(self, ds: StoreView, merged: tuple[np.ndarray, np.ndarray] | None = None
                 ) -> None:
        self.ds = ds
        self.n = ds.n_samples
        r = ds.chunk_rows
        self.block_rows = whole_chunk_rows(r, 1, BLOCK_ROWS)  # codes: 1 byte a row
        self.merged = merged  # (group ids, merged id) of --dedup: meta/group reads merged
        self._read: dict[str, da.Array] = {}

    def read(self, path: str) -> da.Array:
        """``path`` as a Dask array in blocks (one array per path: graphs share its tasks)."""
        if path not in self._read:
            self._read[path] = self._open(path)
        return self._read[path]

    def _open(self, path: str) -> da.Array:
        import dask.array as da

        arr = self.ds.group[path]
        if not isinstance(arr, zarr.Array):
            raise SplitError(f"{path!r} in store {self.ds.path!r} is a group; a split reads it as "
                             "an array (is the store damaged? `chunkstore info` lists its nodes)")
        x = da.from_zarr(arr, chunks=(self.block_rows, *arr.shape[1:]))
        if path == layout.GROUP and self.merged is not None and self.merged[0].size:
            return da.map_blocks(splits.remap_keys, x, *self.merged, dtype=np.int64)
        return x

    @cached_property
    def keys(self) -> da.Array:
        """uint64 sample keys: ``meta/source`` provenance when present, else the row index."""
        import dask.array as da

        if "source" in self.ds.meta:
            return da.map_blocks(splits.source_keys, self.read("meta/source"), drop_axis=1,
                                 dtype=np.uint64)
        rows = da.arange(self.n, chunks=self.block_rows, dtype=np.int64)
        return da.map_blocks(splits.as_keys, rows, dtype=np.uint64)

    def key_name(self, spec: SplitSpec) -> str:
        """What the assignment is keyed by, for the summary and the split array's attrs."""
        source = "source" in self.ds.meta
        if is_grouped(spec):
            return "meta/group"
        if spec.method == "ordered":
            return f"{spec.by or ('meta/source' if source else 'row')} order"
        return "meta/source" if source else "row index"

    def blocks(self, x: da.Array) -> list[Delayed]:
        return list(x.to_delayed(optimize_graph=False).ravel())


def tree_reduce(parts: Sequence[Any], combine: Callable[..., Any], every: int = 8) -> Delayed:
    """Reduce per-block results with a tree of ``combine(*parts)`` tasks."""
    from dask import delayed

    level = list(parts)
    while len(level) > 1:
        level = [delayed(combine)(*level[i:i + every]) for i in range(0, len(level), every)]
    return level[0]


def stratify_head(spec: SplitSpec) -> str:
    """The head a stratified ``spec`` balances (``spec.problem()`` already requires one)."""
    if spec.by is None:
        raise SplitError(f"split {spec.name!r}: method {spec.method!r} needs 'by', the head "
                         "whose classes to balance (--by HEAD)")
    return spec.by


def check_spec(ds: StoreView, spec: SplitSpec) -> None:
    """Raise SplitError unless ``spec`` is valid and its inputs exist in ``ds``."""
    bad = spec.problem()
    if bad:
        raise SplitError(f"split {spec.name!r}: {bad[0]}: {bad[1]}")
    if ds.status != layout.COMPLETE:
        raise SplitError(f"store {ds.path!r} is incomplete; finish the ingest (rerun it) before "
                         "computing splits")
    if spec.by is not None and spec.method != "ordered" and spec.by not in ds.heads:
        raise SplitError(f"split {spec.name!r}: unknown head {spec.by!r}; the store's heads are "
                         f"{sorted(ds.heads)}")
    if (spec.method in splitspec.GROUPED or spec.group) and "group" not in ds.meta:
        raise SplitError(f"split {spec.name!r}: method {spec.method!r} needs meta/group, which "
                         f"store {ds.path!r} does not have (its source gave no group ids); use "
                         "'random' or 'stratified', or ingest with group ids")
    if spec.method == "ordered" and spec.by is not None:
        key = spec.by.removeprefix("meta/")
        if key not in ds.meta or ds.meta[key].ndim != 1:
            raise SplitError(f"split {spec.name!r}: order key {spec.by!r} is not a 1-D array in "
                             f"store {ds.path!r}; its meta arrays are "
                             f"{sorted('meta/' + k for k in ds.meta)}")


def merged_groups(ds: StoreView, spec: SplitSpec) -> tuple[np.ndarray, np.ndarray] | None:
    """For a grouped ``--dedup`` split: groups merged through their duplicates, else None."""
    if not (spec.dedup and is_grouped(spec)):
        return None
    dups = load_duplicates(ds, required=True)
    return None if dups is None else group_components(ds, dups)


def is_grouped(spec: SplitSpec) -> bool:
    return spec.method in splitspec.GROUPED or spec.group


def is_stratified(spec: SplitSpec) -> bool:
    return spec.method in splitspec.STRATIFIED or (spec.method == "kfold" and spec.by is not None)


def fractions_of(spec: SplitSpec) -> list[float]:
    return [f for _, f in spec.fractions]


# ---------------------------------------------------------------------------- the graph --

def lookup_key(spec: SplitSpec) -> str | None:
    """The array whose values a method looks up in its table: meta/group or an order key."""
    if is_grouped(spec):
        return "meta/group"
    return spec.by if spec.method == "ordered" else None


def table_graph(inp: Inputs, spec: SplitSpec, head: str | None
                ) -> tuple[Delayed | None, list[Delayed]]:
    """The global table the method needs (lazy; None for per-row methods) and, for lookup
    methods, each block's key runs (None where a block has too many runs to keep)."""
    from dask import delayed

    key = lookup_key(spec)
    if key is not None:  # (key, class of `head` or 0, rows)
        k = inp.blocks(inp.read(key))
        lab = (inp.blocks(inp.read(f"labels/{head}")) if head and is_grouped(spec)
               else [None] * len(k))
        parts = [delayed(splits.table_and_runs, nout=2)(a, b) for a, b in zip(k, lab, strict=True)]
        return tree_reduce([p[0] for p in parts], splits.merge_pair_counts), [p[1] for p in parts]
    if is_stratified(spec):  # (classes, hash bins)
        by = stratify_head(spec)
        hist = partial(splits.class_hash_hist, seed=spec.seed, n_classes=inp.ds.heads[by])
        lab = inp.blocks(inp.read(f"labels/{by}"))
        parts = [delayed(hist)(a, k) for a, k in zip(lab, inp.blocks(inp.keys), strict=True)]
        return tree_reduce(parts, sum_all), []
    if spec.method == "ordered" and _item_rows(inp.ds):  # rows per item
        items = inp.blocks(inp.read("meta/source")[:, 0])
        return tree_reduce([delayed(splits.pair_counts)(b) for b in items],
                           splits.merge_pair_counts), []
    return None, []


def sum_all(*parts: Any) -> Any:
    return sum(parts[1:], parts[0])


def assignment_of(spec: SplitSpec, table: Any, n_classes: int) -> Any:
    """Turn the global table into what each block needs to assign its rows."""
    fr = fractions_of(spec)
    if is_grouped(spec) and is_stratified(spec):
        return splits.assign_stratified_groups(table, n_classes, fr, spec.seed)
    if is_grouped(spec):
        groups, sizes = splits.key_totals(table)
        return groups, splits.assign_groups(groups, sizes, fr, spec.seed)
    if is_stratified(spec):
        return splits.class_cuts(table, fr)
    values, sizes = splits.key_totals(table)  # ordered
    if spec.by is not None:  # equal keys together, in key order
        return values, splits.assign_by_cumsum(sizes, np.arange(values.size), fr)
    return values, np.r_[0, np.cumsum(sizes)[:-1]]  # item -> rank of its first row


def _item_rows(ds: StoreView) -> bool:
    """``meta/source`` holds chunkstore's (item, row) pairs (not a python source's own
    provenance, ``source_provenance``): ordered splits then follow the source's order."""
    return "source" in ds.meta and not ds.attrs.get("source_provenance")


def _ordered_source(source: Any, items: Any, starts: Any, n: int, fractions: list[float]
                    ) -> np.ndarray:
    s = np.asarray(source, dtype=np.int64)
    rank = starts[np.searchsorted(items, s[:, 0])] + s[:, 1]
    return splits.assign_ordered_rank(rank, n, fractions)


def codes_graph(inp: Inputs, spec: SplitSpec, assignment: Any) -> da.Array:
    """The lazy (N,) int8 codes, in blocks of whole chunks."""
    import dask.array as da

    fr, i8 = fractions_of(spec), np.int8
    key = lookup_key(spec)
    if key is not None:
        return da.map_blocks(_lookup, inp.read(key), assignment, dtype=i8)
    if is_stratified(spec):
        return da.map_blocks(splits.assign_stratified, inp.read(f"labels/{stratify_head(spec)}"),
                             inp.keys, spec.seed, assignment, dtype=i8)
    if spec.method == "ordered":
        if _item_rows(inp.ds):
            return da.map_blocks(_ordered_source_a, inp.read("meta/source"), assignment, inp.n,
                                 fr, drop_axis=1, dtype=i8)
        rows = da.arange(inp.n, chunks=inp.block_rows, dtype=np.int64)
        return da.map_blocks(splits.assign_ordered_rank, rows, inp.n, fr, dtype=i8)
    return da.map_blocks(splits.assign_random, inp.keys, fr, spec.seed, dtype=i8)


def _lookup(keys: Any, assignment: tuple[Any, Any]) -> np.ndarray:
    return splits.lookup(assignment[0], assignment[1], keys)


def _expand(assignment: tuple[Any, Any], key_runs: tuple[Any, Any]) -> np.ndarray:
    return splits.expand_runs(assignment[0], assignment[1], key_runs)


def code_blocks(inp: Inputs, spec: SplitSpec, assignment: Delayed | None,
                key_runs: Sequence[Any], labels: Sequence[Any] = ()
                ) -> tuple[list[Delayed], tuple[int, ...]]:
    """Per-block code tasks and block lengths; lookup methods reuse the first pass's key runs
    where they were kept, stratified ones the first pass's labels, so no block is read twice."""
    from dask import delayed

    if labels and is_stratified(spec) and not is_grouped(spec):
        keys = inp.keys
        blocks = [delayed(splits.assign_stratified)(lab, k, spec.seed, assignment)
                  for lab, k in zip(labels, inp.blocks(keys), strict=True)]
        return blocks, keys.chunks[0]
    key = lookup_key(spec)
    if key is None or not key_runs:
        codes = codes_graph(inp, spec, assignment)
        return inp.blocks(codes), codes.chunks[0]
    keys = inp.read(key)
    blocks = [delayed(_expand)(assignment, r) if r is not None
              else delayed(_lookup)(k, assignment)
              for r, k in zip(key_runs, inp.blocks(keys), strict=True)]
    return blocks, keys.chunks[0]


def _ordered_source_a(source: Any, assignment: tuple[Any, Any], n: int, fr: list[float]
                      ) -> np.ndarray:
    return _ordered_source(source, assignment[0], assignment[1], n, fr)


def split_codes(ds: StoreView, spec: SplitSpec) -> da.Array:
    """The codes of ``spec`` over ``ds`` as a lazy Dask array; nothing is read until computed.

    Examples
    --------
    >>> codes = split_codes(chunkstore.open("data/demo.zarr"), SplitSpec(method="group"))
    >>> np.bincount(codes.compute())  # doctest: +SKIP
    """
    from dask import delayed

    check_spec(ds, spec)
    inp = Inputs(ds, merged_groups(ds, spec))
    if spec.dedup and not is_grouped(spec):
        raise SplitError(f"split {spec.name!r}: dedup with method {spec.method!r} moves copies "
                         "after the codes are computed; use write_split (chunkstore split)")
    k = ds.heads[spec.by] if spec.by in ds.heads else 0
    table, _ = table_graph(inp, spec, spec.by if is_stratified(spec) else None)
    assignment = None if table is None else delayed(assignment_of)(spec, table, k)
    return codes_graph(inp, spec, assignment)
