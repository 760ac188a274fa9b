"""chunkstore: build ML training datasets straight into one compressed Zarr store.

Parallel workers write feature, label and mask chunks directly into a preallocated store; no
merge step, bounded memory, resumable after a crash. The store is plain Zarr v3.
"""

from __future__ import annotations

from chunkstore._version import __version__
from chunkstore.config import Config, load_config
from chunkstore.dataset import Dataset, open
from chunkstore.errors import (
    ChunkstoreError,
    ChunkstoreWarning,
    ConfigError,
    ExportError,
    IncompleteStoreWarning,
    IngestError,
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
)
from chunkstore.ingest.summary import IngestSummary
from chunkstore.read.loader import Loader
from chunkstore.read.windows import Windows
from chunkstore.stats.compute import compute_stats

# Last: binds the name ``ingest`` to the function, over the ``chunkstore.ingest`` subpackage.
from chunkstore.pipeline import ingest  # noqa: E402  isort: skip

__all__ = [
    "ChunkstoreError",
    "ChunkstoreWarning",
    "Config",
    "ConfigError",
    "Dataset",
    "ExportError",
    "IncompleteStoreWarning",
    "IngestError",
    "IngestSummary",
    "Loader",
    "MissingDependencyError",
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
    "Windows",
    "__version__",
    "compute_stats",
    "ingest",
    "load_config",
    "open",
]
