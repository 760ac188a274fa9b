"""PyTorch adapters: :class:`IterableDataset` (the shuffled loader) and :class:`MapDataset`.

torch is an optional extra (``pip install 'chunkstore[torch]'``): importing this module imports
torch, and nothing else in chunkstore does. Both classes hold only the store's path and their
options, so they pickle cheaply into ``DataLoader`` workers, and each worker (re)opens the store
itself: no file handle or zarr object is shared between processes.

- ``IterableDataset`` yields whole batches from :meth:`chunkstore.Dataset.loader` (or
  sequence-window batches with ``lookback=``). The fast way is to iterate it in the training
  process (``for batch in ds``): the loader already decodes in background threads (Blosc
  releases the GIL), and tensors share the decoded memory, so nothing is copied between
  processes. It also works in ``DataLoader(ds, batch_size=None, num_workers=k)``: worker
  ``i`` of ``k`` yields the rank's batches ``i, i + k, ...``, and the workers decode each
  window together into shared memory they inherit from the training process (each decodes
  ``1/k`` of its chunks; :mod:`chunkstore.read.shared`), so every row is seen once per epoch
  across all workers (and ranks); each batch then crosses a process boundary (one
  shared-memory segment).
- ``MapDataset`` gives row ``i`` (of a split) for samplers that need ``__getitem__``; reads go
  through the dataset's decoded-chunk cache, and ``__getitems__`` reads a sampler's whole batch
  at once.

Labels come out as ``torch.int64`` (what the loss functions take); other arrays keep their
stored dtype.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from chunkstore.errors import ChunkstoreWarning, MissingDependencyError, ReadError

try:
    import torch
    from torch.utils import data as tud
except ImportError as e:  # pragma: no cover - exercised only without torch
    raise MissingDependencyError(
        "chunkstore.torch needs PyTorch: pip install 'chunkstore[torch]' (or a CPU build: "
        "pip install torch --index-url https://download.pytorch.org/whl/cpu)") from e

from chunkstore.read.loader import WINDOW_BYTES, Loader, split_membership
from chunkstore.read.rows import RowReader
from chunkstore.read.shared import shared_windows
from chunkstore.read.windows import Windows
from chunkstore.store.view import StoreView


def to_torch(batch: dict[str, Any], *, pack: bool = False, pin: bool = False
             ) -> dict[str, Any]:
    """A loader batch (nested dict of numpy arrays) as tensors.

    Labels become ``torch.int64``; everything else keeps its dtype. Without ``pack`` the
    tensors share the batch's memory. With ``pack`` every tensor is a view into one new
    buffer: a DataLoader worker then sends the batch to the main process as one shared-memory
    segment instead of one per array (~1 ms each), the difference between tens and thousands
    of batches per second. With ``pin`` that buffer is page-locked (pinned) memory, so
    ``.to("cuda", non_blocking=True)`` copies asynchronously; it needs an accelerator.
    """
    if not pack and not pin:
        return {k: {h: _tensor(a, k == "labels") for h, a in v.items()} if isinstance(v, dict)
                else _tensor(v, False) for k, v in batch.items()}
    leaves = [(k, h, np.asarray(a), k == "labels") for k, v in batch.items()
              for h, a in (v.items() if isinstance(v, dict) else [(None, v)])]
    dtypes = [torch.int64 if label else torch.from_numpy(a[:0]).dtype
              for _, _, a, label in leaves]
    offsets, total = [], 0
    for (_, _, a, _), dt in zip(leaves, dtypes, strict=True):
        offsets.append(total)
        total += -(-a.size * dt.itemsize // 64) * 64  # 64-byte aligned segments
    buf = torch.empty(total, dtype=torch.uint8, pin_memory=True) if pin else _shared_bytes(total)
    out: dict[str, Any] = {k: {} for k, v in batch.items() if isinstance(v, dict)}
    for (k, h, a, _), dt, off in zip(leaves, dtypes, offsets, strict=True):
        t = buf[off:off + a.size * dt.itemsize].view(dt).view(a.shape)
        t.copy_(torch.from_numpy(np.ascontiguousarray(a)))
        if h is None:
            out[k] = t
        else:
            out[k][h] = t
    return out


def _shared_bytes(n: int) -> torch.Tensor:
    """``n`` bytes allocated in shared memory at once (as torch's own default_collate does in
    workers), so sending them to the main process copies nothing."""
    try:
        storage = torch.empty(0, dtype=torch.uint8)._typed_storage()._new_shared(n)
        return torch.empty(0, dtype=torch.uint8).new(storage)
    except (AttributeError, RuntimeError):  # private API gone: a plain buffer still works
        return torch.empty(n, dtype=torch.uint8)


def can_pin() -> bool:
    """Whether this torch build has an accelerator, hence pinned memory."""
    acc = getattr(torch, "accelerator", None)
    return bool(acc.is_available() if acc is not None else torch.cuda.is_available())


def _tensor(a: Any, label: bool) -> torch.Tensor:
    """Labels as int64 (converted by numpy: ~10x cheaper than ``Tensor.long()`` for a batch's
    few hundred values), everything else sharing the array's memory."""
    if label:
        return torch.from_numpy(np.asarray(a).astype(np.int64))
    return torch.from_numpy(a) if isinstance(a, np.ndarray) else torch.as_tensor(a)


class _Reopening:
    """Opens the store lazily, once per process, and never pickles the open handle."""

    path: str
    _ds: StoreView | None = None
    _pid: int | None = None
    _stream: Any = None  # IterableDataset's loader, built once per process
    _stream_pid: int | None = None

    def dataset(self) -> StoreView:
        if self._ds is None or self._pid != os.getpid():
            self._ds, self._pid = StoreView(self.path), os.getpid()
        return self._ds

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for handle in ("_ds", "_pid", "_reader", "_reader_pid", "_stream", "_stream_pid",
                       "_shared"):
            state.pop(handle, None)
        return state


class IterableDataset(_Reopening, tud.IterableDataset):  # type: ignore[misc]
    """Shuffled batches of a store for ``DataLoader(ds, batch_size=None, num_workers=k)``.

    Parameters
    ----------
    path : the store.
    batch_size, split, shuffle, seed, window_chunks, window_bytes, prefetch, drop_last,
    normalize, heads, splits, threads : as for :meth:`chunkstore.Dataset.loader` (the window
    is a byte budget by default; sequence windows use 8 chunks unless ``window_chunks``).
    lookback, horizon, by : when ``lookback`` is given, yield batches of sequence windows
        instead (see :meth:`chunkstore.Dataset.windows`).
    rank, world_size : this process's rank in distributed training, given explicitly (no
        process group needed).
    remainder, elastic : as for :meth:`chunkstore.Dataset.loader`. Elastic (default): a
        rank's batches are the same, in the same order, for any ``num_workers``, and every
        rank yields the same number of batches.
    pin_memory : iterated in the training process, yield each batch in one pinned buffer
        (ready for ``non_blocking`` copies to the GPU). Without an accelerator this warns once
        and yields ordinary CPU tensors, as ``DataLoader(pin_memory=True)`` does. In
        DataLoader workers use the DataLoader's own ``pin_memory=True`` instead.
    unique : only first occurrences of duplicate rows (needs ``chunkstore dedup STORE``).

    Resume: count the batches this rank consumed in the epoch and save
    ``ds.state_dict(batches)`` (DataLoader workers' positions are invisible to the main
    process, so the count is the caller's); on any world size and ``num_workers``,
    ``IterableDataset(..., rank=r, world_size=w).load_state_dict(state)`` continues with
    exactly the rest of that epoch's global order.

    Call :meth:`set_epoch` before iterating the DataLoader each epoch: workers get a fresh
    copy of this object per epoch, except with ``persistent_workers=True``, where they keep
    the epoch they started with.

    Examples
    --------
    >>> from chunkstore.torch import IterableDataset  # doctest: +SKIP
    >>> ds = IterableDataset("data/demo.zarr", batch_size=256, split="train")
    >>> dl = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
    >>> for epoch in range(10):
    ...     ds.set_epoch(epoch)
    ...     for batch in dl:
    ...         loss = model(batch["features"], batch["labels"]["action_type"])
    """

    def __init__(self, path: str, *, batch_size: int = 256, split: str | None = None,
                 shuffle: bool = True, seed: int = 0, window_chunks: int | None = None,
                 prefetch: int = 1, drop_last: bool = False, normalize: bool = False,
                 heads: Sequence[str] | None = None, splits: str = "default",
                 threads: int = 2, lookback: int | None = None, horizon: int = 0,
                 by: str | None = "group", rank: int = 0, world_size: int = 1,
                 unique: bool = False, pin_memory: bool = False,
                 remainder: str | None = None, elastic: bool = True,
                 window_bytes: int = WINDOW_BYTES) -> None:
        super().__init__()
        self.path = str(path)
        self.options: dict[str, Any] = dict(
            batch_size=batch_size, shuffle=shuffle, seed=seed, window_chunks=window_chunks,
            prefetch=prefetch, drop_last=drop_last, normalize=normalize, threads=threads,
            remainder=remainder, elastic=elastic)
        self.window_bytes = window_bytes
        self.split, self.splits, self.heads = split, splits, heads
        self.lookback, self.horizon, self.by = lookback, horizon, by
        self.rank, self.world_size = rank, world_size
        self.unique = unique
        self.pin_memory = bool(pin_memory) and can_pin()
        if pin_memory and not self.pin_memory:
            warnings.warn("pin_memory=True but this torch build has no accelerator (no "
                          "pinned memory allocator): batches stay ordinary CPU tensors",
                          ChunkstoreWarning, stacklevel=2)
        if unique and lookback is not None:
            raise ReadError("unique=True applies to row batches, not sequence windows "
                            "(lookback=): a window needs its consecutive rows")
        self.epoch = 0
        self._state: dict[str, Any] | None = None
        stream = self.loader()  # validate every option now, in the main process
        # window slots that forked DataLoader workers inherit and decode into together
        self._shared = (shared_windows(stream.window_layout(), stream.prefetch + 1)
                        if lookback is None and stream.elastic else None)

    def set_epoch(self, epoch: int) -> None:
        """Use the shuffle order of ``epoch`` for the next iteration (a loaded state of
        another epoch is dropped)."""
        if int(epoch) != self.epoch:
            self._state = None
        self.epoch = int(epoch)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume the next iteration at ``state`` (:meth:`state_dict` of any rank, or a
        loader's ``state_dict()``), whatever world size and ``num_workers`` it ran with.

        Raises
        ------
        ReadError
            If the state belongs to a differently ordered stream (seed, window, split, ...).
        """
        self._state = dict(state)
        self.epoch = int(state["epoch"])
        self.loader()  # check it now, in the main process

    def state_dict(self, batches: int) -> dict[str, Any]:
        """The state once this rank (and, in lockstep, every rank) has consumed ``batches``
        batches of the current iteration (counted from the loaded state, if any)."""
        return self.loader().state_after(batches)  # type: ignore[no-any-return]

    def loader(self) -> Any:
        """The underlying loader (row or window), for this process's store handle, at the
        current epoch and loaded state. Built once per process and reused across epochs, so
        what it keeps between epochs (labels and masks decoded once, see
        :mod:`chunkstore.read.small`) is kept."""
        if self._stream is None or self._stream_pid != os.getpid():
            self._stream, self._stream_pid = self._new_stream(), os.getpid()
        stream = self._stream
        stream.set_epoch(self.epoch)
        if self._state is not None:
            stream.load_state_dict(self._state)
        return stream

    def _new_stream(self) -> Any:
        ds = self.dataset()
        if self.lookback is None:
            stream: Any = Loader(ds, split=self.split, splits=self.splits, heads=self.heads,
                                 unique=self.unique, window_bytes=self.window_bytes,
                                 **self.options)
        else:  # sequence windows: a window of chunks (8 unless given)
            options = {**self.options, "window_chunks": self.options["window_chunks"] or 8}
            stream = Windows(ds, lookback=self.lookback, horizon=self.horizon, by=self.by,
                             split=self.split, splits=self.splits,
                             heads=self.heads).loader(**options)
        stream = stream.shard(self.rank, self.world_size)
        if tud.get_worker_info() is not None:
            stream.shared = getattr(self, "_shared", None)
        return stream

    def __iter__(self) -> Iterator[dict[str, Any]]:
        in_worker = tud.get_worker_info() is not None
        pin = self.pin_memory and not in_worker
        for batch in self.loader():
            yield to_torch(batch, pack=in_worker, pin=pin)


class MapDataset(_Reopening, tud.Dataset):  # type: ignore[misc]
    """Row ``i`` of a store (or of one split) as a dict of tensors, for any sampler.

    ``item = {"features": (F,), "labels": {head: ()}, "masks": {head: (K,)}, "index": ()}``.
    Random rows each decode a whole chunk unless it is cached; prefer :class:`IterableDataset`
    for shuffled training.
    """

    _reader: RowReader | None = None
    _reader_pid: int | None = None

    def __init__(self, path: str, *, split: str | None = None, splits: str = "default",
                 heads: Sequence[str] | None = None) -> None:
        self.path = str(path)
        ds = self.dataset()
        member = split_membership(ds, split, splits)
        self.rows = (np.arange(ds.n_samples, dtype=np.int64) if member is None
                     else np.flatnonzero(member).astype(np.int64))
        self.heads = list(ds.heads) if heads is None else list(heads)
        unknown = sorted(set(self.heads) - set(ds.heads))
        if unknown:
            raise ReadError(f"unknown head(s) {unknown} for store {self.path!r}; its heads are "
                            f"{list(ds.heads)}")

    def __len__(self) -> int:
        return len(self.rows)

    def _read(self, idx: Any) -> dict[str, Any]:
        if self._reader is None or self._reader_pid != os.getpid():
            self._reader, self._reader_pid = RowReader(self.dataset(), self.heads), os.getpid()
        return self._reader[self.rows[idx]]

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} is out of range for {len(self)} rows")
        return to_torch(self._read(int(i)))

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """A sampler's whole batch in one read (rows grouped by chunk), one dict per row."""
        batch = to_torch(self._read(np.asarray(indices, dtype=np.int64)))
        return [{k: ({h: t[j] for h, t in v.items()} if isinstance(v, dict) else v[j])
                 for k, v in batch.items()} for j in range(len(indices))]
