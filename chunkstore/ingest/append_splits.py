"""Extending every stored split over appended rows: old rows keep their codes.

New rows ``[n_before, n_after)`` get codes by the split's own rule, applied to the new rows:

- ``random`` (and plain ``kfold``): ``hash(seed, key)``, exactly the codes a full recompute
  gives (the key is the row index, or ``meta/source`` provenance);
- ``stratified``: per-class cut points from the new rows' own hash histogram, so the new rows
  are balanced by themselves and the union stays balanced;
- grouped methods: a group already in the store keeps its part (no group in two parts); new
  groups are laid out by the seeded rule over the new rows' group sizes (``stratified-group``:
  the greedy class balance over the new groups);
- ``ordered``: the new rows are cut at the fractions in their own order.

Reads only ``labels/<by>``, ``meta/group`` (``meta/source``) and split codes: no features.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import zarr
from numpy.typing import NDArray

from chunkstore.core import assign
from chunkstore.core.schema import Where
from chunkstore.core.splitspec import GROUPED, STRATIFIED, SplitSpec
from chunkstore.store import layout
from chunkstore.store.stats_io import node_array

LOOKUP_BLOCK = 1 << 20  # rows of old (group, code) pairs read at a time


def stored_specs(group: zarr.Group) -> dict[str, SplitSpec]:
    """``splits/<name>`` arrays of the store that carry a complete spec, by array name."""
    sub = group.get(layout.SPLITS)
    if not isinstance(sub, zarr.Group):
        return {}
    out = {}
    for name, arr in sorted(sub.arrays()):
        attrs = dict(arr.attrs)
        if attrs.get("complete") and isinstance(attrs.get("spec"), dict):
            spec: dict[str, Any] = dict(attrs["spec"])  # type: ignore[arg-type]
            if spec.get("method") != "kfold":
                spec = {**spec, "fractions": attrs.get("fractions", spec.get("fractions"))}
            out[name] = SplitSpec.from_dict(name, spec, Where(str(group.store), f"splits/{name}"))
    return out


def _keys(group: zarr.Group, a: int, b: int) -> NDArray[np.uint64]:
    if layout.SOURCE in group:
        return assign.source_keys(np.asarray(node_array(group, layout.SOURCE)[a:b]))
    return assign.as_keys(np.arange(a, b, dtype=np.int64))


def _old_group_codes(group: zarr.Group, codes: zarr.Array, n_before: int,
                     wanted: NDArray[np.int64]) -> tuple[NDArray[np.int64], NDArray[np.int8]]:
    """Sorted (group, code) of the groups in ``wanted`` that already have rows in the store."""
    keys: list[NDArray[np.int64]] = []
    vals: list[NDArray[np.int8]] = []
    for a in range(0, n_before, LOOKUP_BLOCK):
        b = min(a + LOOKUP_BLOCK, n_before)
        g = np.asarray(node_array(group, layout.GROUP)[a:b], dtype=np.int64)
        hit = np.isin(g, wanted)
        if hit.any():
            keys.append(g[hit])
            vals.append(np.asarray(codes[a:b])[hit])
    if not keys:
        return np.zeros(0, np.int64), np.zeros(0, np.int8)
    k, first = np.unique(np.concatenate(keys), return_index=True)
    return k, np.concatenate(vals)[first].astype(np.int8)


def new_codes(group: zarr.Group, spec: SplitSpec, codes: zarr.Array, n_before: int,
              n_after: int, heads: dict[str, int]) -> NDArray[np.int8]:
    """The codes of rows ``[n_before, n_after)`` under ``spec`` (see the module docstring)."""
    fr = [f for _, f in spec.fractions]
    grouped = spec.method in GROUPED or spec.group
    stratified = spec.method in STRATIFIED or (spec.method == "kfold" and spec.by is not None)
    labels = (np.asarray(node_array(group, layout.label_path(spec.by))[n_before:n_after], np.int64)
              if stratified and spec.by is not None else None)
    if grouped:
        return _grouped_codes(group, spec, codes, n_before, n_after, labels,
                              heads.get(spec.by or "", 0), fr)
    if spec.method == "ordered":
        m = n_after - n_before
        return assign.assign_ordered_rank(np.arange(m), m, fr)
    keys = _keys(group, n_before, n_after)
    if labels is not None and spec.by is not None:
        k = heads[spec.by]
        cuts = assign.class_cuts(assign.class_hash_hist(labels, keys, spec.seed, k), fr)
        return assign.assign_stratified(labels, keys, spec.seed, cuts)
    return assign.assign_random(keys, fr, spec.seed)


def _grouped_codes(group: zarr.Group, spec: SplitSpec, codes: zarr.Array, n_before: int,
                   n_after: int, labels: NDArray[np.int64] | None, n_classes: int,
                   fr: list[float]) -> NDArray[np.int8]:
    g = np.asarray(node_array(group, layout.GROUP)[n_before:n_after], dtype=np.int64)
    known_k, known_c = _old_group_codes(group, codes, n_before, np.unique(g))
    fresh = ~np.isin(g, known_k)
    if labels is not None and n_classes:
        table = assign.pair_counts(np.sort(g[fresh]), labels[fresh][np.argsort(g[fresh],
                                                                              kind="stable")])
        new_k, new_c = assign.assign_stratified_groups(table, n_classes, fr, spec.seed)
    else:
        new_k, sizes = np.unique(g[fresh], return_counts=True)
        new_c = assign.assign_groups(new_k, sizes.astype(np.int64), fr, spec.seed)
    all_k = np.concatenate([known_k, new_k])
    order = np.argsort(all_k, kind="stable")
    return assign.lookup(all_k[order], np.concatenate([known_c, new_c])[order].astype(np.int8), g)


def extend_splits(store_group: zarr.Group, n_before: int, n_after: int,
                  heads: dict[str, int]) -> dict[str, NDArray[np.int8]]:
    """Resize every stored split array to ``n_after`` rows and write the new rows' codes;
    returns them by array name. Idempotent: old rows are never rewritten, new codes are a pure
    function of the (unchanged) old rows and the new ones."""
    out: dict[str, NDArray[np.int8]] = {}
    for name, spec in stored_specs(store_group).items():
        arr = node_array(store_group, layout.split_path(name))
        codes = new_codes(store_group, spec, arr, n_before, n_after, heads)
        if arr.shape[0] != n_after:
            arr.resize((n_after,))
        arr[n_before:n_after] = codes
        names = list(spec.names)
        rows = np.bincount(np.asarray(arr[:n_after]).clip(0), minlength=len(names))
        attrs: dict[str, Any] = dict(arr.attrs)
        attrs.update({"n_samples": n_after, "rows": dict(zip(names, rows.tolist(),
                                                                strict=False)),
                      "appended_at": layout.now_iso()})
        arr.update_attributes(attrs)
        out[name] = codes
    return out
