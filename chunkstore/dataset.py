"""Reading a store: ``chunkstore.open(path)`` -> :class:`Dataset`.

The store is plain Zarr, so ``Dataset`` is a thin, typed view over ``zarr.open_group``: arrays,
names, heads, statistics and split views, and Dask arrays for analysis. Nothing is loaded until
sliced.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from chunkstore.errors import UsageError
from chunkstore.interop.xarray import to_xarray
from chunkstore.read.loader import WINDOW_BYTES, Loader
from chunkstore.read.rows import RowReader
from chunkstore.read.windows import Windows
from chunkstore.splits.views import SplitView, split_view
from chunkstore.store.stats_io import Stats, load_stats
from chunkstore.store.version_view import VersionView
from chunkstore.store.view import StoreView

if TYPE_CHECKING:
    import numpy as np
    import xarray as xr
    import xgboost as xgb
    import zarr
    from numpy.typing import NDArray

    from chunkstore.interop.training import Fold, Parts

E = TypeVar("E")


class Dataset(StoreView):
    """A chunkstore store opened for reading: ``chunkstore.open(path)``.

    Arrays, names and heads as in :class:`~chunkstore.store.view.StoreView`; plus statistics,
    split views, the shuffled batch loader, sequence windows, map-style rows and Dask/xarray.
    """

    def stats(self, scope: str = "all") -> Stats:
        """Stored statistics of ``scope`` ("all" or a split name); see :mod:`chunkstore.stats`."""
        return load_stats(self, scope)

    def split(self, name: str) -> SplitView:
        """A view of the rows of split ``name``, e.g. ``ds.split("train")``; ``"cv/fold3"``
        looks ``fold3`` up in ``splits/cv``. See :mod:`chunkstore.splits.views`."""
        return split_view(self, name)

    def loader(self, batch_size: int = 256, split: str | None = None, shuffle: bool = True,
               seed: int = 0, window_chunks: int | None = None, prefetch: int = 1,
               drop_last: bool = False, normalize: bool = False,
               heads: Sequence[str] | None = None, *, splits: str = "default",
               threads: int = 2, unique: bool = False,
               rows: NDArray[np.bool_] | None = None,
               remainder: str | None = None, elastic: bool = True,
               window_bytes: int = WINDOW_BYTES) -> Loader:
        """A chunk-aware shuffled batch loader over all rows, or over one split.

        Each batch is ``{"features": (b, F), "labels": {head: (b,)}, "masks": {head: (b, K)},
        "index": (b,)}``; ``index`` holds the store rows. See :mod:`chunkstore.loader`.

        Parameters
        ----------
        batch_size : rows per batch (the last one may be smaller unless ``drop_last``).
        split : read only the rows of this split (e.g. "train"); None reads every row.
        shuffle : permute the chunk order per epoch and the rows within each window; False
            reads the rows in store order.
        seed : with the epoch (``set_epoch``), fixes the order.
        window_chunks : chunks decoded and shuffled together; None (default) = as many as
            fit ``window_bytes``. Larger windows mix better (a batch draws its rows from
            the window's chunks) and cost memory.
        window_bytes : decoded bytes of one window when ``window_chunks`` is None (default
            224 MiB: 64 chunks of 1,024 rows x 893 float32 features; labels and masks that
            the loader keeps decoded whole do not count). Memory: ``1 + prefetch`` windows.
        prefetch : windows decoded ahead of the one being consumed (default 1).
        drop_last : drop the last, smaller batch of the epoch (of each shard).
        normalize : apply ``(x - mean) / std`` with the train part's statistics of the split
            set (``stats/train``; ``stats/<splits>/train`` for another split set).
        heads : the heads whose labels and masks to read; None = all.
        splits : the split array under ``splits/`` that defines ``split``.
        threads : background decode threads.
        unique : yield only first occurrences of duplicate rows (``meta/duplicate_of == -1``,
            written by ``chunkstore dedup STORE``, which must have run).
        remainder : the last step of an epoch when ranks share it (see
            :mod:`chunkstore.read.order`): "even" (default; equal batches of the items left,
            fewer than ``world_size`` items dropped), "drop" (the partial step is skipped) or
            "pad" (full batches, repeats flagged False in ``batch["valid"]``); default
            "drop" when ``drop_last``.
        elastic : the epoch's global order, the same for every world size and worker count,
            with lockstep ranks and a state that resumes any new world size (default); False
            deals chunks to shards instead (each shard decodes only its own chunks, but the
            order and the state belong to one world size).
        rows : a boolean (N,) array of the rows to read (e.g. a fold's train side,
            ``train.mask(ds)`` of ``ds.folds(...)``), combined with ``split`` and ``unique``.

        Raises
        ------
        ReadError
            On a bad argument, an unknown head or split, or missing ``stats/train``.

        Examples
        --------
        >>> loader = ds.loader(batch_size=256, split="train", seed=0)  # doctest: +SKIP
        >>> for epoch in range(10):
        ...     loader.set_epoch(epoch)
        ...     for batch in loader:
        ...         train_step(batch["features"], batch["labels"]["action_type"])
        """
        return Loader(self, batch_size=batch_size, split=split, shuffle=shuffle, seed=seed,
                      window_chunks=window_chunks, window_bytes=window_bytes,
                      prefetch=prefetch, drop_last=drop_last,
                      normalize=normalize, heads=heads, remainder=remainder, elastic=elastic,
                      splits=splits, threads=threads,
                      unique=unique, rows=rows)

    def windows(self, lookback: int, horizon: int = 0, by: str | None = "group", *,
                split: str | None = None, splits: str = "default",
                heads: Sequence[str] | None = None) -> Windows:
        """Sequence windows of ``lookback + horizon`` rows that never cross a group.

        ``w = ds.windows(lookback=32, horizon=1)``: ``len(w)`` windows, ``w[i]`` / ``w[ids]``
        read them, ``w.loader(batch_size=...)`` shuffles them chunk-aware. See
        :mod:`chunkstore.windows`.

        Parameters
        ----------
        lookback, horizon : rows before and after the prediction point; a series of ``n``
            rows holds ``max(0, n - lookback - horizon + 1)`` windows.
        by : the ``meta/`` array whose runs of equal values are the series; None = the whole
            store is one series.
        split, splits : keep only series rows in this split (as for :meth:`loader`).
        heads : heads to read; None = all.
        """
        return Windows(self, lookback=lookback, horizon=horizon, by=by, split=split,
                       splits=splits, heads=heads)

    @property
    def duplicates(self) -> zarr.Array | None:
        """``meta/duplicate_of`` (N,) int64 written by ``chunkstore dedup``: -1 for a row's first
        occurrence, else the row of its first occurrence; None before dedup has run."""
        return self.meta.get("duplicate_of")

    @cached_property
    def _rows(self) -> RowReader:
        return RowReader(self)

    def __getitem__(self, key: Any) -> dict[str, Any]:
        """Rows as a dict like a loader batch: ``ds[i]``, ``ds[[3, 9, 4]]``, ``ds[10:20]``.

        Rows are read through a small LRU cache of decoded chunks (4 per array), so nearby
        rows are cheap; for shuffled training use :meth:`loader`, which reads each chunk once
        per epoch. An int gives arrays without the batch axis.
        """
        return self._rows[key]

    def to_xarray(self) -> xr.Dataset:
        """Every sample array as one lazy ``xarray.Dataset``.

        See :func:`chunkstore.interop.xarray.to_xarray`.
        """
        return to_xarray(self, self._dask)

    def to_xgboost(self, split: str | Parts | None = None, label: str | None = None, *,
                   splits: str = "default", weight: str | None = None,
                   missing: float = float("nan"), ref: xgb.DMatrix | None = None,
                   external_memory: bool = False, **options: Any) -> xgb.DMatrix:
        """The rows of ``split`` as an XGBoost ``QuantileDMatrix``, read chunk by chunk.

        ``weight``: None ignores masks, ``"mask"`` weighs rows by the label head's mask at
        the labelled class, or an (N,) array path. ``external_memory=True`` builds an
        ``ExtMemQuantileDMatrix``. Needs the ``xgboost`` extra; see
        :func:`chunkstore.interop.xgboost.to_xgboost` for every option.
        """
        from chunkstore.interop.xgboost import to_xgboost  # imports xgboost: on first use

        return to_xgboost(self, split, label, splits=splits, weight=weight, missing=missing,
                          ref=ref, external_memory=external_memory, **options)

    def folds(self, name: str) -> list[Fold]:
        """The (train, valid) folds of the k-fold split set ``splits/<name>``.

        ``for train, valid in ds.folds("cv"): ds.to_xgboost(split=train, label=...)``; see
        :func:`chunkstore.interop.training.folds`.
        """
        from chunkstore.interop.training import folds

        return folds(self, name)

    def partial_fit(self, estimator: E, *, split: str | Parts | None = "train",
                    label: str | None = None, batch_size: int = 4096, epochs: int = 1,
                    classes: Any = None, normalize: bool = False, **options: Any) -> E:
        """Train an estimator with ``partial_fit`` over the shuffled loader of ``split``.

        Every row of the split once per epoch; returns the estimator. See
        :func:`chunkstore.interop.sklearn.partial_fit` for every option.
        """
        from chunkstore.interop.sklearn import partial_fit

        return partial_fit(self, estimator, split=split, label=label, batch_size=batch_size,
                           epochs=epochs, classes=classes, normalize=normalize, **options)


class VersionDataset(VersionView, Dataset):
    """A store read as it was at one version: ``chunkstore.open(path, version="paper")``.

    Everything a :class:`Dataset` does for reading -- ``loader``, ``split`` views, ``stats``,
    ``to_dask``, ``ds[i]``, windows, xarray/XGBoost -- over rows ``[0, N_v)`` only, with the
    split codes and statistics that version saw (a later ``split --overwrite`` or ``stats`` run
    does not change them) and the heads it had. ``version`` is its record (id, time, command,
    ...); ``live_group`` the store's root group as it is now. Read-only.
    """


def open(path: str, mode: Literal["r", "r+"] = "r", *,  # noqa: A001 - mirrors zarr.open
         storage_options: dict[str, Any] | None = None,
         version: str | int | None = None) -> Dataset:
    """Open a chunkstore store.

    Parameters
    ----------
    path : the store's path, or an fsspec URL such as ``s3://bucket/x.zarr``.
    mode : "r" (default) or "r+".
    storage_options : fsspec options for a URL (``endpoint_url``, ``key``, ...). They belong to
        this store: every later open of it or of its files in this process uses them, and other
        stores keep their own (see :func:`chunkstore.store.urls.configure`). None uses the
        options registered for the URL already, if any, and fsspec's configuration.
    version : a version id or tag (``chunkstore log STORE`` lists them): a read-only
        :class:`VersionDataset` of the store as it was then (rows ``[0, N_v)``, that
        version's splits, statistics and heads; loader, split views, Dask, export all stop at
        ``N_v``). ``mode`` must be "r". None: the store as it is now.

    Raises
    ------
    NotAStoreError
        If ``path`` holds no chunkstore store (nothing there, a file, a dangling link, or a
        Zarr group that chunkstore did not write).
    VersionError
        If the store has no version or tag ``version``.

    Examples
    --------
    >>> ds = chunkstore.open("data/demo.zarr")  # doctest: +SKIP
    >>> ds.features[:5].shape
    (5, 893)
    """
    if mode not in ("r", "r+"):
        raise UsageError(f"mode must be 'r' or 'r+', found {mode!r}")
    if version is not None:
        if mode != "r":
            raise UsageError(f"a version of a store is read-only: open it with mode='r', "
                             f"found {mode!r}")
        return VersionDataset(path, version, storage_options=storage_options)
    return Dataset(path, mode=mode, storage_options=storage_options)
