"""Whole pipelines: an ingest followed by the splits its config declares.

Operations (ingest, splits, stats, read) do not import each other; a pipeline that needs
several of them lives here, at the facade layer.
"""

from __future__ import annotations

import os
import time
from typing import Any

from chunkstore.config import Config
from chunkstore.ingest.coordinator import ingest_store, resolve_config, with_scheduler
from chunkstore.ingest.summary import IngestSummary
from chunkstore.runtime.dask import dask_scheduler


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
