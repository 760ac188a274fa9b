"""``chunkstore.torch``: PyTorch datasets over a store; see :mod:`chunkstore.interop.torch`."""

from chunkstore.interop.torch import IterableDataset, MapDataset, to_torch

__all__ = ["IterableDataset", "MapDataset", "to_torch"]
