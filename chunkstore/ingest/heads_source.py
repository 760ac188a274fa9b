"""A new head's labels and masks read from a source config whose items line up with the store.

``chunkstore add-head STORE NAME --config head.yaml``: the config's ``schema.heads`` declares
the head (its classes and dtypes) and its ``source`` yields the head's ``labels``/``masks`` per
item (an npz source reads ``labels_<name>``/``masks_<name>``; features are read and ignored).
The items must line up with the store's rows:

- a store with ``meta/source`` (item, row within item) places row ``r`` of item ``k`` wherever
  ``meta/source`` says it went (streaming stores record their own order);
- otherwise the rows are the store's items laid end to end -- the ingest's items (its
  ``plan.json``) then each append's (its kept record) -- so the source must hold, in order,
  items of exactly those row counts (items without rows are skipped on both sides).

A count or order mismatch is an :class:`~chunkstore.errors.AppendError` naming the first item
that differs. Items are read one at a time: memory is the head's (N,) labels and (N, K) masks.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from numpy.typing import NDArray

from chunkstore.config import Config
from chunkstore.core.schema import HeadSpec
from chunkstore.errors import AppendError
from chunkstore.ingest.resolve import resolve_config
from chunkstore.sources import Source, open_source
from chunkstore.store import journal, layout
from chunkstore.store.urls import open_group


def _piece_counts(tasks: list[dict[str, Any]], skip_tail: bool) -> list[int]:
    """Nonzero row counts of a plan's items in item order (item 0 of an append is the store's
    own tail, not a source item)."""
    rows: dict[int, int] = {}
    for t in tasks:
        for item, start, stop in t["pieces"]:
            if not (skip_tail and item == 0):
                rows[item] = rows.get(item, 0) + stop - start
    return [rows[i] for i in sorted(rows) if rows[i]]


def store_item_counts(store: str) -> list[int]:
    """The row counts of the items whose rows the store holds, in row order (no empties)."""
    plan = journal.read_plan(store)
    if plan is None:
        raise AppendError(f"store {store!r} has no plan.json (an ordered ingest's plan), so "
                          "which rows came from which item is unknown; pass the labels as an "
                          "array of its rows instead")
    out = _piece_counts(plan["tasks"], skip_tail=False)
    for rec in journal.append_records(store):
        out += _piece_counts(rec["plan"]["tasks"], skip_tail=True)
    return out


def _item_rows(store: str, group: Any, n: int) -> NDArray[np.int64]:
    """(n, 2) (item, row within item) of every row of a streaming store: ``meta/source``, or,
    when it holds the python source's own provenance (attrs ``source_provenance``), the item
    runs of the chunk records (kept after the ingest)."""
    from chunkstore.ingest.recovery import item_rows_of

    attrs = layout.read_attrs(store)
    if not attrs.get("source_provenance"):
        return np.asarray(group[layout.SOURCE][...], dtype=np.int64)
    r = int(attrs["chunk_rows"])
    out = np.full((n, 2), -1, dtype=np.int64)
    for c in range(-(-n // r)):
        try:
            _, arrays = journal.read_record(store, c)
        except Exception as e:
            raise AppendError(f"store {store!r}: the journal record of chunk {c} is missing or "
                              "does not decode, and meta/source holds the source's own "
                              "provenance, so its rows' items are unknown; run `chunkstore "
                              "repair` or rebuild the store") from e
        pairs = item_rows_of(arrays["runs"])
        out[c * r:c * r + len(pairs)] = pairs
    return out


def _head(config: Config, name: str, classes: int | None) -> HeadSpec:
    heads = {h.name: h for h in config.schema.heads}
    if name not in heads:
        raise AppendError(f"config {config.file!r} declares no head {name!r} (its heads: "
                          f"{sorted(heads)}); add it under schema.heads with its classes")
    head = heads[name]
    if classes is not None and classes != head.classes:
        raise AppendError(f"head {name!r} has {head.classes} classes in config "
                          f"{config.file!r} but {classes} were given")
    return head


def _check_counts(source: Source, config: Config, want: list[int]) -> list[int]:
    """The source's nonempty items, each with the count the store expects; else the error."""
    counts = source.counts()
    items = [k for k, c in enumerate(counts) if c]
    for pos, k in enumerate(items):
        if pos >= len(want):
            raise AppendError(f"config {config.file!r}: item {k} ({source.describe(k)}) is "
                              f"beyond the store's {len(want)} items with rows; its items must "
                              "line up with the store's rows")
        if counts[k] != want[pos]:
            raise AppendError(f"config {config.file!r}: item {k} ({source.describe(k)}) has "
                              f"{counts[k]:,} rows, but the store's item at that place has "
                              f"{want[pos]:,}; the items must be the store's, in its order")
    if len(items) < len(want):
        raise AppendError(f"config {config.file!r} holds {len(items)} items with rows; the "
                          f"store holds {len(want)}: the items must line up with its rows")
    return items


def head_arrays(store: str, name: str, config: Config | str | os.PathLike[str],
                classes: int | None = None) -> tuple[HeadSpec, NDArray[Any], NDArray[Any]]:
    """``(head, labels (N,), masks (N, K))`` of head ``name`` read from ``config``'s source
    (see the module docstring).

    Raises
    ------
    AppendError
        The config has no such head, or its items do not line up with the store's rows
        (the first differing item is named).
    """
    config = resolve_config(config, None, None, None)
    head = _head(config, name, classes)
    source = open_source(config.source, config.schema)
    n = int(layout.read_attrs(store)["n_samples"])
    labels = np.zeros(n, np.int64)  # checked against [0, classes) before the cast
    masks = np.zeros((n, head.classes), head.mask_dtype)
    group = open_group(store, mode="r")
    if layout.SOURCE in group:
        where = _item_rows(store, group, n)
        placed = where[where[:, 0] >= 0, 0]  # (rows stay indexed by store row below)
        want = [int(c) for c in np.bincount(placed, minlength=len(source.counts()))]
        items = _check_counts(source, config, [c for c in want if c])
        for k in items:
            b = source.read(k, 0, want[k])
            rows = np.flatnonzero(where[:, 0] == k)
            at = rows[np.argsort(where[rows, 1], kind="stable")]
            labels[at], masks[at] = b.labels[name], b.masks[name]
        return head, labels, masks
    counts = source.counts()
    row = 0
    for k in _check_counts(source, config, store_item_counts(store)):
        b = source.read(k, 0, counts[k])
        labels[row:row + counts[k]], masks[row:row + counts[k]] = b.labels[name], b.masks[name]
        row += counts[k]
    return head, labels, masks
