"""``chunkstore stats``: exact statistics of a store, or of one split, computed lazily with Dask.

Pass 1 maps :meth:`Partial.of_block` over blocks of the store's arrays (features, labels,
masks, and the split codes when a split is asked for) and merges the partials with a tree
reduction: moments, co-moments, class and mask counts. Pass 2 bins every feature with edges
from pass 1's min and max and merges histograms and feature-bin x class tables the same way;
quantiles and mutual information follow from them. Results replace ``stats/<scope>/``.

The store usually knows the edges before reading: ingest stores the exact finite min and max
of every feature in ``stats/all`` (and an earlier ``chunkstore stats --split`` in its scope).
Then both passes share one read (:func:`chunkstore.stats.graphs.fused_graph`), and the edges
are checked against the min and max that pass computed: if they differ (the stored ones are
stale), pass 2 runs again with the right edges, so the result is always the two-pass result.

The merge order is fixed by the block order (a tree of ``SPLIT_EVERY`` blocks per node), so
the result does not depend on the scheduler, the number of workers or their timing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

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
from chunkstore.errors import ChunkstoreError, ReadError
from chunkstore.runtime.dask import compute, dask_client

# the graphs, re-exported: benchmarks and tools build them through this module
from chunkstore.stats.graphs import (  # noqa: F401
    SPLIT_EVERY,
    CheckedReads,
    Selection,
    _heads,
    block_rows,
    fused_graph,
    histogram_graph,
    moments_graph,
    read_graph,
    select_rows,
    stored_binning,
    tree_reduce,
)
from chunkstore.stats.value_counts import write_value_counts
from chunkstore.store import layout, versions
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

@contextmanager
def stats_runner(scheduler: str | None, progress: bool, store: str
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
    correlation: bool | None = None,
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
    correlation : compute the (F, F) correlation matrix (F^2 memory and work); default: on for
        float features, off for integer features (token ids, codes), whose F is often a
        sequence length and whose correlation rarely means anything.
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
    features: Any = group["features"]
    integer = features.dtype.kind in "iu"
    if correlation is None:
        correlation = not integer
    with stats_runner(scheduler, progress, store) as compute:
        first, second, binning = _passes(compute, group, sel, bins, correlation, rows)
    arrays, bias = result_arrays(first, second, binning, _heads(group))
    write_scope(group, sel.scope, arrays, scope_attrs(sel, first.rows, correlation, bins, bias))
    attrs: Any = group.attrs["chunkstore"]
    if integer and attrs.get("vocab_size"):  # the token frequency table
        write_value_counts(store, split, splits=splits, scheduler=scheduler, progress=progress)
    versions.commit_version(store, f"stats {sel.scope}")
    return load_stats(StoreView(store), sel.scope)


def _passes(compute: Callable[[Any, str], Any], group: zarr.Group, sel: Selection, bins: int,
            correlation: bool, rows: int) -> tuple[Partial, HistPartial, Binning]:
    """Moments and histograms: in one read when the stored edges hold, else in two."""
    what = f"moments{', correlation' if correlation else ''}"
    known = stored_binning(group, sel, bins)
    if known is not None:
        first, second = compute(fused_graph(group, sel, known, correlation=correlation,
                                            rows=rows), f"one pass ({what}, histograms, MI)")
        binning = Binning.from_moments(first.moments, bins)
        if binning.same_as(known):
            return first, second, binning
    else:
        first = compute(moments_graph(group, sel, correlation=correlation, rows=rows),
                        f"pass 1/2 ({what})")
        binning = Binning.from_moments(first.moments, bins)
    second = compute(histogram_graph(group, sel, binning, rows=rows),
                     "pass 2/2 (histograms, mutual information)")
    return first, second, binning


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
