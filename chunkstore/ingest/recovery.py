"""Streaming ingest on resume and at the end: what to keep, what to reclaim, how to compact.

An item is *complete* when its item record (``_chunkstore/items/<item>.json``, its row count)
exists and its rows in committed chunks add up to that count. :func:`recover` keeps the full
chunks holding only complete items, re-reads the rows of complete items from every other chunk
(they are re-packed as leftovers) and forgets the rest, which is redone. :func:`compact` then
fills the holes left behind by renaming the last chunks' files into them, crash-safely.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import numpy as np
import zarr

from chunkstore.config import Config
from chunkstore.ingest.worker_partials import consolidate, discard_merged
from chunkstore.runtime.messages import warn
from chunkstore.store import journal, layout
from chunkstore.store.stats_io import node_array
from chunkstore.store.urls import StorePath, open_group, store_path

ITEMS = "items"  # journal sub-directory of item records
# Write buffers carry each row's (item, row within item) under this key, beside the arrays: it
# is what chunk records' runs are made of. It is written to no array: ``meta/source`` holds the
# same pairs, or the source's own provenance (python source ``provenance: true``).
ITEM_ROWS = "_item_rows"


def stream_buffers(config: Config, rows: int, has_group: bool) -> dict[str, np.ndarray]:
    """Empty write buffers of every sample array (``meta/source`` included) and the rows'
    (item, row) pairs."""
    out = layout.sample_buffers(config.schema, rows, has_group, has_source=True)
    out[ITEM_ROWS] = np.empty((rows, 2), dtype=np.int64)
    return out


def item_rows_of(runs: np.ndarray) -> np.ndarray:
    """(rows, 2) (item, row within item) of a chunk, from its record's (item, start, stop)
    runs (the inverse of :func:`chunkstore.ingest.streaming.runs_of`)."""
    runs = np.asarray(runs, dtype=np.int64).reshape(-1, 3)
    lengths = runs[:, 2] - runs[:, 1]
    before = np.cumsum(lengths) - lengths  # chunk row of each run's first row
    rows = np.arange(int(lengths.sum()), dtype=np.int64) + np.repeat(runs[:, 1] - before,
                                                                      lengths)
    return np.stack([np.repeat(runs[:, 0], lengths), rows], axis=1)


def chunk_rows_of(group: zarr.Group) -> int:
    """The store's row chunking, from its ``chunkstore`` attributes."""
    attrs: Any = group.attrs[layout.ATTR_KEY]
    return int(attrs["chunk_rows"])


def item_record(store: str, item: int) -> StorePath:
    """Where the record of ``item`` (its row count) lives."""
    return journal.journal_dir(store) / ITEMS / f"{item:09d}.json"


def item_counts(store: str) -> dict[int, int]:
    """Row count of every item whose record exists; an undecodable item record is deleted
    with a warning (the item is then produced again)."""
    d = journal.journal_dir(store) / ITEMS
    out = {}
    for p in d.iterdir():
        if not p.name.endswith(".json") or p.name.startswith("."):
            continue
        try:
            out[int(p.stem)] = int(json.loads(p.read_text())["rows"])
        except (ValueError, KeyError, TypeError) as e:
            warn(f"item record {str(p)!r} does not decode ({type(e).__name__}: {str(e)[:100]});"
                 " it was deleted and the item will be produced again")
            p.unlink()
    return out


def _chunk_records(store: str) -> dict[int, tuple[dict[str, Any], dict[str, np.ndarray]]]:
    """Committed chunk records; of a move that crashed after its new record, the old one goes.
    Records that do not decode are set aside first (their chunks are redone)."""
    journal.set_aside_bad_records(store)
    records = {c: journal.read_record(store, c) for c in sorted(journal.completed_tasks(store))}
    for meta, _ in list(records.values()):
        src = meta.get("moved_from", -1)
        if src >= 0 and src in records:
            journal.record_path(store, src).unlink()
            del records[src]
    return records


def recover(store: str, config: Config, has_group: bool
            ) -> tuple[list[int], dict[str, np.ndarray], set[int]]:
    """Resume analysis: (kept chunk indices, leftover rows re-read from reclaimed chunks,
    complete items). Reclaimed chunk records and incomplete item records are deleted.

    A reclaimed chunk's rows are told apart by its record's item runs, not by ``meta/source``
    (which may hold the source's own provenance)."""
    records = _chunk_records(store)
    counts = item_counts(store)
    committed: Counter[int] = Counter()
    for _, arrays in records.values():
        for item, a, b in arrays["runs"]:
            committed[int(item)] += int(b - a)
    complete = {k for k, n in counts.items() if committed[k] == n}
    group = open_group(store, mode="r")
    r = chunk_rows_of(group)
    names = layout.sample_arrays(config.schema, has_group, has_source=True)
    parts: list[dict[str, np.ndarray]] = []
    kept, reclaimed = [], []
    for c, (meta, arrays) in records.items():
        rows = meta["stop"] - meta["start"]
        # A partial chunk (leftovers packed before a crash) is re-packed too: kept chunks are
        # full, so that compaction leaves no fill rows behind.
        if rows == r and all(int(item) in complete for item in arrays["runs"][:, 0]):
            kept.append(c)
            continue
        data = {name: np.asarray(node_array(group, name)[c * r:c * r + rows]) for name in names}
        data[ITEM_ROWS] = item_rows_of(arrays["runs"])
        keep = np.isin(data[ITEM_ROWS][:, 0], list(complete))
        parts.append({k: v[keep] for k, v in data.items()})
        reclaimed.append(c)
    # Statistics first (they must cover exactly the kept chunks before any record goes), then
    # the records of reclaimed chunks and items: a crash anywhere here redoes the same work.
    discard_merged(store)
    consolidate(store, group, config, r, dict.fromkeys(kept, r))
    for c in reclaimed:
        journal.record_path(store, c).unlink()
    for k in set(counts) - complete:
        item_record(store, k).unlink()
    return kept, concat_rows(parts, config, has_group), complete


def concat_rows(parts: list[dict[str, np.ndarray]], config: Config, has_group: bool
                ) -> dict[str, np.ndarray]:
    """The rows of ``parts`` one after the other (empty arrays of every kind when none)."""
    parts = [p for p in parts if len(p[ITEM_ROWS])]
    if not parts:
        return stream_buffers(config, 0, has_group)
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def chunk_files(store: str, group: zarr.Group, chunk: int) -> list[StorePath]:
    """The files of chunk ``chunk`` in every sample array."""
    root = store_path(store)
    return [root / name / layout.chunk_key(node_array(group, name), chunk)
            for name in layout.stored_sample_arrays(group)]


def move_chunk(store: str, group: zarr.Group, src: int, dst: int) -> None:
    """Fill hole ``dst`` with chunk ``src`` by renaming files, crash-safely.

    Hard links (copies on object storage) first (the record of ``src`` still owns the data),
    then the record of ``dst`` (marked ``moved_from``, so a crash before the old record is
    deleted is resolved on resume), then the old record and files go.
    """
    for a, b in zip(chunk_files(store, group, src), chunk_files(store, group, dst), strict=True):
        if a.exists():
            a.copy_to(b)
        else:  # an all-fill chunk zarr did not write
            b.unlink(missing_ok=True)
    meta, arrays = journal.read_record(store, src)
    r = meta["stop"] - meta["start"]
    chunk_rows = chunk_rows_of(group)
    journal.write_record(store, dst, {**meta, "task_id": dst, "start": dst * chunk_rows,
                                      "stop": dst * chunk_rows + r, "moved_from": src}, arrays)
    journal.record_path(store, src).unlink()
    for a in chunk_files(store, group, src):
        a.unlink(missing_ok=True)


def compact(store: str, group: zarr.Group, kept: list[int]) -> int:
    """Move the highest chunks into the holes below them; return the number of chunks."""
    kept = sorted(kept)
    n = len(kept)
    holes = sorted(set(range(n)) - set(kept))
    movers = [c for c in reversed(kept) if c >= n]
    for hole, src in zip(holes, movers, strict=True):
        move_chunk(store, group, src, hole)
    return n
