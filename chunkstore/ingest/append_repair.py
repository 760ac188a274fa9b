"""Repair of appended rows: a bad chunk an append wrote is rewritten by that append's task.

Every committed append keeps its record ``_chunkstore/appends/append-<k>.json`` (plan, base,
rows before and after, config, source digest; see :func:`chunkstore.ingest.append.commit`). The
*last writer* of a chunk is the latest append whose rows ``[base, n_after)`` hold it, else the
original ingest. ``chunkstore repair`` splits the bad rows at the first append's ``base``
(:func:`split_bad_rows`): the ingest's tasks rewrite the rows before it (``plan.json``), and
:func:`rerun_appended` the rest, each bad chunk (or shard) by the task of its last writer.

The task is assembled again exactly as the append assembled it -- its tail rows (the old rows
of the chunk the append rewrote) first, then its new rows -- but the tail rows are produced
from the source of the writer before it (recursively), never read from the store: the chunk
holding them may be the bad one. Only the bad units are written, each whole, so nothing is
read-modified-written and a good chunk is never touched.

A store built with streaming placement works the same way: its ingest's rows are produced
again from the item runs of their chunks (:mod:`chunkstore.ingest.streaming_rows`), and
``meta/source`` of an append's rows is made again as the append made it (the tail's pairs as
their writer wrote them, then the new rows' ``(item, row)`` after the record's
``item_offset``, from the kept pairs of a streaming append). What cannot be produced again is
refused, before anything is written: an append of a python source with ``count``, a streaming
append whose pairs were not kept (the source's own provenance), a changed source.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from chunkstore.config import Config, load_config
from chunkstore.core.plan import Plan, WriteTask
from chunkstore.core.schema import Schema
from chunkstore.errors import IntegrityError
from chunkstore.ingest import append_streaming as staged
from chunkstore.ingest.append_check import source_sha256
from chunkstore.ingest.coordinator import is_streaming
from chunkstore.ingest.recovery import ITEM_ROWS
from chunkstore.ingest.streaming_rows import chunk_runs, ingest_end, runs_rows
from chunkstore.ingest.task import assemble
from chunkstore.sources import Source, open_source
from chunkstore.sources.base import Batch
from chunkstore.store import journal, layout
from chunkstore.store.urls import StorePath, open_group, store_path


def staged_message(store: str, k: int) -> str:
    return (f"append {k} of store {store!r} came from a streaming producer whose rows carry "
            "its own provenance (or its kept (item, row) pairs are gone): the order the "
            "workers placed them in cannot be reproduced, so repair cannot rewrite its chunks; "
            "rebuild the store (ingest --overwrite, then the appends), or restore the store's "
            "files from a copy")


def split_bad_rows(store: str, bad_rows: list[tuple[int, int]]
                   ) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """``(rows the ingest wrote last, rows an append wrote last)`` of chunk-aligned ranges."""
    recs = journal.append_records(store)
    if not recs:
        return list(bad_rows), []
    cut = int(recs[0]["base"])
    return ([(a, min(b, cut)) for a, b in bad_rows if a < cut],
            [(max(a, cut), b) for a, b in bad_rows if b > cut])


def _covering(plan: Plan, a: int, b: int, what: str) -> WriteTask:
    for t in plan.tasks:
        if t.start <= a and b <= t.stop:
            return t
    raise IntegrityError(f"no task of {what} holds rows [{a}, {b}); its plan no longer "
                         "matches the store: rebuild it with `chunkstore ingest --overwrite`")


class _Tail(Source):
    """An append's virtual items: item 0 its tail rows, produced by the writer before it."""

    def __init__(self, rebuild: Rebuild, k: int, inner: Source, schema: Schema) -> None:
        super().__init__(None, schema)
        self.rebuild, self.k, self.inner = rebuild, k, inner
        self.base = int(rebuild.recs[k - 1]["base"])

    def counts(self) -> list[int]:
        return [int(self.rebuild.recs[self.k - 1]["n_before"]) - self.base,
                *self.inner.counts()]

    @property
    def has_group(self) -> bool:
        return self.rebuild.has_group

    def describe(self, item: int) -> str:
        return (self.inner.describe(item - 1) if item else
                f"rows [{self.base}, {self.rebuild.recs[self.k - 1]['n_before']}) of store "
                f"{self.rebuild.store!r}, produced again from their source")

    def read(self, item: int, start: int, stop: int) -> Batch:
        if item > 0:
            return self.inner.read(item - 1, start, stop)
        a, b = self.base + start, self.base + stop
        rows = self.rebuild.rows(self.rebuild.writer_before(self.k, a, b), a, b)
        return staged.batch_of(rows, self.schema)


class Rebuild:
    """Rows of the store as each writer wrote them, produced again from the sources."""

    def __init__(self, config: Config) -> None:
        self.store, self.ingest_config = config.store, config
        self.recs = journal.append_records(config.store)
        plan = journal.read_plan(config.store)
        if plan is None:
            raise IntegrityError(f"store {config.store!r} has no plan.json (its ingest's "
                                 "plan): its chunks cannot be rewritten; rebuild the store")
        self.ingest_plan = Plan.from_dict(plan)
        attrs = layout.read_attrs(config.store)
        self.has_group = bool(attrs.get("has_group"))
        self.streaming = attrs.get("placement") == "streaming"  # the ingest's placement
        self.has_source = bool(attrs.get("has_source"))  # meta/source (streaming stores)
        self.own_source = attrs.get("source_provenance") == "process"
        self.chunk_rows = int(attrs["chunk_rows"])
        self._opened: dict[int, tuple[Config, Source]] = {}
        self._plans: dict[int, Plan] = {0: self.ingest_plan}
        self._rows: dict[tuple[int, int, int], dict[str, np.ndarray]] = {}

    def plan(self, k: int) -> Plan:
        """Writer ``k``'s plan (0: the ingest's), parsed once."""
        if k not in self._plans:
            self._plans[k] = Plan.from_dict(self.recs[k - 1]["plan"])
        return self._plans[k]

    def opened(self, k: int) -> tuple[Config, Source]:
        """Writer ``k``'s config and source (0: the ingest's), its digest checked."""
        if k not in self._opened:
            if k == 0:
                config = self.ingest_config
                if self.streaming and not is_streaming(config):
                    raise IntegrityError(
                        f"store {self.store!r} was written by streaming placement, but config "
                        f"{config.file!r} is not a streaming python source")
            else:
                rec = self.recs[k - 1]
                if rec.get("staged"):
                    self._opened[k] = self._replay(k, rec)
                    return self._opened[k]
                if rec["config"]["source"]["kind"] == "python":
                    raise IntegrityError(
                        f"append {k} of store {self.store!r} read a python source, whose "
                        "callables a record cannot hold: its chunks cannot be rewritten; "
                        "rebuild the store (ingest --overwrite, then the appends)")
                config = Config.from_dict(rec["config"], file=rec.get("file", "<append>"))
            source = open_source(config.source, config.schema)
            if k and source_sha256(config, source.counts()) != self.recs[k - 1]["source_sha256"]:
                raise IntegrityError(
                    f"the source of append {k} of store {self.store!r} ({config.file}) changed "
                    "since it was appended, so its chunks cannot be rewritten to what they "
                    "were; restore its items, or rebuild the store")
            self._opened[k] = (config, source)
        return self._opened[k]

    def _replay(self, k: int, rec: dict[str, Any]) -> tuple[Config, Source]:
        """A streaming append's rows produced again, placed by its kept (item, row) pairs."""
        path = staged.pairs_path(self.store, rec["source_sha256"])
        if not path.exists():
            raise IntegrityError(staged_message(self.store, k))
        file = str(rec.get("file", "<dict>"))
        if file.startswith("<") or not os.path.isfile(file):  # a record cannot hold the items
            raise IntegrityError(
                f"append {k} of store {self.store!r} ran a streaming producer from config "
                f"{file}; repair runs it again from that config file, which is not found: "
                "restore it (same items), or rebuild the store")
        config = load_config(file)
        source = open_source(config.source, config.schema)
        if staged.streaming_sha256(config, source) != rec["source_sha256"]:
            raise IntegrityError(
                f"the items of append {k} of store {self.store!r} ({config.file}) changed "
                "since it was appended, so its chunks cannot be rewritten to what they were; "
                "restore its items, or rebuild the store")
        pairs = journal.read_npz(path)[1]["pairs"]
        return config, staged.Replay(source, pairs, config.schema)

    def writer_before(self, k: int, a: int, b: int) -> int:
        """The last writer of rows ``[a, b)`` before append ``k`` (0: the ingest)."""
        for j in range(k - 1, 0, -1):
            rec = self.recs[j - 1]
            if int(rec["base"]) <= a and b <= int(rec["n_after"]):
                return j
        return 0

    def check(self, k: int, task: WriteTask) -> None:
        """Open the sources writer ``k``'s ``task`` needs: its own and, for an append's task
        holding the tail, those of the writers before it (IntegrityError, before anything is
        written, if one cannot be produced again)."""
        self.opened(k)
        tail = [p for p in task.pieces if k and p.item == 0 and p.rows]
        for p in tail:
            a, b = task.start, task.start + p.rows
            w = self.writer_before(k, a, b)
            if w:
                self.check(w, _covering(self.plan(w), a, b, f"append {w}"))
            else:
                self.opened(0)

    def task_rows(self, k: int, task: WriteTask) -> dict[str, np.ndarray]:
        config, source = self.opened(k)
        src = _Tail(self, k, source, config.schema) if k else source
        out = assemble(task, config, src, self.has_group)
        if k and self.has_source:
            out[layout.SOURCE] = self._sources(k, task, source)
        return out

    def _sources(self, k: int, task: WriteTask, source: Source) -> np.ndarray:
        """``meta/source`` of append ``k``'s ``task`` rows as the append wrote them, without
        reading the store: the tail's pairs as the writer before produced them, then the new
        rows' pairs (a streaming append's kept ones)."""
        def tail(a: int, b: int) -> np.ndarray:
            return self.rows(self.writer_before(k, a, b), a, b)[layout.SOURCE]

        kept = source.pairs if isinstance(source, staged.Replay) else None
        return staged.task_pairs(task, int(self.recs[k - 1].get("item_offset", 0)), tail,
                                 None if kept is None else lambda lo, hi: kept[lo:hi])

    def rows(self, k: int, a: int, b: int) -> dict[str, np.ndarray]:
        """Rows ``[a, b)`` (within one task) as writer ``k`` wrote them, store dtypes, with
        ``meta/source`` when the store has it; each range produced once."""
        if (k, a, b) not in self._rows:
            if k == 0 and self.streaming:
                self._rows[k, a, b] = self._streamed(a, b)
            else:
                task = _covering(self.plan(k), a, b, f"append {k}" if k else "the ingest")
                self._rows[k, a, b] = {name: v[a - task.start:b - task.start]
                                       for name, v in self.task_rows(k, task).items()}
        return self._rows[k, a, b]

    def _streamed(self, a: int, b: int) -> dict[str, np.ndarray]:
        """Rows ``[a, b)`` of a streaming ingest: the item runs of their chunks (from the
        chunks' records, else ``meta/source``) produced again, in the chunks' order."""
        config, source = self.opened(0)
        group = open_group(self.store, mode="r")
        r, end = self.chunk_rows, ingest_end(self.store)
        parts: list[dict[str, np.ndarray]] = []
        cache: dict[int, dict[str, Any]] = {}
        for c in range(a // r, -(-b // r)):
            runs, _ = chunk_runs(self.store, group, c, r, self.own_source, end)
            data = runs_rows(config, source, runs, cache) if len(runs) else {}
            lo, hi = max(a, c * r), min(b, (c + 1) * r)
            if len(data.get(layout.FEATURES, ())) < hi - c * r:
                raise IntegrityError(
                    f"chunk {c} of store {self.store!r}: its item runs hold fewer rows than "
                    f"rows [{lo}, {hi}) need, so the ingest's rows cannot be produced again; "
                    "rebuild the store (ingest --overwrite, then the appends)")
            parts.append({n: v[lo - c * r:hi - c * r] for n, v in data.items()
                          if n != ITEM_ROWS})
        return {n: np.concatenate([p[n] for p in parts]) for n in parts[0]}


def _unit(group: Any) -> int:
    """Rows of the largest file (shard, or chunk) of any sample array: an append's tasks are
    whole such units and every array's files nest in them, so writing whole units never
    reads a file back."""
    arrays = [group[name] for name in layout.stored_sample_arrays(group)]
    return max(int((a.shards or a.chunks)[0]) for a in arrays)


def _bad_units(bad_rows: list[tuple[int, int]], unit: int, n: int) -> list[tuple[int, int]]:
    """``bad_rows`` widened to whole units (the last one ends at row ``n``), sorted, once each."""
    return sorted({(a // unit * unit, min(n, -(-b // unit) * unit)) for a, b in bad_rows})


def _by_task(rebuild: Rebuild, units: list[tuple[int, int]]
             ) -> dict[tuple[int, int], tuple[WriteTask, list[tuple[int, int]]]]:
    """Each bad unit under the task of the append that wrote it last: ``(append, task id) ->
    (task, units)``; IntegrityError, before anything is written, for a unit no append wrote."""
    out: dict[tuple[int, int], tuple[WriteTask, list[tuple[int, int]]]] = {}
    for a, b in units:
        k = journal.last_append(rebuild.recs, a)
        if k == 0:
            raise IntegrityError(f"rows [{a}, {b}) of store {rebuild.store!r} were not written "
                                 "by any recorded append")
        task = _covering(rebuild.plan(k), a, b, f"append {k}")
        out.setdefault((k, task.task_id), (task, []))[1].append((a, b))
    return out


def _rewrite(group: Any, root: StorePath, task: WriteTask, data: dict[str, np.ndarray],
             units: list[tuple[int, int]]) -> None:
    """Write ``units`` of every sample array from ``data`` (the task's assembled rows)."""
    for a, b in units:
        for name, v in data.items():
            arr = group[name]
            r = int(arr.chunks[0])
            # the unit's files go first: a bad file is never read back (the edge unit's
            # write would read it)
            for c in range(a // r, -(-b // r)):
                (root / name / layout.chunk_key(arr, c)).unlink()
            arr[a:b] = v[a - task.start:b - task.start]


def rerun_appended(config: Config, bad_rows: list[tuple[int, int]]) -> list[str]:
    """Rewrite the chunk-aligned ``bad_rows`` that appends wrote last (see the module
    docstring); returns what was rewritten, for the repair summary. Call it under the store's
    lock, before the ingest's tasks are rerun (their partial write of the chunk an append
    rewrote reads it back)."""
    if not bad_rows:
        return []
    rebuild = Rebuild(config)
    group = open_group(config.store, mode="r+")
    n = int(layout.read_attrs(config.store)["n_samples"])
    by_task = _by_task(rebuild, _bad_units(bad_rows, _unit(group), n))
    for k, tid in sorted(by_task):  # every source opens before anything is written
        rebuild.check(k, by_task[k, tid][0])
    root = store_path(config.store)
    done = []
    for k, tid in sorted(by_task):
        task, units = by_task[k, tid]
        _rewrite(group, root, task, rebuild.task_rows(k, task), units)
        done.append(f"append {k} task {tid} (rows " + ", ".join(f"{a}-{b}" for a, b in units)
                    + ")")
    return done
