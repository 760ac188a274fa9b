"""Appending from a streaming producer: stage the rows, then append them in order.

A python source with streaming placement (no ``count``, no ``counting_pass``) does not know
its row counts before it runs, so its rows cannot be planned after row N directly. They are
first written by the ordinary, crash-safe streaming ingest into a *staging store*,
``<store>/_chunkstore/appends/staging.zarr`` (same schema, chunking and compression; no
statistics), inside the target's journal, so it is never mistaken for user data and
``refuse_foreign`` accepts it. Once staged, the row count is known and the ordinary ordered
append reads the staging store as its one source item (:class:`StagedSource`): the last
partial chunk of the target is rewritten with its old rows first, whole new chunks follow, the
statistics and splits are extended, a version is committed. The staging store is deleted once
every append task is committed, before the append's commit. ``process()`` runs once per item;
the new rows are written twice (staging, then the store).

Resume: killed while staging, the rerun resumes the staging ingest (its own journal and
lock); killed after staging, the append state (``appends/current.json``, which records that it
is staged) resumes the ordered part as any append does.

A store built with streaming placement has ``meta/source``: the appended rows get it too --
the staged rows' own pairs when the source declares ``provenance: true`` (the store must have
been built that way), else ``(item, row)`` with the item ids continuing after the store's
``n_items`` (which the commit advances).

Rows of a store as a source item, here the staged rows, are read by :func:`stored_batch`; the
append's tasks read the target's tail with it too
(:class:`~chunkstore.ingest.append_task.StoreTail`), and repair turns rows it produced again
into a batch with :func:`batch_of`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from chunkstore.config import Config, StatsOptions
from chunkstore.core.plan import WriteTask
from chunkstore.core.schema import Schema
from chunkstore.errors import AppendError, StoreExistsError
from chunkstore.ingest.coordinator import ingest_store
from chunkstore.sources import Source
from chunkstore.sources.base import Batch
from chunkstore.store import journal, layout
from chunkstore.store.stats_io import node_array
from chunkstore.store.urls import open_group, store_path

STAGING = "staging.zarr"


def staging_path(store: str) -> str:
    """Where a streaming append stages its rows (inside the target's journal)."""
    return str(journal.appends_dir(store) / STAGING)


def streaming_sha256(config: Config, source: Any) -> str:
    """The digest of a streaming append: its source section and its item list (the row
    counts are not known before it runs)."""
    items = "\n".join(map(repr, source.items))
    d = {"source": config.to_dict()["source"], "streaming": True,
         "items_sha256": hashlib.sha256(items.encode()).hexdigest()}
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()


def check_provenance(config: Config, source: Source, attrs: dict[str, Any]) -> None:
    """AppendError unless the new rows can get the store's ``meta/source``: a source's own
    (item, row) pairs need a store built with them, and such a store needs them."""
    store = config.store
    own = source.has_source
    store_own = attrs.get("source_provenance") == "process"
    if own and not attrs.get("has_source"):
        raise AppendError(f"{config.file!r}: source.provenance is true but store {store!r} has "
                          "no meta/source (it was built with ordered placement); remove "
                          "provenance from the append's source")
    if attrs.get("has_source") and store_own != own:
        raise AppendError(
            f"store {store!r} holds {'the source' if store_own else 'chunkstore'}'s own "
            f"(item, row) pairs in meta/source, but the source in {config.file!r} "
            f"{'does not return' if store_own else 'returns'} its own (source.provenance "
            f"{own}); set source.provenance: {str(store_own).lower()} to append to it")


def staging_config(config: Config) -> Config:
    """The config of the staging store: the target's, without statistics or splits (the
    ordered append computes the new rows' statistics itself)."""
    return replace(config, store=staging_path(config.store), splits=(),
                   stats=StatsOptions(correlation=False, online=False))


def stage(config: Config, workers: int) -> int:
    """Run (or resume) the streaming ingest of the new rows into the staging store; returns
    its row count."""
    staged = staging_config(config)
    try:
        ingest_store(staged, workers=workers, progress=False)
    except StoreExistsError as e:
        raise AppendError(
            f"store {config.store!r} has a staged streaming append of another item list or "
            f"config ({staged.store!r}): rerun that append to finish it, or delete that "
            f"directory to drop it [{e}]") from e
    return int(layout.read_attrs(staged.store)["n_samples"])


def pairs_path(store: str, sha: str) -> Any:
    """Where a committed streaming append keeps its staged rows' (item, row) pairs, in
    store order: what ``repair`` needs to produce its rows again (16 bytes per row)."""
    return journal.appends_dir(store) / f"staged-{sha[:16]}.npz"


def save_pairs(store: str, sha: str) -> None:
    """Before the staging store goes: its rows' (item, row), unless they are the source's own
    provenance (which does not name the item; such an append cannot be repaired)."""
    staging = staging_path(store)
    if pairs_path(store, sha).exists() or not store_path(staging).exists():
        return  # saved before, or a rerun after the staging store was deleted
    if layout.read_attrs(staging).get("source_provenance"):
        return
    pairs = np.asarray(node_array(open_group(staging, mode="r"), layout.SOURCE)[...])
    journal.write_npz(pairs_path(store, sha), {"rows": len(pairs)},
                      {"pairs": pairs.astype(np.int64)})


class Replay(Source):
    """A committed streaming append's new rows produced again (for ``repair``): one item,
    row ``i`` = ``process(items[pairs[i, 0]])[pairs[i, 1]]``."""

    def __init__(self, inner: Any, pairs: np.ndarray, schema: Schema) -> None:
        super().__init__(None, schema)
        self.inner, self.pairs = inner, pairs

    def counts(self) -> list[int]:
        return [len(self.pairs)]

    @property
    def has_group(self) -> bool:
        return bool(self.inner.has_group)

    def describe(self, item: int) -> str:
        return "the staged rows of a streaming append (produced again)"

    def read(self, item: int, start: int, stop: int) -> Batch:
        pairs = self.pairs[start:stop]
        made = {int(k): self.inner.run(int(k)) for k in np.unique(pairs[:, 0])}
        heads = [h.name for h in self.schema.heads]

        def take(get: Any) -> np.ndarray:
            return np.stack([np.asarray(get(made[int(k)]))[r] for k, r in pairs])
        return Batch(take(lambda b: b.features),
                     {h: take(lambda b, h=h: b.labels[h]) for h in heads},
                     {h: take(lambda b, h=h: b.masks[h]) for h in heads},
                     take(lambda b: b.group) if self.has_group else None)


def drop_staging(store: str) -> None:
    """Delete the staging store (nothing if there is none)."""
    store_path(staging_path(store)).remove()


def staged_extra(attrs: dict[str, Any], staged_items: int) -> dict[str, Any]:
    """What the append state records for a staged append: the staging store is its source;
    for a store with ``meta/source``, how the new rows' pairs are made and the ``n_items``
    the commit sets."""
    extra: dict[str, Any] = {"staged": True}
    if attrs.get("has_source"):
        offset = int(attrs.get("n_items", 0))
        extra["item_offset"] = offset
        extra["attrs_after"] = {"n_items": offset + staged_items}
    return extra


def source_extra(attrs: dict[str, Any], counts: list[int]) -> dict[str, Any]:
    """The same for an ordered source appended to a store with ``meta/source``."""
    if not attrs.get("has_source"):
        return {}
    offset = int(attrs.get("n_items", 0))
    return {"item_offset": offset, "attrs_after": {"n_items": offset + len(counts)}}


def staged_items(store: str) -> int:
    return int(layout.read_attrs(staging_path(store))["n_items"])


def batch_of(rows: Mapping[str, NDArray[Any]], schema: Schema) -> Batch:
    """Rows keyed by their store layout paths (``features``, ``labels/<head>``,
    ``masks/<head>``, ``meta/group`` when present) as a source Batch; other paths, such as
    ``meta/row_hash``, are ignored."""
    heads = [h.name for h in schema.heads]
    return Batch(rows[layout.FEATURES], {h: rows[layout.label_path(h)] for h in heads},
                 {h: rows[layout.mask_path(h)] for h in heads}, rows.get(layout.GROUP))


def stored_batch(store: str, schema: Schema, rows: slice, has_group: bool) -> Batch:
    """Rows ``rows`` of store ``store``'s sample arrays as a source Batch (``meta/group`` only
    when ``has_group``), in the store's dtypes."""
    g = open_group(store, mode="r")
    paths = [p for p in layout.sample_arrays(schema, has_group) if p != layout.ROW_HASH]
    return batch_of({p: np.asarray(g[p][rows]) for p in paths}, schema)


class StagedSource(Source):
    """The staging store's rows as one source item (``read`` slices its sample arrays)."""

    def __init__(self, staging: str, schema: Schema, has_group: bool) -> None:
        super().__init__(None, schema)
        self.staging, self._has_group = staging, has_group
        self.n = int(layout.read_attrs(staging)["n_samples"])

    def counts(self) -> list[int]:
        return [self.n]

    @property
    def has_group(self) -> bool:
        return self._has_group

    def describe(self, item: int) -> str:
        return f"staged rows of a streaming append ({self.staging!r})"

    def read(self, item: int, start: int, stop: int) -> Batch:
        return stored_batch(self.staging, self.schema, slice(start, stop), self._has_group)


def source_rows(store: str, staging: str | None, task: WriteTask, item_offset: int,
                own: bool) -> np.ndarray:
    """``meta/source`` of a task's rows (:func:`task_pairs`): the store's own for its tail
    (read where it is: those rows do not move), the staged rows' pairs from the staging
    store."""
    def read(path: str) -> Callable[[int, int], np.ndarray]:
        return lambda a, b: np.asarray(node_array(open_group(path, mode="r"),
                                                  layout.SOURCE)[a:b])

    return task_pairs(task, item_offset, read(store),
                      None if staging is None else read(staging), own)


def task_pairs(task: WriteTask, item_offset: int, tail: Callable[[int, int], np.ndarray],
               staged: Callable[[int, int], np.ndarray] | None, own: bool = False
               ) -> np.ndarray:
    """``meta/source`` of an append task's rows, piece by piece: ``tail(a, b)`` for the
    store's rows ``[a, b)`` (item 0), ``staged(lo, hi)`` for a streaming append's staged rows
    (item ids offset by ``item_offset``, unless they are the source's ``own``), else ``(item,
    row)`` of an ordered source's items, continuing after the store's items."""
    out = []
    at = task.start
    for p in task.pieces:
        if p.item == 0:
            pairs = np.array(tail(at, at + p.rows), dtype=np.int64)
        elif staged is not None:
            pairs = np.array(staged(p.item_start, p.item_stop), dtype=np.int64)
            if not own:
                pairs[:, 0] += item_offset
        else:
            rows = np.arange(p.item_start, p.item_stop, dtype=np.int64)
            pairs = np.stack([np.full(len(rows), item_offset + p.item - 1), rows], axis=1)
        out.append(pairs)
        at += p.rows
    return np.concatenate(out) if out else np.zeros((0, 2), dtype=np.int64)
