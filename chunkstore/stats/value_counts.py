"""Value counts of integer features: the token frequency table of a language-model corpus.

``value_counts(x, vocab_size)`` counts every feature value of every (selected) row: one
``np.bincount`` per stored chunk, summed pairwise by Dask, so memory is one decoded chunk plus
a few ``(vocab_size,)`` int64 vectors per thread whatever the store's size, and the result is
exact (integer sums). :func:`write_value_counts` stores it as ``stats/<scope>/value_counts``
``(vocab_size,)`` int64 beside the scope's moments, without touching them.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import zarr
from numpy.typing import NDArray

from chunkstore.core.schema import INT_FEATURE_DTYPES
from chunkstore.errors import ValueCountsError
from chunkstore.runtime.dask import compute, dask_client, local_scheduler
from chunkstore.store import layout
from chunkstore.store.membership import split_array
from chunkstore.store.stats_io import scope_name, stats_path
from chunkstore.store.urls import open_group

VALUE_COUNTS = "value_counts"
DEFAULT_SPLITS = "default"
I64 = NDArray[np.int64]


def block_counts(block: NDArray[Any], vocab_size: int, start: int,
                 keep: NDArray[np.bool_] | None = None) -> I64:
    """``np.bincount`` of one block's values, ``(vocab_size,)`` int64; rows from ``start``.

    Raises
    ------
    ValueCountsError
        If a value is outside ``[0, vocab_size)``, naming the row and the value.
    """
    if keep is not None:
        block = block[keep]
    flat = np.asarray(block).ravel()
    if flat.size == 0:
        return np.zeros(vocab_size, dtype=np.int64)
    lo, hi = flat.min(), flat.max()
    if lo < 0 or hi >= vocab_size:
        bad = (block < 0) | (block >= vocab_size)
        r = int(np.flatnonzero(bad.reshape(len(block), -1).any(axis=1))[0])
        value = np.asarray(block[r]).ravel()[np.asarray(bad[r]).ravel()][0].item()
        where = f"row {start + r}" if keep is None else f"selected row {r} from row {start}"
        raise ValueCountsError(f"value {value!r} at {where} is outside [0, {vocab_size}); is "
                               "schema.features.vocab_size right?")
    return np.bincount(flat.astype(np.intp, copy=False), minlength=vocab_size).astype(np.int64)


def _pairwise_sum(parts: list[Any]) -> Any:
    """A balanced tree of additions: depth log2(blocks), never a long chain."""
    import dask

    add = dask.delayed(np.add, pure=True)
    while len(parts) > 1:
        parts = [add(parts[i], parts[i + 1]) if i + 1 < len(parts) else parts[i]
                 for i in range(0, len(parts), 2)]
    return parts[0]


def value_counts_graph(x: Any, vocab_size: int, keep: NDArray[np.bool_] | None = None) -> Any:
    """The lazy ``(vocab_size,)`` int64 counts of the Dask array ``x`` ((N,) or (N, F)).

    ``keep`` is an optional (N,) boolean row selection (a split's membership).
    """
    import dask

    if np.dtype(x.dtype).kind not in "iu":
        raise ValueCountsError(f"value counts need integer features (one of "
                               f"{list(INT_FEATURE_DTYPES)}), found dtype {x.dtype}")
    if keep is not None and keep.shape != (x.shape[0],):
        raise ValueCountsError(f"row selection has shape {keep.shape}; expected "
                               f"({x.shape[0]},)")
    count = dask.delayed(block_counts, pure=True)
    bounds = np.cumsum((0, *x.chunks[0]))
    blocks = x.to_delayed().reshape(len(x.chunks[0]), -1)
    parts: list[Any] = []
    for i, row in enumerate(blocks):
        lo, hi = int(bounds[i]), int(bounds[i + 1])
        sel = None if keep is None else keep[lo:hi]
        if sel is not None and not sel.any():
            continue
        parts.extend(count(b, vocab_size, lo, sel) for b in row)
    if not parts:
        return dask.delayed(np.zeros)(vocab_size, dtype=np.int64)
    return _pairwise_sum(parts)


def value_counts(source: Any, vocab_size: int | None = None,
                 rows: NDArray[Any] | None = None, *, scheduler: Any = None,
                 progress: bool = False) -> I64:
    """Exact counts of every value in ``[0, vocab_size)`` over the features.

    Parameters
    ----------
    source : a store path/URL, an open ``zarr.Group`` (its ``features``), a ``zarr.Array`` or a
        Dask array, (N,) or (N, F) of an integer dtype.
    vocab_size : the number of distinct values; default the store's declared
        ``vocab_size`` attr (``schema.features.vocab_size``).
    rows : optional row selection: an (N,) boolean mask or sorted row indices.
    scheduler : anything ``dask.compute`` takes (a ``distributed.Client``, an address's client).

    Returns
    -------
    (vocab_size,) int64: ``out[v]`` is how many times value ``v`` occurs.

    Raises
    ------
    ValueCountsError
        Float features, no vocab_size, or a value outside ``[0, vocab_size)``.

    Examples
    --------
    >>> counts = value_counts("data/text.zarr", 8192)  # doctest: +SKIP
    >>> counts.argmax()  # the most frequent token  # doctest: +SKIP
    """
    x, declared = _as_dask(source)
    vocab = _vocab(vocab_size if vocab_size is not None else declared, source)
    keep = _keep(rows, x.shape[0])
    (out,) = compute(value_counts_graph(x, vocab, keep),
                     scheduler=scheduler if scheduler is not None else local_scheduler(),
                     progress=progress, what="value counts")
    return np.asarray(out, dtype=np.int64)


def write_value_counts(store: str | os.PathLike[str], split: str | None = None, *,
                       splits: str = DEFAULT_SPLITS, vocab_size: int | None = None,
                       scheduler: Any = None, progress: bool = False) -> I64:
    """Count the values of all rows, or of one part of ``splits/<splits>``, and store them as
    ``stats/<scope>/value_counts`` (scope: :func:`chunkstore.store.stats_io.scope_name`); the
    scope's other statistics stay as they are.

    ``scheduler``: a ``dask.distributed`` address (``tcp://host:8786``), a Client, or None for
    local threads. Returns the counts. Raises ValueCountsError as :func:`value_counts`,
    SplitLookupError for an unknown split.

    Examples
    --------
    >>> train = write_value_counts("data/text.zarr", "train")  # doctest: +SKIP
    """
    if isinstance(scheduler, str):
        with dask_client(scheduler, "value counts") as client:
            return write_value_counts(store, split, splits=splits, vocab_size=vocab_size,
                                      scheduler=client, progress=progress)
    group = open_group(str(store), mode="r+")
    n = int(group[layout.FEATURES].shape[0])
    rows = None if split is None else split_array(group, str(store), splits, n).mask(split)
    counts = value_counts(group, vocab_size, rows, scheduler=scheduler, progress=progress)
    scope = scope_name(split, splits)
    sub = group.require_group(stats_path(scope))
    arr = sub.create_array(VALUE_COUNTS, shape=counts.shape, dtype="int64",
                           chunks=(min(len(counts), 2**19),), fill_value=0, overwrite=True)
    arr[...] = counts
    arr.attrs.update({"vocab_size": len(counts), "rows": int(n if rows is None
                                                              else rows.sum()),
                      "split": split, "splits": None if split is None else splits})
    return counts


def _as_dask(source: Any) -> tuple[Any, Any]:
    import dask.array as da

    if isinstance(source, da.Array):
        return source, None
    if isinstance(source, (str, os.PathLike)):
        source = open_group(str(source), mode="r")
    declared: Any = None
    if isinstance(source, zarr.Group):
        attrs: Any = source.attrs.get(layout.ATTR_KEY) or {}
        declared = attrs.get("vocab_size")
        source = source[layout.FEATURES]
    if isinstance(source, zarr.Array):
        return da.from_zarr(source), declared
    return da.asarray(source), declared


def _vocab(vocab_size: Any, source: Any) -> int:
    if vocab_size is None:
        raise ValueCountsError(f"no vocab_size for {source!r}: pass vocab_size=, or declare "
                               "schema.features.vocab_size in the config")
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer)) \
            or vocab_size < 1:
        raise ValueCountsError(f"vocab_size must be an integer >= 1, found {vocab_size!r}")
    return int(vocab_size)


def _keep(rows: NDArray[Any] | None, n: int) -> NDArray[np.bool_] | None:
    if rows is None:
        return None
    r = np.asarray(rows)
    if r.dtype == np.bool_:
        return r
    keep = np.zeros(n, dtype=np.bool_)
    keep[r.astype(np.int64)] = True
    return keep
