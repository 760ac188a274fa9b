"""What state a store is in, for ``chunkstore info``: the rows and tasks an unfinished ingest
has not written, and the raw and stored bytes of each top-level node."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import zarr

from chunkstore.store import layout
from chunkstore.store.journal import completed_tasks, journal_dir, missing_rows, read_plan
from chunkstore.store.urls import store_path

# Top-level nodes of format version 1, listed rather than discovered: listing the group would
# also meet the journal directory, which is not a Zarr node.
NODES = ("features", "labels", "masks", "meta", "splits", "stats")


@dataclass(frozen=True)
class Missing:
    """Rows and tasks an incomplete store has not written yet (empty when complete)."""

    rows: int = 0
    ranges: tuple[tuple[int, int], ...] = ()
    tasks: tuple[int, ...] = ()
    tasks_total: int = 0
    locked: bool = False  # an ingest lock file is present (live or stale)
    streaming_chunks: int | None = None  # unfinished streaming ingest: chunks committed



def missing_of(path: str, status: str, placement: str | None = None) -> Missing:
    locked = (journal_dir(path) / "lock").exists()
    if status == layout.COMPLETE:
        return Missing(locked=locked)
    if placement == "streaming":  # rows are placed at the end: only the chunks are known
        return Missing(locked=locked, streaming_chunks=len(completed_tasks(path)))
    ranges = tuple(missing_rows(path))
    plan = read_plan(path)
    tasks: list[int] = []
    if plan is not None:
        done = completed_tasks(path)
        tasks = [int(t["task_id"]) for t in plan["tasks"]]
        missing_tasks = tuple(t for t in tasks if t not in done)
    else:
        missing_tasks = ()
    return Missing(sum(b - a for a, b in ranges), ranges, missing_tasks, len(tasks), locked)


def _arrays(group: zarr.Group) -> list[zarr.Array]:
    out: list[zarr.Array] = []
    for _, node in group.members(max_depth=None):
        if isinstance(node, zarr.Array):
            out.append(node)
    return out


def bytes_by_node(path: str, group: zarr.Group, n_rows: int) -> dict[str, tuple[int, int]]:
    """Uncompressed bytes (shape x itemsize; sample arrays counted to ``n_rows`` rows, since an
    unfinished streaming store's are preallocated far beyond them) and bytes on storage of
    each top-level node."""
    root = store_path(path)
    out = {}
    for name in NODES:
        if name not in group:
            continue
        node = group[name]
        arrays = [node] if isinstance(node, zarr.Array) else _arrays(node)
        raw = sum(int(a.nbytes) if name == "stats" else _row_bytes(a, n_rows) for a in arrays)
        out[name] = (raw, (root / name).du())
    return out


def _row_bytes(a: zarr.Array, n_rows: int) -> int:
    rows = min(int(a.shape[0]), n_rows) if a.ndim else 1
    return rows * int(np.prod(a.shape[1:], dtype=np.int64)) * a.dtype.itemsize
