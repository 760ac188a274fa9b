"""``chunkstore stats``: exact statistics of a store, or of one split, computed lazily with Dask.

Pass 1 maps :meth:`Partial.of_block` over blocks of ``da.from_zarr`` arrays (features, labels,
masks, and the split codes when a split is asked for) and merges the partials with a tree
reduction: moments, co-moments, class and mask counts. Pass 2 bins every feature with edges
from pass 1's min and max and merges histograms and feature-bin x class tables the same way;
quantiles and mutual information follow from them. Results replace ``stats/<scope>/``.

The merge order is fixed by the block order (a tree of ``SPLIT_EVERY`` blocks per node), so
the result does not depend on the scheduler, the number of workers or their timing.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import reduce
from typing import Any, TypeVar

import numpy as np
import zarr
from numpy.typing import NDArray

from chunkstore.core.histograms import (
    QUANTILE_PROBS,
    Binning,
    HistPartial,
    mi_bias,
    mutual_info,
    quantiles,
)
from chunkstore.core.moments import Partial
from chunkstore.core.plan import whole_chunk_rows
from chunkstore.errors import ChunkstoreError, ReadError
from chunkstore.runtime.dask import compute, dask_client
from chunkstore.store import layout
from chunkstore.store.membership import split_array
from chunkstore.store.stats_io import (
    Stats,
    load_stats,
    node_array,
    partial_arrays,
    write_scope,
)
from chunkstore.store.urls import open_group

DEFAULT_BINS = 32
DEFAULT_SPLITS = layout.DEFAULT_SPLITS
BLOCK_MIB = 32.0  # features per Dask block (a whole number of store chunks)
SPLIT_EVERY = 4  # partials merged per tree node: few partials (up to ~50 MB each) alive

T = TypeVar("T")


@dataclass(frozen=True)
class Selection:
    """Which rows a scope covers: all, or those whose code in ``splits/<array>`` is ``code``."""

    scope: str
    rows: int
    array: str | None = None
    name: str | None = None
    code: int = -1

    def describe(self) -> dict[str, Any] | None:
        if self.array is None:
            return None
        return {"array": f"splits/{self.array}", "name": self.name, "code": self.code}


def select_rows(group: zarr.Group, path: str, split: str | None, splits: str = DEFAULT_SPLITS
                ) -> Selection:
    """Resolve ``--split NAME`` (looked up in ``splits/<splits>``) to a scope and a code.

    The scope is ``NAME`` for the default split array, else ``<splits>/NAME``.
    """
    n = int(node_array(group, "features").shape[0])
    if split is None:
        return Selection("all", n)
    resolved = split_array(group, path, splits, n)
    code = resolved.code(split)
    key = resolved.path
    rows = int(np.count_nonzero(resolved.array[...] == code))
    if rows == 0:
        raise ReadError(f"split {split!r} of {key!r} holds no rows; nothing to compute")
    scope = split if splits == DEFAULT_SPLITS else f"{splits}/{split}"
    return Selection(scope, rows, splits, split, code)


def _rows(codes: NDArray[Any] | None, code: int, *arrays: Any) -> list[Any]:
    if codes is None:
        return list(arrays)
    keep = codes == code
    return [{h: a[keep] for h, a in x.items()} if isinstance(x, dict) else x[keep]
            for x in arrays]


def _pass1(x: NDArray[Any], labels: dict[str, NDArray[Any]], masks: dict[str, NDArray[Any]],
           codes: NDArray[Any] | None, code: int, heads: dict[str, int], correlation: bool
           ) -> Partial:
    x, labels, masks = _rows(codes, code, x, labels, masks)
    return Partial.of_block(x, labels, masks, heads, correlation=correlation)


def _pass2(x: NDArray[Any], labels: dict[str, NDArray[Any]], codes: NDArray[Any] | None,
           code: int, binning: Binning, heads: dict[str, int], dtype: type) -> HistPartial:
    x, labels = _rows(codes, code, x, labels)
    return HistPartial.of_block(x, labels, binning, heads, dtype)


def _merge_list(merge: Callable[[T, T], T], parts: list[T]) -> T:
    return reduce(merge, parts)


def tree_reduce(leaves: list[Any], merge: Callable[[Any, Any], Any],
                split_every: int = SPLIT_EVERY) -> Any:
    """A Dask delayed tree merging ``leaves`` in order, ``split_every`` per node."""
    from dask import delayed

    level = list(leaves)
    while len(level) > 1:
        level = [delayed(_merge_list, pure=True)(merge, level[i:i + split_every])
                 for i in range(0, len(level), split_every)]
    return level[0]


def block_rows(chunk_rows: int, n_features: int, itemsize: int, block_mib: float) -> int:
    """Rows per Dask block: whole store chunks, about ``block_mib`` MiB of features."""
    return whole_chunk_rows(chunk_rows, n_features * itemsize, block_mib * 2**20)


class CheckedReads:
    """A store array as Dask reads it, whose failed reads name the array and rows.

    zarr raises a plain exception from inside a Dask task when a chunk is unreadable (its
    crc32c checksum does not match, its file is truncated): this turns it into a ReadError
    that says where and what to do, which the CLI prints as one line.
    """

    def __init__(self, array: zarr.Array, path: str) -> None:
        self.array = array
        self.path = path
        self.shape = tuple(array.shape)
        self.dtype = array.dtype
        self.ndim = array.ndim

    def __getitem__(self, key: Any) -> Any:
        try:
            return self.array[key]
        except Exception as e:
            first = key[0] if isinstance(key, tuple) and key else key
            rows = (f"rows [{first.start}, {first.stop})" if isinstance(first, slice)
                    else f"rows {first!r}")
            raise ReadError(
                f"reading {self.path!r} {rows} of store {self.array.store_path} failed: "
                f"{type(e).__name__}: {e}; a chunk whose checksum does not match was changed "
                "or damaged after it was written: restore the store from a copy, or rebuild "
                "it (chunkstore ingest CONFIG --overwrite)") from e


def _blocks(group: zarr.Group, heads: Mapping[str, int], rows: int, sel: Selection,
            with_masks: bool) -> list[tuple[Any, ...]]:
    """Per block: delayed (features, labels, masks, codes) chunks of ``da.from_zarr`` arrays."""
    import dask.array as da
    from dask.base import tokenize

    def delayed_blocks(name: str) -> list[Any]:
        a = node_array(group, name)
        chunks = (rows, *a.shape[1:])
        lazy = da.from_array(CheckedReads(a, name), chunks=chunks,
                             name=f"read-{name}-{tokenize(a, chunks)}",
                             meta=np.empty((0,) * a.ndim, dtype=a.dtype))
        return list(lazy.to_delayed().ravel())

    feats = delayed_blocks("features")
    labels = {h: delayed_blocks(f"labels/{h}") for h in heads}
    masks = {h: delayed_blocks(f"masks/{h}") for h in heads} if with_masks else {}
    codes = delayed_blocks(f"splits/{sel.array}") if sel.array else [None] * len(feats)
    return [(f, {h: labels[h][i] for h in heads}, {h: masks[h][i] for h in masks}, codes[i])
            for i, f in enumerate(feats)]


def _heads(group: zarr.Group) -> dict[str, int]:
    attrs: dict[str, Any] = dict(group.attrs[layout.ATTR_KEY])  # type: ignore[arg-type]
    return {h: int(d["classes"]) for h, d in attrs["heads"].items()}


def moments_graph(group: zarr.Group, sel: Selection, *, correlation: bool, rows: int) -> Any:
    """Pass 1 as a Dask delayed: the merged :class:`Partial` of the selected rows."""
    from dask import delayed

    heads = _heads(group)
    leaves = [delayed(_pass1, pure=True)(x, lab, msk, cod, sel.code, heads, correlation)
              for x, lab, msk, cod in _blocks(group, heads, rows, sel, with_masks=True)]
    return tree_reduce(leaves, Partial.merge)


def histogram_graph(group: zarr.Group, sel: Selection, binning: Binning, *, rows: int) -> Any:
    """Pass 2 as a Dask delayed: the merged :class:`HistPartial` of the selected rows."""
    from dask import delayed

    heads = _heads(group)
    dtype = np.int32 if sel.rows < 2**31 else np.int64  # counts cannot overflow
    leaves = [delayed(_pass2, pure=True)(x, lab, cod, sel.code, binning, heads, dtype)
              for x, lab, _, cod in _blocks(group, heads, rows, sel, with_masks=False)]
    return tree_reduce(leaves, HistPartial.merge)


def _nbytes(*arrays: Any) -> int:
    return sum(a.nbytes for a in arrays if isinstance(a, np.ndarray)) + sum(
        _nbytes(*a.values()) for a in arrays if isinstance(a, dict))


def read_graph(group: zarr.Group, sel: Selection, *, rows: int) -> Any:
    """The same reads as pass 1 and nothing else: decoded bytes, a baseline for benchmarks."""
    from dask import delayed

    leaves = [delayed(_nbytes, pure=True)(*block)
              for block in _blocks(group, _heads(group), rows, sel, with_masks=True)]
    return tree_reduce(leaves, operator.add)


@contextmanager
def _runner(scheduler: str | None, progress: bool, store: str
            ) -> Iterator[Callable[[Any, str], Any]]:
    """``compute(graph, what)``: threads locally (progress bar on stderr), or a cluster.

    An exception from inside a task that is not a ChunkstoreError (a lost worker, a bug)
    becomes a ReadError naming the store and the pass, so the CLI shows one line.
    """
    with _runner_of(scheduler, progress) as compute:

        def checked(graph: Any, what: str) -> Any:
            try:
                return compute(graph, what)
            except ChunkstoreError:
                raise
            except Exception as e:
                raise ReadError(
                    f"statistics of store {store!r} failed in {what}: {type(e).__name__}: "
                    f"{e}; nothing was written: fix the problem and rerun chunkstore stats"
                ) from e

        yield checked


@contextmanager
def _runner_of(scheduler: str | None, progress: bool) -> Iterator[Callable[[Any, str], Any]]:
    if scheduler:
        with dask_client(scheduler, "stats") as client:

            def run_remote(graph: Any, what: str) -> Any:
                return compute(graph, scheduler=client, progress=progress,
                               what=f"stats: {what}")[0]

            yield run_remote
        return

    def run_local(graph: Any, what: str) -> Any:
        from threadpoolctl import threadpool_limits

        # one BLAS thread per Dask thread: nested threading made correlation ~2x slower
        with threadpool_limits(1, user_api="blas"):
            return compute(graph, scheduler="threads", progress=progress,
                           what=f"stats: {what}")[0]

    yield run_local


def compute_stats(
    store: str,
    *,
    split: str | None = None,
    splits: str = DEFAULT_SPLITS,
    bins: int = DEFAULT_BINS,
    correlation: bool = True,
    scheduler: str | None = None,
    progress: bool = True,
    block_mib: float = BLOCK_MIB,
) -> Stats:
    """Compute every statistic of a store, or of one split, and write ``stats/<scope>/``.

    Parameters
    ----------
    store : path of a complete store.
    split : a split name such as "train", looked up in ``splits/<splits>``; None for all rows
        (scope ``all``, replacing the statistics ingest wrote).
    splits : the split array under ``splits/`` (default ``default``); the scope of a split of
        another array is ``<splits>/<split>``.
    bins : equal-width bins per feature, between the feature's min and max, for the stored
        histograms and the mutual-information tables.
    correlation : compute the (F, F) correlation matrix (F^2 memory and work).
    scheduler : a ``dask.distributed`` scheduler address; default: local threads.
    progress : progress bar on stderr (with a scheduler: the dashboard link and a text bar).
    block_mib : features per Dask block, in MiB (rounded to whole store chunks).

    Returns
    -------
    Stats, as :func:`chunkstore.stats_store.load_stats` reads it back.

    Raises
    ------
    ReadError
        If the store is incomplete, the split array or split name does not exist, the split
        is empty or ``bins`` < 2; the store is left unchanged.

    Examples
    --------
    >>> st = compute_stats("data/demo.zarr", split="train")  # doctest: +SKIP
    >>> print(st.format())  # doctest: +SKIP
    """
    from chunkstore.store.view import StoreView

    group, sel, rows = _prepare(store, split, splits, bins, block_mib)
    with _runner(scheduler, progress, store) as compute:
        first: Partial = compute(moments_graph(group, sel, correlation=correlation, rows=rows),
                                 f"pass 1/2 (moments{', correlation' if correlation else ''})")
        binning = Binning.from_moments(first.moments, bins)
        second: HistPartial = compute(histogram_graph(group, sel, binning, rows=rows),
                                      "pass 2/2 (histograms, mutual information)")
    arrays, bias = result_arrays(first, second, binning, _heads(group))
    write_scope(group, sel.scope, arrays, scope_attrs(sel, first.rows, correlation, bins, bias))
    return load_stats(StoreView(store), sel.scope)


def _prepare(store: str, split: str | None, splits: str, bins: int, block_mib: float
             ) -> tuple[zarr.Group, Selection, int]:
    """Check the request against the store: (open group, selected rows, rows per block)."""
    attrs = layout.read_attrs(store)
    if attrs.get("status") != layout.COMPLETE:
        raise ReadError(f"store {store!r} is incomplete (status {attrs.get('status')!r}); "
                        "statistics would count unwritten rows: rerun the ingest to finish it")
    if not isinstance(bins, int) or bins < 2:
        raise ReadError(f"bins must be an integer >= 2, found {bins!r}")
    group = open_group(store, mode="r+")
    sel = select_rows(group, store, split, splits)
    feats = node_array(group, layout.FEATURES)
    rows = block_rows(int(attrs["chunk_rows"]), int(feats.shape[1]), feats.dtype.itemsize,
                      block_mib)
    return group, sel, rows


def result_arrays(first: Partial, second: HistPartial, binning: Binning,
                  heads: Mapping[str, int]) -> tuple[dict[str, NDArray[Any]], dict[str, float]]:
    """Every array of the scope from the two passes, and the mutual-information bias per head."""
    arrays = partial_arrays(first)
    arrays["hist"] = second.hist(binning)
    arrays["hist_edges"] = binning.edges()
    arrays["quantiles"] = quantiles(second.fine, binning.fine_edges())
    bias = {}
    for h, k in heads.items():
        table = second.contingency(h)
        arrays[f"contingency/{h}"] = table
        arrays[f"mutual_info/{h}"] = mutual_info(table)
        bias[h] = mi_bias(binning.bins, k, int(first.class_counts[h].sum()))
    return arrays, bias


def scope_attrs(sel: Selection, rows: int, correlation: bool, bins: int,
                bias: Mapping[str, float]) -> dict[str, Any]:
    """The attributes of ``stats/<scope>``: what was computed, how, and over which rows."""
    return {
        "computed_at": layout.now_iso(), "rows": rows, "method": "dask",
        "scope": sel.scope, "split": sel.describe(), "ddof": 0, "correlation": correlation,
        "bins": bins, "quantile_probs": list(QUANTILE_PROBS),
        "note": "moments over finite values; nan_count and inf_count count the rest; "
                "correlation over the rows where both features are finite",
        "mutual_info": {"units": "nats", "estimator": "plug-in", "bias": dict(bias),
                        "bias_formula": "(B-1)(K-1)/(2N), not subtracted"},
    }
