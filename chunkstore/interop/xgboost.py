"""XGBoost straight from the store: an ``xgboost.DataIter`` over whole chunks -> QuantileDMatrix.

xgboost is an optional extra (``pip install 'chunkstore[xgboost]'``, the CPU-only
``xgboost-cpu`` wheel); importing this module imports it, and nothing else in chunkstore does.

``ds.to_xgboost(split="train", label="target")`` builds a :class:`xgboost.QuantileDMatrix`
from :class:`StoreIter`, which hands XGBoost a few decoded chunks at a time (the next batch is
decoded in the background while XGBoost sketches the current one). XGBoost keeps only its
quantised copy of the data (about one byte per value with ``max_bin <= 256``), so the peak
memory is that plus a few chunks, not the float32 matrix. ``external_memory=True`` builds an
:class:`xgboost.ExtMemQuantileDMatrix` instead: XGBoost pages the quantised batches to files
under ``cache_dir`` and trains from them, for data whose quantised copy does not fit in RAM.

NaN features stay missing (``missing=nan``). Masks are ignored unless ``weight="mask"``
makes the label head's mask at the labelled class the sample weight (see
:class:`~chunkstore.interop.training.StoreBatches`).
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
from numpy.typing import NDArray

from chunkstore.errors import MissingDependencyError, ReadError

try:
    import xgboost as xgb
except ImportError as e:
    raise MissingDependencyError(
        "Dataset.to_xgboost() needs XGBoost: pip install 'chunkstore[xgboost]' (or the "
        "CPU-only wheel directly: pip install xgboost-cpu)") from e

from chunkstore.interop.training import Parts, StoreBatches, membership
from chunkstore.store import layout
from chunkstore.store.view import StoreView


class StoreIter(xgb.DataIter):  # type: ignore[misc]  # xgboost ships no type for subclassing
    """An ``xgboost.DataIter`` over :class:`StoreBatches`, one batch decoded ahead.

    Parameters
    ----------
    batches : the rows to feed, a few whole chunks per batch.
    cache_prefix : where ExtMemQuantileDMatrix pages its cache; None for in-memory matrices.
    """

    def __init__(self, batches: StoreBatches, cache_prefix: str | None = None) -> None:
        super().__init__(cache_prefix=cache_prefix, release_data=True)
        self.batches = batches
        self._pos = 0
        self._ahead: Future[dict[str, NDArray[Any]]] | None = None
        self._reader: ThreadPoolExecutor | None = None

    def reset(self) -> None:
        """Back to the first batch (XGBoost passes over the data more than once)."""
        if self._ahead is not None:
            self._ahead.cancel()
            self._ahead = None
        self._pos = 0

    def next(self, input_data: Callable[..., None]) -> bool:
        """Hand XGBoost the next batch; False (and threads stopped) after the last."""
        if self._pos >= len(self.batches):
            self._close()
            return False
        if self._reader is None:  # one thread reads ahead; decoding uses the batches' pool
            self._reader = ThreadPoolExecutor(1, thread_name_prefix="chunkstore-xgb")
        now = self._ahead or self._reader.submit(self.batches.read, self._pos)
        self._pos += 1
        self._ahead = (self._reader.submit(self.batches.read, self._pos)
                       if self._pos < len(self.batches) else None)
        batch = now.result()
        input_data(data=batch["features"], label=batch.get("label"),
                   weight=batch.get("weight"))
        return True

    def _close(self) -> None:
        if self._reader is not None:
            self._reader.shutdown()
            self._reader = None
        self.batches.close()


def to_xgboost(view: StoreView, split: str | Parts | None = None, label: str | None = None, *,
               splits: str = layout.DEFAULT_SPLITS, weight: str | None = None,
               missing: float = np.nan, ref: xgb.DMatrix | None = None,
               max_bin: int | None = None, nthread: int | None = None,
               external_memory: bool = False, cache_dir: str | None = None,
               batch_bytes: float = 32 * 2**20, threads: int = 2) -> xgb.DMatrix:
    """The rows of ``split`` as an XGBoost ``QuantileDMatrix`` read chunk by chunk.

    Parameters
    ----------
    view : an open store (``ds.to_xgboost(...)`` passes itself).
    split : ``"train"`` (a part of ``splits/<splits>``), ``"cv/fold0"``, a fold side from
        ``ds.folds(...)``, or None for every row.
    label : the head whose labels are the target; None for a matrix to predict on.
    splits : the split array ``split`` is looked up in.
    weight : None ignores masks; ``"mask"`` weighs each row by its label head's mask at the
        labelled class; or the path of an (N,) array in the store, e.g. ``"meta/weight"``.
    missing : the feature value XGBoost treats as missing (NaN: NaN stays missing).
    ref : the training matrix whose quantile cuts a validation matrix must share.
    max_bin, nthread : as for ``xgboost.QuantileDMatrix`` (None: XGBoost's defaults).
    external_memory : build an ``ExtMemQuantileDMatrix`` (pages cached under ``cache_dir``).
    cache_dir : directory of the external-memory cache (default: the system temp directory).
    batch_bytes : decoded feature bytes per batch handed to XGBoost (whole chunks).
    threads : chunk-decoding threads.

    Raises
    ------
    ReadError
        On an unknown head or weight, an empty selection, or unwritten (label -1) rows.
    SplitLookupError
        If the split array or part does not exist.

    Examples
    --------
    >>> dtrain = ds.to_xgboost(split="train", label="target")  # doctest: +SKIP
    >>> dvalid = ds.to_xgboost(split="val", label="target", ref=dtrain)  # doctest: +SKIP
    >>> booster = xgboost.train({"tree_method": "hist"}, dtrain, 100,  # doctest: +SKIP
    ...                         evals=[(dvalid, "val")])
    """
    batches = StoreBatches(view, member=membership(view, split, splits), label=label,
                           weight=weight, batch_bytes=batch_bytes, threads=threads)
    if batches.rows == 0:
        raise ReadError(f"split {split!s} of store {view.path!r} holds no rows; XGBoost "
                        "needs at least one")
    if not external_memory:
        return xgb.QuantileDMatrix(StoreIter(batches), missing=missing, ref=ref,
                                   max_bin=max_bin, nthread=nthread)
    # XGBoost writes its page files under this prefix and removes them with the matrix
    prefix = os.path.join(cache_dir or tempfile.gettempdir(), f"chunkstore-{uuid.uuid4().hex}")
    return xgb.ExtMemQuantileDMatrix(StoreIter(batches, cache_prefix=prefix), missing=missing,
                                     ref=ref, max_bin=max_bin, nthread=nthread)
