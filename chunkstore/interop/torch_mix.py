"""PyTorch adapter for mixtures of stores (:func:`chunkstore.read.mix.mix`).

``MixtureDataset(paths, weights=...)`` holds only the paths and options, pickles cheaply into
``DataLoader`` workers, and reopens the stores in each process. Inside worker ``j`` of ``k``
the mixture yields its rank's batches ``j, j + k, ...``, the order the DataLoader collects
them in, so a rank's batches do not depend on ``num_workers``. Labels come out as int64
(missing heads -100), other arrays keep their dtype.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

from chunkstore.errors import MissingDependencyError

try:
    from torch.utils import data as tud
except ImportError as e:  # pragma: no cover - exercised only without torch
    raise MissingDependencyError(
        "chunkstore.torch needs PyTorch: pip install 'chunkstore[torch]'") from e

from chunkstore.interop.torch import to_torch
from chunkstore.read.mix import Mixture
from chunkstore.store.view import StoreView


class MixtureDataset(tud.IterableDataset):  # type: ignore[misc]
    """Mixed batches of several stores for ``DataLoader(ds, batch_size=None, num_workers=k)``.

    Parameters are those of :func:`chunkstore.mix`, with store paths instead of open stores,
    plus ``rank`` and ``world_size`` (given explicitly; no process group needed).

    Resume: ``state = ds.state_dict(batches_this_rank_consumed)``, then on any world size
    and ``num_workers``, ``MixtureDataset(..., rank=r, world_size=w).load_state_dict(state)``.
    """

    def __init__(self, paths: Sequence[str], *, weights: Sequence[float], rank: int = 0,
                 world_size: int = 1, **options: Any) -> None:
        super().__init__()
        self.paths, self.weights = [str(p) for p in paths], list(weights)
        self.rank, self.world_size, self.options = rank, world_size, dict(options)
        self.epoch = 0
        self._state: dict[str, Any] | None = None
        self._mixture: tuple[int, Mixture] | None = None
        self.mixture()  # validate now, in the main process

    def mixture(self) -> Mixture:
        """This process's mixture (stores opened once per process), at the epoch and state."""
        if self._mixture is None or self._mixture[0] != os.getpid():
            base = Mixture([StoreView(p) for p in self.paths], weights=self.weights,
                           **self.options)
            self._mixture = (os.getpid(), base)
        m = self._mixture[1].shard(self.rank, self.world_size)
        m.set_epoch(self.epoch)
        if self._state is not None:
            m.load_state_dict(self._state)
        return m

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch`` next (a loaded state of another epoch is dropped)."""
        if int(epoch) != self.epoch:
            self._state = None
        self.epoch = int(epoch)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume the next iteration at ``state`` (any rank's, any world size)."""
        self._state = dict(state)
        self.epoch = int(state["epoch"])
        self.mixture()

    def state_dict(self, batches: int) -> dict[str, Any]:
        """The state once this rank (and every rank, in lockstep) consumed ``batches``."""
        return self.mixture().state_after(batches)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_mixture"] = None
        return state

    def __iter__(self) -> Iterator[dict[str, Any]]:
        in_worker = tud.get_worker_info() is not None
        for batch in self.mixture():
            yield to_torch(batch, pack=in_worker)
