"""The ingest journal under ``<store>/_chunkstore/``: plain files, not Zarr nodes.

- ``lock``: one ingest per store. Created atomically and only if absent (a hard link of a fully
  written temp file locally; a conditional PUT on object storage), so it is never seen
  half-written; a lock left by a dead process on this host is detected and removed, one held by
  a live process is obeyed.
- ``tasks/<id>.npz``: a task's completion record with its partial statistics, written
  atomically (temp file + rename locally, one PUT on object storage) only after all of the
  task's chunks are written.
- ``plan.json`` and ``config.json``: the plan and config the store was created with.
- ``workers/<loop>.npz``: a streaming ingest's running partial statistics, one file per worker
  loop (its chunk records hold none), see :mod:`chunkstore.ingest.worker_partials`.
- ``aside/``: records that did not decode, moved out of ``tasks/`` so their tasks rerun
  (:func:`set_aside_bad_records`); kept for inspection, never read again.

After finalize, :func:`compact_records` drops the partial statistics from every record and the
``workers/`` files (they are merged into ``stats/all``), keeping each record's metadata and a
streaming chunk's item runs, so the journal stays a small fraction of the data.

Paths are :class:`~chunkstore.store.urls.StorePath` objects, so the store may be a local
directory or an fsspec URL (see :mod:`chunkstore.store.urls`); functions taking a path also accept
a plain ``str`` or ``pathlib.Path``.
"""

from __future__ import annotations

import io
import json
import os
import socket
import time
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import psutil
from numpy.typing import NDArray

from chunkstore.errors import StoreExistsError, StoreLockedError
from chunkstore.runtime.messages import warn
from chunkstore.store.layout import JOURNAL_DIR
from chunkstore.store.urls import StorePath, store_path

TASKS = "tasks"
PLAN = "plan.json"  # the ordered ingest's tasks
APPENDS = "appends"  # the append in progress and each committed append's record
APPEND_RECORD = "append-"
ASIDE = "aside"
WORKERS = "workers"  # a streaming ingest's running partial statistics, one file per loop
MERGED = "merged.npz"  # every record's partial statistics merged, kept when they are compacted
KEPT_AFTER_FINALIZE = ("runs",)  # record arrays repair still needs (a streaming chunk's items)
PathLike = StorePath | str | os.PathLike[str]


JOURNAL_NAMES = ("lock", "config.json", PLAN, "summary.json", TASKS,
                 ASIDE, "items", MERGED, WORKERS,  # what chunkstore writes in _chunkstore/
                 APPENDS, "versions", "heads")  # (growing a store: ingest/append, heads)


def is_ours(entry: StorePath) -> bool:
    """Whether a ``_chunkstore/`` entry is one chunkstore writes (temp files and pause marks
    of a killed run included)."""
    name = entry.name
    return (name in JOURNAL_NAMES or name.startswith("paused-")
            or (name.startswith(".") and name.endswith(".partial")))


def refuse_foreign(store: str) -> None:
    """StoreExistsError unless everything in ``_chunkstore/`` is ours and no link leads out."""
    jdir = journal_dir(store)
    if jdir.local and os.path.islink(str(jdir)):
        raise StoreExistsError(
            f"{str(jdir)!r} is a symbolic link (to {os.readlink(str(jdir))!r}); chunkstore never "
            "follows a link out of a store, so it is left untouched: remove the link or choose "
            "another store path")
    foreign = [e.name for e in jdir.iterdir() if not is_ours(e)]
    if foreign:
        raise StoreExistsError(
            f"{str(jdir)!r} holds files chunkstore did not write ({shown_names(foreign)}), so "
            f"{store!r} is not treated as a store and nothing is deleted; move them away or "
            "choose another store path")


def shown_names(names: list[str], limit: int = 5) -> str:
    text = ", ".join(repr(n[:80]) for n in names[:limit])
    return text + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def journal_dir(store: str) -> StorePath:
    return store_path(store) / JOURNAL_DIR




def appends_dir(store: str) -> StorePath:
    return journal_dir(store) / APPENDS


def append_record_name(k: int) -> str:
    """The kept record of the ``k``-th append (1-based): its state (plan, base, rows, config,
    source digest) and version; read by ``repair``, ``verify`` and ``add-head``."""
    return f"{APPEND_RECORD}{k:06d}.json"


def read_plan(store: str) -> dict[str, Any] | None:
    """The ordered ingest's plan (``plan.json``: its tasks and their item pieces), or None."""
    path = journal_dir(store) / PLAN
    return read_json(path) if path.exists() else None


def append_records(store: str) -> list[dict[str, Any]]:
    """The kept records of the store's committed appends, oldest first."""
    adir = appends_dir(store)
    if not adir.exists():
        return []
    names = sorted(p.name for p in adir.iterdir()
                   if p.name.startswith(APPEND_RECORD) and p.name.endswith(".json"))
    return [read_json(adir / n) for n in names]


def last_append(records: list[dict[str, Any]], row: int) -> int:
    """The append (1-based) that last wrote ``row`` (the chunk holding it); 0: the ingest."""
    return max((k for k, r in enumerate(records, 1)
                if int(r["base"]) <= row < int(r["n_after"])), default=0)


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the whole new one."""
    store_path(path).write_atomic(data)


def write_json(path: PathLike, obj: Any) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=1, sort_keys=True).encode())


def read_json(path: PathLike) -> Any:
    return json.loads(store_path(path).read_text())


def record_path(store: str, task_id: int) -> StorePath:
    return journal_dir(store) / TASKS / f"{task_id:06d}.npz"


def write_record(store: str, task_id: int, meta: Mapping[str, Any],
                 arrays: Mapping[str, NDArray[Any]]) -> None:
    """Commit a task: its metadata (JSON) and partial statistics (arrays), atomically."""
    write_npz(record_path(store, task_id), meta, arrays)


def write_npz(path: PathLike, meta: Mapping[str, Any], arrays: Mapping[str, NDArray[Any]]
              ) -> None:
    """JSON metadata plus arrays in one ``.npz``, written atomically (never pickled)."""
    buf = io.BytesIO()
    payload: dict[str, Any] = {"_meta": np.array(json.dumps(dict(meta), sort_keys=True)),
                               **arrays}
    np.savez(buf, **payload)  # a plain dict: mypy reads **arrays as savez's keyword flags
    atomic_write_bytes(path, buf.getvalue())


def read_npz(path: PathLike) -> tuple[dict[str, Any], dict[str, NDArray[Any]]]:
    with np.load(io.BytesIO(store_path(path).read_bytes()), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if k != "_meta"}
        meta = json.loads(str(z["_meta"]))
    return meta, arrays


def completed_tasks(store: str) -> set[int]:
    """Ids of tasks whose completion record exists."""
    return {int(p.stem) for p in (journal_dir(store) / TASKS).iterdir()
            if p.name.endswith(".npz") and not p.name.startswith(".")}


def read_record(store: str, task_id: int) -> tuple[dict[str, Any], dict[str, NDArray[Any]]]:
    return read_npz(record_path(store, task_id))


def iter_records(store: str, task_ids: list[int]
                 ) -> Iterator[tuple[dict[str, Any], dict[str, NDArray[Any]]]]:
    """Records in the given order, one in memory at a time."""
    for t in task_ids:
        yield read_record(store, t)


def _process_alive(pid: int, started: float) -> bool:
    try:
        proc = psutil.Process(pid)
        return abs(proc.create_time() - started) < 2.0 and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class StoreLock:
    """``with StoreLock(store):`` — one ingest per store, stale locks of dead processes removed."""

    def __init__(self, store: str) -> None:
        self.path = journal_dir(store) / "lock"
        self.held = False

    def _holder(self) -> dict[str, Any]:
        try:
            info: dict[str, Any] = read_json(self.path)
            return info
        except (OSError, ValueError):
            return {}

    def acquire(self) -> None:
        self.path.parent.mkdir()
        me = psutil.Process()
        info = {"pid": me.pid, "host": socket.gethostname(), "process_started": me.create_time(),
                "locked_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        for _ in range(2):
            if self.path.create(json.dumps(info).encode()):  # atomic create-if-absent
                self.held = True
                return
            holder = self._holder()
            if holder.get("host") == info["host"] and not _process_alive(
                    int(holder.get("pid", -1)), float(holder.get("process_started", 0))):
                warn(f"removing stale lock {str(self.path)!r} left by dead process "
                    f"{holder.get('pid')}")
                self.path.unlink(missing_ok=True)
                continue
            raise StoreLockedError(
                f"store {str(self.path.parent.parent)!r} is locked by another ingest "
                f"(pid {holder.get('pid')} on host {holder.get('host')!r}, since "
                f"{holder.get('locked_at')}); wait for it to finish, or if that process "
                f"is gone delete {str(self.path)!r}")
        raise StoreLockedError(f"could not take the lock {str(self.path)!r}")

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> StoreLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def missing_rows(store: str) -> list[tuple[int, int]]:
    """Row ranges ``[start, stop)`` whose tasks have no completion record, merged."""
    plan = read_plan(store)
    if plan is None:
        return []
    done = completed_tasks(store)
    gaps: list[tuple[int, int]] = []
    for t in plan["tasks"]:
        if t["task_id"] in done:
            continue
        if gaps and gaps[-1][1] == t["start"]:
            gaps[-1] = (gaps[-1][0], t["stop"])
        else:
            gaps.append((t["start"], t["stop"]))
    return gaps


def bad_records(store: str) -> dict[int, str]:
    """Task id -> why, for every completion record that does not decode."""
    out = {}
    for t in sorted(completed_tasks(store)):
        try:
            meta, _ = read_record(store, t)
            if not isinstance(meta, dict) or "start" not in meta or "stop" not in meta:
                raise ValueError("its metadata has no row range")
        except Exception as e:  # zipfile, zlib, JSON, numpy: any record that does not decode
            out[t] = f"{type(e).__name__}: {str(e)[:200]}"
    return out


def set_aside_bad_records(store: str) -> list[int]:
    """Move every undecodable record to ``_chunkstore/aside/`` (its task then reruns), with a
    warning naming it; returns the task ids. A resume is never blocked by one bad record."""
    bad = bad_records(store)
    for t, why in bad.items():
        src = record_path(store, t)
        dst = journal_dir(store) / ASIDE / f"{src.name}.{time.strftime('%Y%m%dT%H%M%S')}"
        dst.parent.mkdir()
        src.copy_to(dst)
        src.unlink(missing_ok=True)
        warn(f"journal record {str(src)!r} does not decode ({why}); it was moved to "
             f"{str(dst)!r} and task {t} will be run again")
    return sorted(bad)


def compact_records(store: str) -> int:
    """After finalize: rewrite each record without its partial statistics; returns the bytes
    the journal's records hold afterwards. Idempotent, and safe to kill (atomic rewrites)."""
    (journal_dir(store) / WORKERS).remove()  # a streaming ingest's, merged into stats/all
    total = 0
    for t in sorted(completed_tasks(store)):
        path = record_path(store, t)
        try:
            meta, arrays = read_record(store, t)
        except Exception:  # left for set_aside_bad_records / verify to report
            continue
        kept = {k: v for k, v in arrays.items() if k in KEPT_AFTER_FINALIZE}
        if len(kept) != len(arrays):
            write_record(store, t, {**meta, "compacted": True}, kept)
        total += len(path.read_bytes())
    return total
