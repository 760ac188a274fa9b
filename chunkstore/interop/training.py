"""Which rows a model trains on: parts of a split array, and the folds of a k-fold split set.

Shared by :mod:`chunkstore.interop.xgboost` and :mod:`chunkstore.interop.sklearn`; needs no
optional dependency. Membership always goes through the store's one rule,
:meth:`StoreView.split_array(name).mask(part) <chunkstore.store.view.StoreView.split_array>`.

- :class:`Parts`: the rows of one or more parts of ``splits/<name>`` (``("fold1", "fold2")``).
- :class:`StoreBatches`: those rows as (features, label, weight) batches of a few whole
  chunks, what the XGBoost iterator feeds on.
- :func:`folds`: for ``splits/<name>`` written with ``--method kfold``, one :class:`Fold` per
  fold: ``valid`` is that fold, ``train`` the other ``k - 1``. Grouped k-fold keeps every
  group inside one fold, so no group is ever on both sides.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from chunkstore.core.plan import whole_chunk_rows
from chunkstore.errors import ReadError, SplitError, UsageError
from chunkstore.store import layout
from chunkstore.store.chunkfiles import ChunkSource, chunk_source, read_chunk
from chunkstore.store.view import StoreView


@dataclass(frozen=True)
class Parts:
    """The rows of ``parts`` of ``splits/<splits>``; pass it as ``split=`` to a trainer.

    Attributes
    ----------
    splits : the split array's name under ``splits/``.
    parts : the part names whose rows are selected (their union).
    """

    splits: str
    parts: tuple[str, ...]

    def mask(self, view: StoreView) -> NDArray[np.bool_]:
        """Boolean (N,) membership: a row is in if it is in any of ``parts``."""
        resolved = view.split_array(self.splits)
        member = np.zeros(view.n_samples, dtype=bool)
        for part in self.parts:
            member |= resolved.mask(part)
        return member

    def __str__(self) -> str:
        return f"splits/{self.splits}:{'+'.join(self.parts)}"


class Fold(NamedTuple):
    """One fold of a k-fold split set: ``for train, valid in ds.folds("cv")``."""

    train: Parts
    valid: Parts

    @property
    def name(self) -> str:
        """The held-out fold's part name, e.g. ``"fold2"``."""
        return self.valid.parts[0]


def resolve(split: str | Parts | None, splits: str = layout.DEFAULT_SPLITS) -> Parts | None:
    """``split=`` as a trainer takes it -> :class:`Parts` (None = every row).

    ``"train"`` is part ``train`` of ``splits/<splits>``; ``"cv/fold3"`` is part ``fold3`` of
    ``splits/cv``; a :class:`Parts` (e.g. a fold's side) is taken as is.

    Raises
    ------
    UsageError
        If ``split`` names a split array other than a non-default ``splits``.
    """
    if split is None:
        return None
    if isinstance(split, Parts):
        if splits not in (layout.DEFAULT_SPLITS, split.splits):
            raise UsageError(f"split={split} is part of splits/{split.splits} but "
                             f"splits={splits!r} was given; drop splits=")
        return split
    array, _, part = split.rpartition("/")
    if array and splits not in (layout.DEFAULT_SPLITS, array):
        raise UsageError(f"split={split!r} names splits/{array} but splits={splits!r} was "
                         "given; give one of them")
    return Parts(array or splits, (part,))


def membership(view: StoreView, split: str | Parts | None,
               splits: str = layout.DEFAULT_SPLITS) -> NDArray[np.bool_] | None:
    """Boolean (N,) rows of ``split`` (see :func:`resolve`); None for every row."""
    parts = resolve(split, splits)
    return None if parts is None else parts.mask(view)


def folds(view: StoreView, name: str) -> list[Fold]:
    """The (train, valid) folds of the k-fold split array ``splits/<name>``.

    Parameters
    ----------
    view : an open store.
    name : a split array written with ``chunkstore split STORE --method kfold --k K
        [--group] --split-set NAME``.

    Returns
    -------
    list[Fold]
        ``k`` folds in code order; fold ``i`` validates on ``fold<i>`` and trains on the rest.

    Raises
    ------
    SplitError
        If ``splits/<name>`` was not written by the kfold method (or has fewer than 2 parts).
    SplitLookupError
        If there is no such complete split array (the message says what to run).

    Examples
    --------
    >>> for train, valid in ds.folds("cv"):  # doctest: +SKIP
    ...     dtrain = ds.to_xgboost(split=train, label="target")
    ...     dvalid = ds.to_xgboost(split=valid, label="target", ref=dtrain)
    """
    resolved = view.split_array(name)
    method = resolved.array.attrs.get("method")
    if method != "kfold" or len(resolved.names) < 2:
        raise SplitError(
            f"splits/{name} of store {view.path!r} is not a k-fold split set (method "
            f"{method!r}, parts {list(resolved.names)}); write one with `chunkstore split "
            f"{view.path} --method kfold --k 5 [--group] --split-set {name}`")
    names: Sequence[str] = resolved.names
    return [Fold(Parts(name, tuple(p for p in names if p != held)), Parts(name, (held,)))
            for held in names]



class StoreBatches:
    """The rows of a selection read a few whole chunks at a time, in store order.

    Batch ``i`` is ``{"features": (b, F) float32, "label": (b,), "weight": (b,) float32}``
    (label and weight only when asked for). Chunks without a selected row are never read, and
    a batch holds about ``batch_bytes`` of decoded features, so memory stays at a few chunks
    whatever the store's size.

    Parameters
    ----------
    view : an open store.
    member : boolean (N,) rows to keep (see :func:`membership`); None keeps every row.
    label : the head whose labels are the target; None reads no labels.
    weight : None (no weights: masks are ignored); ``"mask"``: the label head's mask at the
        labelled class (1 if that class was allowed, so rows whose label was masked out weigh
        0); or the path of an (N,) array in the store, e.g. ``"meta/weight"``.
    batch_bytes : decoded feature bytes per batch (rounded to whole chunks, at least one).
    threads : chunk-decoding threads.

    Raises
    ------
    ReadError
        On an unknown head, a weight that is not an (N,) array, or ``"mask"`` without a label.
    """

    def __init__(self, view: StoreView, *, member: NDArray[np.bool_] | None,
                 label: str | None, weight: str | None, batch_bytes: float = 32 * 2**20,
                 threads: int = 2) -> None:
        self.path, self.threads = view.path, max(1, threads)
        self.sources = {"features": chunk_source("features", view.features, view.n_samples),
                        **_target_sources(view, label, weight)}
        self.member = member
        self.label, self.weight = label, weight
        n, r = view.n_samples, view.chunk_rows
        starts = np.arange(0, n, r)
        counts = (np.add.reduceat(member.astype(np.int64), starts) if member is not None
                  else np.minimum(r, n - starts)) if n else np.zeros(0, np.int64)
        self.rows = int(np.sum(counts))
        chunks = np.flatnonzero(counts > 0)
        row_bytes = int(np.prod(view.features.shape[1:])) * 4
        per = whole_chunk_rows(r, row_bytes, batch_bytes) // r
        self.batches = [chunks[i:i + per] for i in range(0, len(chunks), per)]
        self._pool: ThreadPoolExecutor | None = None

    def __len__(self) -> int:
        return len(self.batches)

    def read(self, i: int) -> dict[str, NDArray[Any]]:
        """Batch ``i``: decode its chunks (in parallel), keep the selected rows."""
        chunks = self.batches[i]
        src = self.sources["features"]
        r = src.chunk_rows
        bufs = {k: np.empty((len(chunks) * r, *s.shape[1:]), s.dtype)
                for k, s in self.sources.items()}
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="chunkstore-train")
        jobs = [(k, j, int(c)) for k in self.sources for j, c in enumerate(chunks)]
        list(self._pool.map(lambda t: read_chunk(self.sources[t[0]], t[2],
                                                 out=bufs[t[0]][t[1] * r:(t[1] + 1) * r]), jobs))
        keep = np.concatenate([j * r + self._local_rows(int(c), src.rows_in(int(c)))
                               for j, c in enumerate(chunks)])
        whole = len(keep) == 0 or keep[-1] == len(keep) - 1  # a prefix: slice, no copy
        out = {k: b[:len(keep)] if whole else b[keep] for k, b in bufs.items()}
        out["features"] = out["features"].astype(np.float32, copy=False)
        return self._targets(out, chunks)

    def _local_rows(self, c: int, rows: int) -> NDArray[np.int64]:
        if self.member is None:
            return np.arange(rows, dtype=np.int64)
        lo = c * self.sources["features"].chunk_rows
        return np.flatnonzero(self.member[lo:lo + rows]).astype(np.int64)

    def _targets(self, out: dict[str, NDArray[Any]], chunks: NDArray[np.int64]
                 ) -> dict[str, NDArray[Any]]:
        if "label" in out:
            bad = np.flatnonzero(out["label"] < 0)
            if len(bad):
                raise ReadError(
                    f"labels/{self.label} of store {self.path!r} holds {len(bad)} negative "
                    f"label(s) in chunks {int(chunks[0])}..{int(chunks[-1])}: rows not written "
                    "yet read as -1. Finish the ingest (rerun it) or train on a split without "
                    "them")
        if "mask" in out:
            mask = out.pop("mask")
            out["weight"] = mask[np.arange(len(mask)), out["label"]].astype(np.float32)
        elif "weight" in out:
            out["weight"] = out["weight"].astype(np.float32, copy=False)
        return out

    def close(self) -> None:
        """Stop the decoding threads (a later :meth:`read` starts new ones)."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


def _target_sources(view: StoreView, label: str | None, weight: str | None
                    ) -> dict[str, ChunkSource]:
    """Chunk sources of the label (and mask, or weight array) a trainer asked for."""
    out: dict[str, ChunkSource] = {}
    if label is not None:
        if label not in view.heads:
            raise ReadError(f"label={label!r} is not a head of store {view.path!r}; its heads "
                            f"are {list(view.heads)}")
        out["label"] = chunk_source(layout.label_path(label), view.labels[label],
                                    view.n_samples)
    if weight == "mask":
        if label is None:
            raise ReadError("weight='mask' weighs each row by its label head's mask at the "
                            "labelled class, so it needs label=<head>")
        out["mask"] = chunk_source(layout.mask_path(label), view.masks[label],
                                   view.n_samples)
    elif weight is not None:
        try:
            array = view.array(weight)
        except KeyError:
            array = None
        if array is None or tuple(array.shape) != (view.n_samples,):
            raise ReadError(f"weight={weight!r}: expected None, 'mask' or the path of an "
                            f"({view.n_samples},) array in store {view.path!r}, found "
                            f"{'no such array' if array is None else array.shape}")
        out["weight"] = chunk_source(weight, array)
    return out
