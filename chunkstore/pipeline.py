"""Whole pipelines: an ingest followed by the splits its config declares.

Operations (ingest, splits, stats, read) do not import each other; a pipeline that needs
several of them lives here, at the facade layer.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from chunkstore.config import Config
from chunkstore.errors import IntegrityError
from chunkstore.ingest.coordinator import ingest_store
from chunkstore.ingest.resolve import resolve_config, with_scheduler
from chunkstore.ingest.summary import IngestSummary
from chunkstore.runtime.dask import dask_scheduler
from chunkstore.store import journal, layout
from chunkstore.store import urls as storage

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from chunkstore.ingest.heads import HeadSummary
    from chunkstore.integrity.report import RepairSummary, VerifyReport


def ingest(
    config: Config | str | os.PathLike[str],
    *,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    items: Any = None,
    process: Any = None,
    count: Any = None,
    scheduler: str | None = None,
    cluster: str | None = None,
) -> IngestSummary:
    """Build (or resume) the store described by ``config``.

    Parameters
    ----------
    config : a parsed :class:`Config`, a config mapping, or the path of a YAML config.
    workers : worker processes; default ``ingest.workers`` from the config, else CPU count.
    overwrite : replace a store built from a different config.
    progress : show a progress bar (rows/s, MB/s, ETA) on stderr.
    items, process, count : for a ``python`` source, the item list and the user's functions
        (importable module-level functions), replacing the names in the config.
    scheduler : a ``dask.distributed`` scheduler address (``tcp://host:8786``) to run the tasks
        on, instead of ``ingest.scheduler`` from the config; the store is the same either way.
    cluster : ``"local"`` runs on a new ``distributed.LocalCluster`` of ``workers`` processes.

    Returns
    -------
    IngestSummary with rows, bytes, compression ratio, wall time and peak memory.

    Raises
    ------
    ConfigError, SourceError, StoreExistsError, StoreLockedError, IngestError
        With a message naming what is wrong; tasks completed before a failure are kept and a
        rerun resumes from them.

    Examples
    --------
    >>> summary = ingest("configs/demo.yaml")  # doctest: +SKIP
    >>> print(summary.format())  # doctest: +SKIP
    """
    # Imported here: worker processes import this module with the package, never call it.
    from chunkstore.splits.write import check_config_splits, write_config_splits

    t0 = time.perf_counter()
    config = resolve_config(config, items, process, count)
    with dask_scheduler(scheduler, cluster, workers or config.ingest.workers) as address:
        config = with_scheduler(config, address)
        summary = ingest_store(
            config, workers=workers, overwrite=overwrite, progress=progress, started=t0,
            validate=lambda has_group: check_config_splits(config, has_group))
        # After finalize: splits declared in the config (missing ones also on a rerun).
        write_config_splits(config, overwrite=overwrite, progress=progress)
    return summary


def repair(config: Config | str | os.PathLike[str], *, workers: int | None = None,
           progress: bool = True) -> RepairSummary:
    """Rewrite exactly the chunks ``verify`` finds bad or missing, from the source.

    An ordered store reruns the tasks that wrote them (``_chunkstore/plan.json``); a streaming
    store produces again the items whose rows the chunks hold (their item runs are in the
    journal, and in ``meta/source``) and rewrites each chunk in the same row order; chunks an
    append wrote last are rewritten by that append's task, from its record. Undecodable
    journal records are set aside and their tasks rerun; corrupt split arrays are recomputed.
    An unfinished store gets its bad tasks un-committed and the ingest resumed. Idempotent and
    resumable: a killed repair is finished by running it again. Statistics are not recomputed:
    the rewritten bytes equal the originals, which the final verify proves against
    ``stats/all``.

    Parameters
    ----------
    config : the config (path, mapping or :class:`Config`) the store was built from.
    workers : worker processes; default ``ingest.workers``, else the CPU count.
    progress : progress bars on stderr.

    Returns
    -------
    RepairSummary: what was found, what was rewritten, and the verify report afterwards.

    Raises
    ------
    IntegrityError
        If the store's attrs or array shapes are damaged (restore ``zarr.json`` or rebuild with
        ``ingest --overwrite``), the source no longer matches the store, or problems remain.

    Examples
    --------
    >>> print(repair("configs/demo.yaml").format())  # doctest: +SKIP
    """
    from chunkstore.integrity import verify
    from chunkstore.integrity.report import RepairSummary

    t0 = time.perf_counter()
    config = resolve_config(config, None, None, None)
    storage.configure(config.store, config.storage_options)
    before = verify(config.store, workers=workers)
    fatal = [p.format() for p in before.problems if p.kind in ("attrs", "shape")]
    if fatal:
        raise IntegrityError(f"store {config.store!r} cannot be repaired chunk by chunk: "
                             f"{'; '.join(fatal)}; restore its zarr.json files, or rebuild it "
                             "with `chunkstore ingest --overwrite`")
    rewritten: list[str] = []
    if not before.ok:
        rewritten = _rewrite(config, before, workers, progress)
    after = verify(config.store, workers=workers)
    summary = RepairSummary(config.store, before, tuple(rewritten), after,
                            time.perf_counter() - t0)
    if not after.ok:
        raise IntegrityError(summary.format())
    return summary


def _bad_rows(report: VerifyReport) -> list[tuple[int, int]]:
    return sorted({p.rows for p in report.problems
                   if p.kind in ("missing", "corrupt") and not p.array.startswith("splits/")})


def _rewrite(config: Config, report: VerifyReport, workers: int | None, progress: bool
             ) -> list[str]:
    """Rewrite what ``report`` found bad; returns what was rewritten, for the summary."""
    from chunkstore.splits.write import write_config_splits

    store = config.store
    bad_rows = _bad_rows(report)
    set_aside = journal.set_aside_bad_records(store)
    done: list[str] = [f"journal record of task {t} (set aside)" for t in set_aside]
    if report.status != layout.COMPLETE:
        _uncommit(store, report, bad_rows)
        ingest(config, workers=workers, progress=progress)
        return done + [f"rows {a}-{b} (ingest resumed)" for a, b in bad_rows]
    from chunkstore.ingest.append_repair import rerun_appended, split_bad_rows

    ingest_rows, appended_rows = split_bad_rows(store, bad_rows)
    if appended_rows:  # first: an ingest task's partial write reads the shared chunk back
        with journal.StoreLock(store):
            done += rerun_appended(config, appended_rows)
    if report.placement == "streaming":
        done += rebuild_streaming(config, ingest_rows, set_aside)
    else:
        done += _rerun_ordered(config, ingest_rows, set_aside, workers, progress)
    journal.compact_records(store)
    if any(p.array.startswith("splits/") for p in report.problems):
        write_config_splits(config, overwrite=True, progress=progress)
        done.append("split arrays declared in the config (recomputed)")
    return done


def _uncommit(store: str, report: VerifyReport, bad_rows: list[tuple[int, int]]) -> None:
    """An unfinished store: delete the records of the tasks (chunks) holding bad rows, so the
    resumed ingest writes them again."""
    tasks = (journal.read_plan(store) or {"tasks": []})["tasks"]
    r = int(layout.read_attrs(store)["chunk_rows"])
    for a, b in bad_rows:
        if report.placement == "streaming":
            ids = set(range(a // r, -(-b // r)))
        else:
            ids = {t["task_id"] for t in tasks if t["start"] < b and a < t["stop"]}
        for t in ids:
            journal.record_path(store, t).unlink()


def _rerun_ordered(config: Config, bad_rows: list[tuple[int, int]], extra: list[int],
                   workers: int | None, progress: bool) -> list[str]:
    """Rerun the tasks of an ordered store that wrote ``bad_rows`` (and tasks ``extra``)."""
    from chunkstore.ingest.coordinator import plan_ingest, resolve_workers, row_bytes, run_tasks
    from chunkstore.sources import open_source

    store = config.store
    source = open_source(config.source, config.schema)
    n = resolve_workers(workers or config.ingest.workers)
    plan, sha = plan_ingest(config, source, n)
    if sha != layout.read_attrs(store).get("config_sha256") or \
            journal.read_plan(store) != plan.to_dict():
        raise IntegrityError(f"the config or the source's items changed since store {store!r} "
                             "was built, so its chunks cannot be rewritten to what they were; "
                             "rebuild it with `chunkstore ingest --overwrite`")
    tasks = [t for t in plan.tasks if t.task_id in extra
             or any(t.start < b and a < t.stop for a, b in bad_rows)]
    with journal.StoreLock(store):
        run_tasks(store, config, source, plan, tasks, n, progress,
                  row_bytes(config, source.has_group))
    return [f"task {t.task_id} (rows {t.start}-{t.stop})" for t in tasks]


def rebuild_streaming(config: Config, bad_rows: list[tuple[int, int]], extra: list[int]
                      ) -> list[str]:
    """Rewrite the chunks of a streaming store holding ``bad_rows`` (and chunks ``extra``,
    whose records were set aside): each chunk's item runs, from its record or else from
    ``meta/source``, are produced again and written in the same order (one process: repair
    rewrites a few chunks, not the store)."""
    from chunkstore.ingest.coordinator import is_streaming
    from chunkstore.ingest.streaming import python_source, write_chunk
    from chunkstore.ingest.streaming_rows import chunk_runs, ingest_end, runs_rows
    from chunkstore.sources import open_source

    store = config.store
    if not is_streaming(config):
        raise IntegrityError(f"store {store!r} was written by streaming placement, but config "
                             f"{config.file!r} is not a streaming python source")
    source = python_source(open_source(config.source, config.schema))
    group = storage.open_group(store, mode="r+")
    r = int(layout.read_attrs(store)["chunk_rows"])
    chunks = sorted({c for a, b in bad_rows for c in range(a // r, -(-b // r))} | set(extra))
    cache: dict[int, dict[str, Any]] = {}
    end = ingest_end(store)
    with journal.StoreLock(store):
        for c in chunks:
            runs, moved = chunk_runs(store, group, c, r, source.has_source, end)
            data = runs_rows(config, source, runs, cache)
            write_chunk(group, store, config, c, int(sum(b - a for _, a, b in runs)), data,
                        moved_from=moved)
            cache.clear()
    return [f"chunk {c} (rows {c * r}-{(c + 1) * r})" for c in chunks]


def add_head(store: str, name: str, classes: int | None = None, labels: ArrayLike | None = None,
             masks: ArrayLike | None = None, *, workers: int | None = None,
             source: Config | str | os.PathLike[str] | None = None, progress: bool = True,
             label_dtype: str = "int16", mask_dtype: str = "int8") -> HeadSummary:
    """Add head ``name`` without rewriting anything, then its statistics: class and mask
    counts in every stored scope, and its mutual information in every scope that has mutual
    information (one read of the features per such scope).

    Parameters, returns and errors are those of :func:`chunkstore.ingest.heads.add_head`;
    ``progress`` shows the features pass.

    Examples
    --------
    >>> add_head("data/demo.zarr", "outcome", 3, np.load("outcome.npy"))  # doctest: +SKIP
    """
    import dataclasses

    from chunkstore.ingest import heads
    from chunkstore.stats.head_info import add_head_info

    summary = heads.add_head(store, name, classes, labels, masks, workers=workers,
                             source=source, label_dtype=label_dtype, mask_dtype=mask_dtype)
    info = add_head_info(store, name, progress=progress)
    return dataclasses.replace(summary, notes=(info.format(),))
