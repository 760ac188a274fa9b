"""``chunkstore.torch``: PyTorch datasets over a store; see :mod:`chunkstore.interop.torch`."""

from chunkstore.interop.torch import IterableDataset, MapDataset, to_torch
from chunkstore.interop.torch_mix import MixtureDataset

__all__ = ["IterableDataset", "MapDataset", "MixtureDataset", "to_torch"]
