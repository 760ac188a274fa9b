"""``chunkstore stats``: statistics of a store or split, computed lazily with Dask."""

from chunkstore.stats.compute import compute_stats

__all__ = ["compute_stats"]
