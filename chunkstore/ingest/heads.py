"""``chunkstore add-head``: a new prediction head written beside the existing arrays.

``labels/<name>`` (N,) and ``masks/<name>`` (N, classes) are created with the store's chunking
(and sharding, like the other label arrays), then written by chunk-aligned tasks on the ingest
executor, one writer per chunk (shard); each task commits a record in
``_chunkstore/heads/<name>/``, so a killed run rerun with the same labels resumes. No existing
chunk file is touched. At the end, every stored statistics scope gets ``class_counts/<name>``
and ``mask_counts/<name>`` (:func:`chunkstore.pipeline.add_head` then adds its mutual
information, which needs the features: :mod:`chunkstore.stats.head_info`), the head is
added to the root attrs -- the commit: until then chunkstore readers do not list it -- and a
version is recorded.
"""

from __future__ import annotations

import hashlib
import math
import os
from concurrent.futures import as_completed
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr
from numpy.typing import ArrayLike, NDArray

from chunkstore.config import Config
from chunkstore.core.schema import Compression, HeadSpec, Where
from chunkstore.errors import AppendError, IngestError
from chunkstore.ingest.coordinator import make_executor, resolve_workers
from chunkstore.ingest.heads_source import head_arrays
from chunkstore.ingest.task import init_worker
from chunkstore.store import journal, layout, versions
from chunkstore.store.stats_io import STATS, available_scopes, node_array, node_group
from chunkstore.store.urls import StorePath, open_group
from chunkstore.store.view import seal_attrs

HEADS_DIR = "heads"
TASK_TARGET = 16  # about this many tasks


@dataclass(frozen=True)
class HeadSummary:
    store: str
    head: str
    classes: int
    rows: int
    tasks_total: int
    tasks_run: int
    version: str
    notes: tuple[str, ...] = ()  # e.g. the scopes that got the head's mutual information

    def format(self) -> str:
        return "\n".join((
            f"store            {self.store}",
            f"head             {self.head} ({self.classes} classes, {self.rows:,} rows)",
            f"tasks            {self.tasks_run} run, {self.tasks_total - self.tasks_run} "
            "already done", f"version          {self.version}", *self.notes))


def head_dir(store: str, name: str) -> StorePath:
    return journal.journal_dir(store) / HEADS_DIR / name


def _check(store: str, name: str, classes: int, labels: NDArray[Any], masks: NDArray[Any],
           attrs: dict[str, Any]) -> None:
    n = int(attrs["n_samples"])
    if attrs.get("status") != layout.COMPLETE:
        raise AppendError(f"store {store!r} is not complete; finish its ingest before adding a "
                          "head")
    if not name or "/" in name or name in attrs["heads"]:
        raise AppendError(f"head name {name!r} is empty, has a '/', or is already a head of "
                          f"store {store!r} (heads: {sorted(attrs['heads'])})")
    if labels.shape != (n,):
        raise AppendError(f"labels for head {name!r} have shape {labels.shape}; store {store!r} "
                          f"has {n:,} rows, so expected ({n},)")
    if masks.shape != (n, classes):
        raise AppendError(f"masks for head {name!r} have shape {masks.shape}; expected "
                          f"({n}, {classes}) (rows x classes)")
    if labels.dtype.kind not in "iub":
        raise AppendError(f"labels for head {name!r} have dtype {labels.dtype}; expected "
                          "integers (class indices)")
    bad = np.flatnonzero((labels < 0) | (labels >= classes))
    if bad.size:
        raise AppendError(f"labels for head {name!r}: row {int(bad[0])} holds "
                          f"{int(labels[bad[0]])}, outside [0, {classes})")


def _digest(labels: NDArray[Any], masks: NDArray[Any], classes: int) -> str:
    h = hashlib.sha256(f"{classes}|{labels.dtype.str}|{masks.dtype.str}".encode())
    h.update(np.ascontiguousarray(labels).tobytes())
    h.update(np.ascontiguousarray(masks).tobytes())
    return h.hexdigest()


def _create(group: zarr.Group, attrs: dict[str, Any], head: HeadSpec) -> int:
    """Create the two arrays (if absent) like the store's others; returns rows per task."""
    n, r = int(attrs["n_samples"]), int(attrs["chunk_rows"])
    comp = Compression.from_dict(attrs["compression"], Where("<store attrs>", "compression"))
    labels = group.get(layout.LABELS)
    shards = ([a.shards for _, a in labels.arrays() if a.shards]
              if isinstance(labels, zarr.Group) else [])
    shard_rows = int(shards[0][0]) if shards else None
    for path, tail, dtype, fill in ((layout.label_path(head.name), (), head.label_dtype,
                                     layout.LABEL_FILL),
                                    (layout.mask_path(head.name), (head.classes,),
                                     head.mask_dtype, layout.MASK_FILL)):
        if path not in group:
            group.create_array(path, shape=(n, *tail), chunks=(r, *tail),
                               shards=(shard_rows, *tail) if shard_rows else None, dtype=dtype,
                               compressors=layout.compressors(comp), fill_value=fill,
                               dimension_names=layout.dimension_names(path))
    if shard_rows:
        return shard_rows
    return r * max(1, math.ceil(math.ceil(max(n, 1) / r) / TASK_TARGET))


def write_block(store: str, name: str, task_id: int, start: int, labels: NDArray[Any],
                masks: NDArray[Any]) -> int:
    """Worker: write rows ``[start, start + len)`` of both arrays, then the task's record."""
    group = open_group(store, mode="r+")
    stop = start + labels.shape[0]
    group[layout.label_path(name)][start:stop] = labels
    group[layout.mask_path(name)][start:stop] = masks
    journal.write_json(head_dir(store, name) / journal.TASKS / f"{task_id:06d}.json",
                       {"task_id": task_id, "start": start, "stop": stop})
    return task_id


def _done(store: str, name: str) -> set[int]:
    return {int(p.stem) for p in (head_dir(store, name) / journal.TASKS).iterdir()
            if p.name.endswith(".json") and not p.name.startswith(".")}


def _add_counts(group: zarr.Group, name: str, classes: int, labels: NDArray[Any],
                masks: NDArray[Any]) -> None:
    """``class_counts/<name>`` and ``mask_counts/<name>`` in every stored scope."""
    for scope in available_scopes(group):
        split = dict(node_group(group, f"{STATS}/{scope}").attrs).get("split")
        rows = np.ones(labels.shape[0], bool)
        if isinstance(split, dict) and "code" in split:
            codes = np.asarray(node_array(group, str(split["array"]))[:labels.shape[0]])
            rows = codes == int(split["code"])
        for kind, value in (("class_counts", np.bincount(labels[rows].astype(np.int64),
                                                         minlength=classes)),
                            ("mask_counts", np.count_nonzero(masks[rows], axis=0))):
            group.create_array(f"{STATS}/{scope}/{kind}/{name}", shape=(classes,),
                               dtype="int64", chunks=(classes,), fill_value=0,
                               overwrite=True)[...] = value.astype(np.int64)


def add_head(store: str, name: str, classes: int | None = None, labels: ArrayLike | None = None,
             masks: ArrayLike | None = None, *, workers: int | None = None,
             label_dtype: str = "int16", mask_dtype: str = "int8",
             source: Config | str | os.PathLike[str] | None = None) -> HeadSummary:
    """Add head ``name`` to a complete store without rewriting anything else.

    Parameters
    ----------
    store : path of a complete store.
    name, classes : the new head and its number of classes (from ``source``'s schema when
        that is given).
    labels : N labels in ``[0, classes)``, row ``i`` for store row ``i``.
    masks : (N, classes) validity masks; None allows every class on every row.
    workers : processes writing chunks (default: CPU count).
    label_dtype, mask_dtype : the new arrays' dtypes (from ``source``'s schema when given).
    source : instead of ``labels``/``masks``: a config (path, mapping or Config) whose
        ``schema.heads`` declares the head and whose source's items line up with the store's
        rows (see :mod:`chunkstore.ingest.heads_source`).

    Returns
    -------
    HeadSummary (rows, tasks run, the version recorded).

    Raises
    ------
    AppendError
        Incomplete store, existing head, wrong shape or a label out of range (the row is
        named), or a resumed run with other labels; nothing is written.
    StoreLockedError
        Another ingest, append or split holds the store.

    Examples
    --------
    >>> add_head("data/demo.zarr", "outcome", 3, np.load("outcome.npy"))  # doctest: +SKIP
    """
    if source is not None:
        if labels is not None or masks is not None:
            raise AppendError("give the new head's labels (and masks) or a source config, "
                              "not both")
        head, labels, masks = head_arrays(store, name, source, classes)
        classes, label_dtype, mask_dtype = head.classes, head.label_dtype, head.mask_dtype
    if classes is None or labels is None:
        raise AppendError(f"head {name!r}: give its classes and labels, or a source config")
    head = HeadSpec(name, int(classes), label_dtype, mask_dtype)
    raw = np.asarray(labels)
    attrs = layout.read_attrs(store)
    n = int(attrs["n_samples"])
    if name in attrs["heads"] and (head_dir(store, name) / "state.json").exists():
        return _finish(store, name, head, n)  # killed after its commit: only cleanup is left
    msk = (np.ones((n, head.classes), mask_dtype) if masks is None
           else np.asarray(masks).astype(mask_dtype, casting="unsafe"))
    _check(store, name, head.classes, raw, msk, attrs)
    lab = raw.astype(label_dtype)
    digest = _digest(lab, msk, head.classes)
    with journal.StoreLock(store):
        state_path = head_dir(store, name) / "state.json"
        if state_path.exists() and journal.read_json(state_path)["digest"] != digest:
            raise AppendError(f"an unfinished add-head of {name!r} on store {store!r} was "
                              "started with other labels or masks; rerun it with those")
        group = open_group(store, mode="r+")
        step = _create(group, attrs, head)
        (head_dir(store, name) / journal.TASKS).mkdir()
        journal.write_json(state_path, {"digest": digest, "head": head.to_dict()})
        starts = list(range(0, n, step))
        done = _done(store, name)
        todo = [(i, s) for i, s in enumerate(starts) if i not in done]
        if todo:
            _run(store, name, todo, step, lab, msk, workers)
        _add_counts(group, name, head.classes, lab, msk)
        heads = {**attrs["heads"], name: head.to_dict()}
        layout.update_attrs(store, heads=heads, modified=layout.now_iso())
        seal_attrs(store)
        vid = versions.commit_version(store, f"add-head {name}").id
        _cleanup(store, name)
    return HeadSummary(store, name, head.classes, n, len(starts), len(todo), vid)


def _cleanup(store: str, name: str) -> None:
    for p in (head_dir(store, name) / journal.TASKS).iterdir():
        p.unlink()
    (head_dir(store, name) / "state.json").unlink()


def _finish(store: str, name: str, head: HeadSpec, n: int) -> HeadSummary:
    with journal.StoreLock(store):
        kept = versions.log(store)
        done = [v for v in kept if v.command == f"add-head {name}"]
        vid = done[-1].id if done else versions.commit_version(store, f"add-head {name}").id
        _cleanup(store, name)
    return HeadSummary(store, name, head.classes, n, 0, 0, vid)


def _run(store: str, name: str, todo: list[tuple[int, int]], step: int, lab: NDArray[Any],
         msk: NDArray[Any], workers: int | None) -> None:
    with make_executor(min(resolve_workers(workers), len(todo)), None, (1, None),
                       init_worker, store=store) as ex:
        futures = {ex.submit(write_block, store, name, i, s, lab[s:s + step],
                             msk[s:s + step]): (i, s) for i, s in todo}
        for fut in as_completed(futures):
            try:
                fut.result()
            except BaseException as e:
                for f in futures:
                    f.cancel()
                i, s = futures[fut]
                raise IngestError(f"add-head task {i} (rows [{s}, {s + step})) failed: "
                                  f"{type(e).__name__}: {e}; rerun the same command to "
                                  "resume") from e
