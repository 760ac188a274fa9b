"""Who wrote which rows, which rows are committed, and whether the journal still decodes.

An ordered store's ``_chunkstore/plan.json`` maps every row range to its task (and the task to
its source items); rows added by appends are mapped by each append's kept record
(``_chunkstore/appends/append-<k>.json``: its plan, from the chunk holding its first row on,
and its source); a streaming store's rows carry their items in ``meta/source``, and each
committed chunk's record lists the item runs it holds. Before ingest finishes only committed
rows are expected to exist: the completed tasks' rows (ordered), the chunks with a record
(streaming).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import zarr

from chunkstore.integrity.report import Problem
from chunkstore.integrity.scan import Unit, unit_rows, units_of
from chunkstore.store import journal, layout
from chunkstore.store.stats_io import node_array

MAX_LISTED = 8


def _listed(values: list[int]) -> str:
    shown = ", ".join(map(str, values[:MAX_LISTED]))
    return shown + (f", ... ({len(values)} in all)" if len(values) > MAX_LISTED else "")


def journal_problems(store: str) -> list[Problem]:
    """Journal records that do not decode (each is set aside and its task rerun on resume)."""
    out = []
    for task in sorted(journal.completed_tasks(store)):
        try:
            journal.read_record(store, task)
        except Exception as e:  # zipfile, JSON, numpy: any record that does not decode
            path = journal.record_path(store, task)
            out.append(Problem("journal", str(path), f"record of task {task} does not "
                               f"decode ({type(e).__name__}: {str(e)[:200]}); a rerun of "
                               "the ingest (or repair) sets it aside and reruns the task"))
    return out


class Writers:
    """The committed rows of a store and the writer of any row range."""

    def __init__(self, store: str, group: zarr.Group, attrs: Mapping[str, Any]) -> None:
        self.store, self.group = store, group
        self.placement = str(attrs.get("placement", "ordered"))
        self.complete = attrs["status"] == layout.COMPLETE
        self.chunk_rows = int(attrs["chunk_rows"])
        jdir = journal.journal_dir(store)
        self.plan: dict[str, Any] = journal.read_plan(store) or {}
        self.done = journal.completed_tasks(store) if (jdir / journal.TASKS).exists() else set()
        self.ranges = self._committed(int(attrs["n_samples"]))
        self.n_rows = int(attrs["n_samples"]) if self.complete else max(
            (b for _, b in self.ranges), default=0)
        stats = group.get("stats/all")
        self.has_stats = isinstance(stats, zarr.Group) and "count" in stats
        self.appends = journal.append_records(store)

    def _committed(self, n: int) -> list[tuple[int, int]]:
        if self.complete:
            return [(0, n)]
        if self.placement == "streaming":
            out = []
            for c in sorted(self.done):
                try:
                    meta, _ = journal.read_record(self.store, c)
                    out.append((int(meta["start"]), int(meta["stop"])))
                except Exception:  # an undecodable record: reported by journal_problems
                    continue
            return out
        return [(t["start"], t["stop"]) for t in self.plan.get("tasks", [])
                if t["task_id"] in self.done]

    def is_committed(self, start: int, stop: int) -> bool:
        return any(a <= start and stop <= b for a, b in self.ranges)

    def of(self, start: int, stop: int) -> str:
        """The task(s) or source items that wrote rows ``[start, stop)``."""
        k = journal.last_append(self.appends, start)
        if self.placement == "streaming" and not k:
            return self._items(start, stop)
        plan = self.appends[k - 1]["plan"] if k else self.plan
        tasks = [t for t in plan.get("tasks", []) if t["start"] < stop and start < t["stop"]]
        if k:  # the append's item 0 is the store's own tail; its source items are 1..
            return "; ".join(
                f"append {k} task {t['task_id']} (its source items "
                f"{_listed(sorted({p[0] - 1 for p in t['pieces'] if p[0] > 0}))})"
                for t in tasks[:MAX_LISTED]) or f"append {k}"
        parts = []
        for t in tasks[:MAX_LISTED]:
            items = sorted({p[0] for p in t["pieces"]})
            parts.append(f"task {t['task_id']} (source items {_listed(items)})")
        return "; ".join(parts) or "no task of the plan (rows beyond it)"

    def _items(self, start: int, stop: int) -> str:
        items_set: set[int] = set()  # the records' runs: exactly what chunkstore wrote
        for c in range(start // self.chunk_rows, -(-stop // self.chunk_rows)):
            try:
                _, arrays = journal.read_record(self.store, c)
                items_set.update(int(i) for i in arrays["runs"][:, 0])
            except Exception:  # no record for this chunk: meta/source below
                continue
        if items_set:
            return f"source items {_listed(sorted(items_set))}"
        try:  # records gone: meta/source is (item, row) unless the source supplied its own
            src = np.asarray(node_array(self.group, layout.SOURCE)[start:stop, 0])
            items = sorted(int(i) for i in np.unique(src) if i >= 0)
            if items:
                return f"source items {_listed(items)} (from meta/source)"
        except Exception:  # meta/source itself is bad
            pass
        return "unknown items"

    def notes(self) -> list[str]:
        out = []
        if not self.has_stats and self.complete:
            out.append("no stats/all counts (stats.online off): missing all-fill chunks of "
                       "features and masks cannot be told from lost ones")
        return out

    def incomplete_detail(self) -> str:
        rows = sum(b - a for a, b in self.ranges)
        return (f"the ingest has not finished: {rows:,} committed rows were checked "
                f"({len(self.ranges)} {'chunks' if self.placement == 'streaming' else 'tasks'}"
                "); rerun the ingest to finish the store")


def committed_units(array: zarr.Array, name: str, writers: Writers) -> list[Unit]:
    """Units of ``array`` that hold only committed rows (all of them once complete)."""
    if writers.complete:
        return units_of(array, name, writers.n_rows)
    r = unit_rows(array)
    indices = sorted({i for a, b in writers.ranges for i in range(a // r, -(-b // r))})
    return [u for u in units_of(array, name, writers.n_rows, indices)
            if writers.is_committed(u.start, u.stop)]
