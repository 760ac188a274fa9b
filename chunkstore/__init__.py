"""chunkstore: build ML training datasets straight into one compressed Zarr store.

Parallel workers write feature, label and mask chunks directly into a preallocated store; no
merge step, bounded memory, resumable after a crash. The store is plain Zarr v3.
"""

from __future__ import annotations

from typing import Any

from chunkstore._version import __version__
from chunkstore.errors import (
    AppendError,
    ChunkstoreError,
    ChunkstoreWarning,
    ConfigError,
    ExportError,
    IncompleteStoreWarning,
    IngestError,
    IntegrityError,
    MissingDependencyError,
    NotAStoreError,
    PlanError,
    ReadError,
    ReportError,
    SourceError,
    SplitError,
    SplitLookupError,
    StoreExistsError,
    StoreLockedError,
    UsageError,
    VersionError,
)

# Bound eagerly, and last: the name ``ingest`` must be the function, over the
# ``chunkstore.ingest`` subpackage that importing the pipeline loads first.
from chunkstore.pipeline import ingest  # noqa: E402  isort: skip
from chunkstore.dedup import dedup  # noqa: E402  isort: skip  (the function over the subpackage)

# The rest is imported on first use, so that a worker process (which imports only what its
# tasks need) does not pay for the readers, Dask statistics and xarray at start-up.
_LAZY = {
    "append": "chunkstore.ingest.append",
    "add_head": "chunkstore.pipeline",
    "open_version": "chunkstore.store.versions",
    "repair": "chunkstore.pipeline",
    "verify": "chunkstore.integrity.verify",
    "AppendSummary": "chunkstore.ingest.append_check",
    "Config": "chunkstore.config",
    "load_config": "chunkstore.config",
    "Dataset": "chunkstore.dataset",
    "open": "chunkstore.dataset",
    "IngestSummary": "chunkstore.ingest.summary",
    "Loader": "chunkstore.read.loader",
    "Mixture": "chunkstore.read.mix",
    "mix": "chunkstore.read.mix",
    "Windows": "chunkstore.read.windows",
    "compute_stats": "chunkstore.stats.compute",
    "shuffle_report": "chunkstore.report.shuffle",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'chunkstore' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

__all__ = [
    "AppendError",
    "AppendSummary",
    "ChunkstoreError",
    "ChunkstoreWarning",
    "Config",
    "ConfigError",
    "Dataset",
    "ExportError",
    "IncompleteStoreWarning",
    "IngestError",
    "IngestSummary",
    "IntegrityError",
    "Loader",
    "MissingDependencyError",
    "Mixture",
    "NotAStoreError",
    "PlanError",
    "ReadError",
    "ReportError",
    "SourceError",
    "SplitError",
    "SplitLookupError",
    "StoreExistsError",
    "StoreLockedError",
    "UsageError",
    "VersionError",
    "Windows",
    "__version__",
    "add_head",
    "append",
    "compute_stats",
    "dedup",
    "ingest",
    "load_config",
    "mix",
    "open",
    "open_version",
    "repair",
    "shuffle_report",
    "verify",
]
