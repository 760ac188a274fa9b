"""scikit-learn out of core: ``partial_fit`` an estimator over the shuffled batch loader.

``ds.partial_fit(SGDClassifier(), split="train", label="target", epochs=5, normalize=True)``
feeds the estimator one loader batch at a time: every row of the split once per epoch, in the
loader's chunk-aware shuffled order (deterministic for ``seed`` and the epoch), optionally
normalized with ``stats/train``. Memory is the loader's window of decoded chunks, never the
dataset.

It works with any object that has ``partial_fit`` (SGDClassifier/SGDRegressor,
MiniBatchKMeans, IncrementalPCA, MultinomialNB, ...), so it needs no chunkstore extra and does
not import scikit-learn: an estimator whose ``partial_fit`` takes ``classes=`` gets the label
head's classes ``0..K-1`` (or ``classes=``); one without a ``label`` gets ``partial_fit(X)``.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np
from numpy.typing import ArrayLike

from chunkstore.errors import ReadError, UsageError
from chunkstore.interop.training import Parts, resolve
from chunkstore.read.loader import Loader
from chunkstore.store import layout
from chunkstore.store.view import StoreView

E = TypeVar("E")


def partial_fit(view: StoreView, estimator: E, *, split: str | Parts | None = "train",
                label: str | None = None, batch_size: int = 4096, epochs: int = 1,
                classes: ArrayLike | None = None, normalize: bool = False,
                fill_nan: float | None = None, splits: str = layout.DEFAULT_SPLITS,
                seed: int = 0, window_chunks: int = 8, threads: int = 2) -> E:
    """Train ``estimator`` with ``partial_fit`` over the loader's batches of ``split``.

    Parameters
    ----------
    view : an open store (``ds.partial_fit(...)`` passes itself).
    estimator : any object with ``partial_fit(X[, y[, classes=]])``; returned, trained.
    split : a part of ``splits/<splits>`` ("train"), ``"cv/fold0"``, a fold side (``train``
        or ``valid`` of ``ds.folds(...)``: k-1 parts or one), or None for every row.
    label : the head whose labels are ``y``; None calls ``partial_fit(X)`` (clustering, PCA).
    batch_size : rows per ``partial_fit`` call.
    epochs : passes over the split; epoch ``e`` is shuffled with ``(seed, e)``.
    classes : passed as ``classes=`` when ``partial_fit`` takes it; default ``0..K-1`` of
        the label head.
    normalize : ``(x - mean) / std`` with the train part's statistics of the split set:
        ``stats/train`` (``chunkstore stats STORE --split train`` writes them), or
        ``stats/<splits>/train`` for another split set; never statistics that saw validation
        rows. (For folds, compute them per fold or leave features unnormalized.)
    fill_nan : replace NaN features with this value (after normalizing, 0.0 is the train
        mean); None passes NaN through, which most scikit-learn estimators reject.
    splits : the split array ``split`` is looked up in.
    seed, window_chunks, threads : as for :meth:`chunkstore.Dataset.loader`.

    Raises
    ------
    ReadError
        On an unknown head or split, missing ``stats/train`` with ``normalize``, or unwritten
        (label -1) rows.
    UsageError
        If the estimator has no ``partial_fit`` or ``epochs < 1``.

    Examples
    --------
    >>> from sklearn.linear_model import SGDClassifier  # doctest: +SKIP
    >>> clf = ds.partial_fit(SGDClassifier(loss="log_loss"), split="train",  # doctest: +SKIP
    ...                      label="target", epochs=3, normalize=True, fill_nan=0.0)
    """
    fit = getattr(estimator, "partial_fit", None)
    if not callable(fit):
        raise UsageError(f"{type(estimator).__name__} has no partial_fit(); use an estimator "
                         "that learns incrementally (SGDClassifier, MiniBatchKMeans, "
                         "IncrementalPCA, ...)")
    if epochs < 1:
        raise UsageError(f"epochs must be >= 1, found {epochs}")
    parts = resolve(split, splits)
    heads = [] if label is None else [label]
    if label is not None and label not in view.heads:
        raise ReadError(f"label={label!r} is not a head of store {view.path!r}; its heads are "
                        f"{list(view.heads)}")
    kwargs = _classes_kwarg(fit, view, label, classes)
    loader = Loader(view, batch_size=batch_size, splits=parts.splits if parts else splits,
                    rows=None if parts is None else parts.mask(view), shuffle=True, seed=seed,
                    window_chunks=window_chunks, normalize=normalize, heads=heads,
                    threads=threads)
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for batch in loader:
            x = batch["features"]
            if fill_nan is not None:
                x = np.where(np.isnan(x), np.float32(fill_nan), x)
            if label is None:
                fit(x)
                continue
            y = batch["labels"][label]
            if len(y) and y.min() < 0:
                raise ReadError(f"labels/{label} of store {view.path!r} holds -1 (rows not "
                                "written yet); finish the ingest or train on a split without "
                                "them")
            fit(x, y, **kwargs)
    return estimator


def _classes_kwarg(fit: Any, view: StoreView, label: str | None,
                   classes: ArrayLike | None) -> dict[str, Any]:
    """``{"classes": ...}`` when ``partial_fit`` takes it and there is a label, else ``{}``."""
    try:
        takes = "classes" in inspect.signature(fit).parameters
    except (TypeError, ValueError):  # a builtin without a signature: do not guess
        takes = False
    if label is None or not takes:
        return {}
    chosen: Sequence[int] | ArrayLike = (np.arange(view.heads[label]) if classes is None
                                         else classes)
    return {"classes": np.asarray(chosen)}
