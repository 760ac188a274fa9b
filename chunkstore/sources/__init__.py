"""Source kinds: where samples come from. See :mod:`chunkstore.sources.base`."""

from chunkstore.sources.base import Batch, Source, SourceOptions, check_batch
from chunkstore.sources.registry import open_source, registry, source_class

__all__ = ["Batch", "Source", "SourceOptions", "check_batch", "open_source", "registry",
           "source_class"]
