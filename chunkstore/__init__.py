"""chunkstore: build ML training datasets straight into one compressed Zarr store.

Parallel workers write feature, label and mask chunks directly into a preallocated store; no
merge step, bounded memory, resumable after a crash. The store is plain Zarr v3.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import (
    ChunkstoreError,
    ConfigError,
    IngestError,
    NotAStoreError,
    PlanError,
    ReadError,
    SourceError,
    StoreExistsError,
    StoreLockedError,
)
from .ingest import IngestSummary, ingest
from .loader import Loader
from .reader import Dataset, IncompleteStoreWarning, open
from .schema import Config, load_config
from .windows import Windows

__all__ = [
    "ChunkstoreError",
    "Config",
    "Dataset",
    "IncompleteStoreWarning",
    "ConfigError",
    "IngestError",
    "IngestSummary",
    "Loader",
    "NotAStoreError",
    "PlanError",
    "ReadError",
    "SourceError",
    "StoreExistsError",
    "StoreLockedError",
    "Windows",
    "__version__",
    "ingest",
    "load_config",
    "open",
]
