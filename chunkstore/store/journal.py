"""The ingest journal under ``<store>/_chunkstore/``: plain files, not Zarr nodes.

- ``lock``: one ingest per store. Created atomically and only if absent (a hard link of a fully
  written temp file locally; a conditional PUT on object storage), so it is never seen
  half-written; a lock left by a dead process on this host is detected and removed, one held by
  a live process is obeyed.
- ``tasks/<id>.npz``: a task's completion record with its partial statistics, written
  atomically (temp file + rename locally, one PUT on object storage) only after all of the
  task's chunks are written.
- ``plan.json`` and ``config.json``: the plan and config the store was created with.

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

from chunkstore.errors import StoreLockedError
from chunkstore.runtime.messages import warn
from chunkstore.store.layout import JOURNAL_DIR
from chunkstore.store.urls import StorePath, store_path

TASKS = "tasks"
PathLike = StorePath | str | os.PathLike[str]


def journal_dir(store: str) -> StorePath:
    return store_path(store) / JOURNAL_DIR


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
    plan_file = journal_dir(store) / "plan.json"
    if not plan_file.exists():
        return []
    done = completed_tasks(store)
    gaps: list[tuple[int, int]] = []
    for t in read_json(plan_file)["tasks"]:
        if t["task_id"] in done:
            continue
        if gaps and gaps[-1][1] == t["start"]:
            gaps[-1] = (gaps[-1][0], t["stop"])
        else:
            gaps.append((t["start"], t["stop"]))
    return gaps
