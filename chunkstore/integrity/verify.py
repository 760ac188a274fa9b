"""``chunkstore verify``: is every byte of a store what chunkstore wrote?

Checked, in order: the ``chunkstore`` attrs against the digest sealed at commit; the journal's
records decode; every array's shape and chunking agree with ``n_samples`` and the schema; every
stored unit (chunk or shard) of every sample and split array that must exist exists, decodes and
passes its crc32c checksum (read in parallel, see :mod:`.scan`); the counts in ``stats/all``
agree with ``n_samples`` and with the data just read. Every problem names the array, the chunk
key, its rows and the task (or, for a streaming store, the source items) that wrote them.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import zarr

from chunkstore.errors import IntegrityError
from chunkstore.integrity.report import Problem, VerifyReport
from chunkstore.integrity.scan import (
    Unit,
    UnitResult,
    batches,
    default_workers,
    run_checks,
)
from chunkstore.integrity.writers import Writers, committed_units, journal_problems
from chunkstore.store import layout
from chunkstore.store.urls import configure, normalize, open_group
from chunkstore.store.view import attrs_problems

REQUIRED = ("n_samples", "chunk_rows", "feature_names", "heads", "status")


def verify(store: str, *, workers: int | None = None, scheduler: str | None = None,
           storage_options: Mapping[str, Any] | None = None) -> VerifyReport:
    """Check a whole store; never raises for what it finds, only lists it.

    Parameters
    ----------
    store : the store's path or fsspec URL.
    workers : processes reading chunks (default: the CPU count).
    scheduler : address of a Dask scheduler (``tcp://host:8786``): the chunks are read by that
        cluster's workers instead (the store must be reachable from them).
    storage_options : fsspec options for a URL store.

    Returns
    -------
    VerifyReport: ``report.ok`` when nothing is wrong, else ``report.problems``.

    Raises
    ------
    NotAStoreError
        If ``store`` holds no chunkstore store at all.
    ConfigError
        A ``memory://`` store with a ``scheduler`` (its workers cannot see it).

    Examples
    --------
    >>> report = verify("data/demo.zarr")  # doctest: +SKIP
    >>> report.ok, [p.format() for p in report.problems]  # doctest: +SKIP
    """
    t0 = time.perf_counter()
    store = normalize(store)
    configure(store, storage_options)
    attrs = layout.read_attrs(store)
    group = open_group(store, mode="r")
    problems = [Problem("attrs", "", d) for d in attrs_problems(store, group)]
    lost = [k for k in REQUIRED if k not in attrs]
    if lost:
        problems.append(Problem("attrs", "", f"required attrs keys missing: {lost}; nothing "
                                "else can be checked"))
        return VerifyReport(store, tuple(problems), 0, 0, time.perf_counter() - t0,
                            str(attrs.get("status", "?")), -1)
    problems += journal_problems(store)
    writers = Writers(store, group, attrs)
    n = writers.n_rows
    problems += shape_problems(group, attrs, n)
    jobs, nbytes = scan_jobs(group, attrs, writers)
    found = run_checks(store, jobs, workers or default_workers(), nbytes, scheduler=scheduler)
    stats = stats_problems(group, found, n) if writers.complete else []
    problems += unit_problems(found, writers, {p.array for p in stats}, attrs)
    problems += [p for p in stats if p.kind == "stats"]
    notes = writers.notes()
    if not writers.complete:
        problems.append(Problem("incomplete", "", writers.incomplete_detail()))
    return VerifyReport(store, tuple(problems), found.units, found.stored_bytes,
                        time.perf_counter() - t0, str(attrs["status"]), n,
                        writers.placement, tuple(notes))


def check(store: str, **kwargs: Any) -> VerifyReport:
    """:func:`verify`, raising IntegrityError listing every problem unless the store is clean."""
    report = verify(store, **kwargs)
    if not report.ok:
        raise IntegrityError(report.format())
    return report


def _arrays(group: zarr.Group) -> list[str]:
    names = layout.stored_sample_arrays(group)
    splits = group.get(layout.SPLITS)
    if isinstance(splits, zarr.Group):
        names += [f"{layout.SPLITS}/{k}" for k in sorted(splits.array_keys())]  # as found
    return names


def _node(group: zarr.Group, name: str) -> zarr.Array | None:
    node = group.get(name)
    return node if isinstance(node, zarr.Array) else None


def shape_problems(group: zarr.Group, attrs: Mapping[str, Any], n: int) -> list[Problem]:
    """Arrays missing, or whose rows, chunking or trailing shape disagree with the attrs."""
    out = []
    want: dict[str, tuple[int, ...]] = {layout.FEATURES: (len(attrs["feature_names"]),)}
    for h, d in attrs["heads"].items():
        want[layout.label_path(h)] = ()
        want[layout.mask_path(h)] = (int(d["classes"]),)
    for name in want:
        if _node(group, name) is None:
            out.append(Problem("shape", name, "array is missing (its zarr.json is gone)"))
    complete = attrs["status"] == layout.COMPLETE
    for name in _arrays(group):
        a = _node(group, name)
        if a is None:
            continue
        if name in want and tuple(a.shape[1:]) != want[name]:
            out.append(Problem("shape", name, f"shape {a.shape}: expected trailing shape "
                               f"{want[name]} from the attrs"))
        if complete and a.shape[0] != n:
            out.append(Problem("shape", name, f"{a.shape[0]:,} rows; attrs n_samples is {n:,}"))
        if name in layout.stored_sample_arrays(group) and a.chunks[0] != attrs["chunk_rows"] \
                and getattr(a, "shards", None) is None:
            out.append(Problem("shape", name, f"chunk rows {a.chunks[0]}; attrs chunk_rows is "
                               f"{attrs['chunk_rows']}"))
    return out


def scan_jobs(group: zarr.Group, attrs: Mapping[str, Any], writers: Writers
              ) -> tuple[list[tuple[list[Unit], int]], int]:
    """Batches of units to read (every unit of committed rows, per array), and their
    uncompressed bytes."""
    jobs, nbytes = [], 0
    for name in _arrays(group):
        a = _node(group, name)
        if a is None:
            continue
        head = name.split("/", 1)[1] if name.startswith(layout.LABELS + "/") else ""
        classes = int(attrs["heads"].get(head, {}).get("classes", 0)) if head else 0
        units = committed_units(a, name, writers)
        row_bytes = int(np.prod(a.shape[1:], dtype=np.int64)) * a.dtype.itemsize
        jobs += [(b, classes) for b in batches(units, max(1, row_bytes))]
        nbytes += sum(u.stop - u.start for u in units) * row_bytes
    return jobs, nbytes


def _may_be_fill(name: str) -> bool:
    """Arrays whose fill value is also valid data: zarr does not write a chunk of fill values,
    so a missing file is only a problem if the statistics say rows were lost."""
    return name == layout.FEATURES or name.startswith(layout.MASKS + "/")


def unit_problems(found: UnitResult, writers: Writers, stats_bad: set[str],
                  attrs: Mapping[str, Any]) -> list[Problem]:
    """Missing and corrupt units as problems, with the rows and who wrote them."""
    out = []
    checkable = writers.complete and writers.has_stats
    for u in sorted(found.missing, key=lambda u: (u.array, u.index)):
        if _may_be_fill(u.array) and checkable and u.array not in stats_bad:
            continue  # an all-fill chunk zarr did not store; the stats agree
        out.append(Problem("missing", u.array, "no file: reads as fill values", u.index, u.key,
                           (u.start, u.stop), writers.of(u.start, u.stop)))
    for u, why in sorted(found.corrupt, key=lambda x: (x[0].array, x[0].index)):
        out.append(Problem("corrupt", u.array, f"does not decode: {why}", u.index, u.key,
                           (u.start, u.stop), writers.of(u.start, u.stop)))
    return out


def stats_problems(group: zarr.Group, found: UnitResult, n: int) -> list[Problem]:
    """``stats/all`` counts against ``n_samples`` and against the sums of the data read."""
    node = group.get("stats/all")
    if not isinstance(node, zarr.Group) or "count" not in node:
        return []
    out = []
    arrays = {k: np.asarray(v[...]) for k, v in node.arrays()}
    for sub in ("class_counts", "mask_counts"):
        g = node.get(sub)
        if isinstance(g, zarr.Group):
            arrays.update({f"{sub}/{k}": np.asarray(v[...]) for k, v in g.arrays()})
    total = arrays["count"] + arrays.get("nan_count", 0) + arrays.get("inf_count", 0)
    if np.any(total != n):
        out.append(Problem("stats", "stats/all", f"count + nan_count + inf_count is "
                           f"{int(np.min(total)):,}..{int(np.max(total)):,}, not n_samples "
                           f"{n:,}"))
    for key, got in sorted(found.sums.items()):
        if key in arrays and (arrays[key].shape != got.shape or np.any(arrays[key] != got)):
            array = _array_of(key)
            out.append(Problem("stats", array, f"stats/all/{key} disagrees with the data read "
                               "(rows were lost or changed after ingest)"))
    return out


def _array_of(key: str) -> str:
    if key.startswith("class_counts/"):
        return layout.label_path(key.split("/", 1)[1])
    if key.startswith("mask_counts/"):
        return layout.mask_path(key.split("/", 1)[1])
    return layout.FEATURES
