"""Reading a store: ``chunkstore.open(path)`` -> :class:`Dataset`.

The store is plain Zarr, so ``Dataset`` is a thin, typed view over ``zarr.open_group``: arrays,
names, heads, statistics and split views, and Dask arrays for analysis. Nothing is loaded until
sliced.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import zarr

from . import layout
from .errors import ChunkstoreError

if TYPE_CHECKING:
    import dask.array as da
    import xarray as xr

    from .chunks import ChunkCache
    from .loader import Loader
    from .windows import Windows


class IncompleteStoreWarning(UserWarning):
    """The store's ingest has not finished: some rows still read as fill values."""


class Dataset:
    """A chunkstore store opened for reading.

    Attributes
    ----------
    features : zarr.Array (N, F)
    labels, masks : dict head -> zarr.Array
    meta : dict name -> zarr.Array (``group``, ``source`` when present)
    n_samples, chunk_rows : int
    feature_names : list[str]
    heads : dict head -> number of classes
    """

    def __init__(self, path: str, *, mode: Literal["r", "r+"] = "r") -> None:
        self.path = path
        self.attrs = layout.read_attrs(path)
        self.group = zarr.open_group(path, mode=mode)
        self.n_samples: int = self.attrs["n_samples"]
        self.chunk_rows: int = self.attrs["chunk_rows"]
        self.feature_names: list[str] = list(self.attrs["feature_names"])
        self.heads: dict[str, int] = {h: d["classes"] for h, d in self.attrs["heads"].items()}
        self.features = self.array("features")
        self.labels = {h: self.array(f"labels/{h}") for h in self.heads}
        self.masks = {h: self.array(f"masks/{h}") for h in self.heads}
        meta = self.group.get("meta")
        self.meta: dict[str, zarr.Array] = (
            dict(meta.arrays()) if isinstance(meta, zarr.Group) else {})
        if self.status != layout.COMPLETE:
            from .journal import missing_rows

            gaps = missing_rows(path)
            shown = ", ".join(f"[{a}, {b})" for a, b in gaps[:5]) + (" ..." if len(gaps) > 5
                                                                     else "")
            warnings.warn(
                f"store {path!r} is incomplete: {sum(b - a for a, b in gaps):,} of "
                f"{self.n_samples:,} rows are not written yet ({shown}); they read as NaN "
                "features and label -1. Rerun the ingest to finish it.",
                IncompleteStoreWarning, stacklevel=2)

    def array(self, name: str) -> zarr.Array:
        """The array at ``name`` (e.g. ``"splits/default"``); KeyError if there is none."""
        node = self.group[name]
        if not isinstance(node, zarr.Array):
            raise KeyError(f"{name!r} in store {self.path!r} is a group, not an array")
        return node

    @property
    def status(self) -> str:
        return str(self.attrs["status"])

    def __len__(self) -> int:
        return self.n_samples

    def __repr__(self) -> str:
        return (f"<chunkstore.Dataset {self.path!r}: {self.n_samples:,} samples x "
                f"{len(self.feature_names)} features, heads {self.heads}, {self.status}>")

    def stats(self, scope: str = "all") -> Any:
        """Stored statistics of ``scope`` ("all" or a split name); see :mod:`chunkstore.stats`."""
        from .stats import load_stats

        return load_stats(self, scope)

    def split(self, name: str) -> Any:
        """A view of the rows of split ``name``, e.g. ``ds.split("train")``; see ``splits``."""
        from .splits import split_view

        return split_view(self, name)

    def loader(self, batch_size: int = 256, split: str | None = None, shuffle: bool = True,
               seed: int = 0, window_chunks: int = 8, prefetch: int = 2,
               drop_last: bool = False, normalize: bool = False,
               heads: Sequence[str] | None = None, *, splits: str = "default",
               threads: int = 2) -> Loader:
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
        window_chunks : chunks decoded and shuffled together; larger mixes better and uses
            more memory (about ``(threads + prefetch + 2) x window_chunks`` decoded chunks).
        prefetch : windows decoded ahead of the one being consumed.
        drop_last : drop the last, smaller batch of the epoch (of each shard).
        normalize : apply ``(x - mean) / std`` with ``stats/train`` (float32 features out).
        heads : the heads whose labels and masks to read; None = all.
        splits : the split array under ``splits/`` that defines ``split``.
        threads : background decode threads.

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
        from .loader import Loader

        return Loader(self, batch_size=batch_size, split=split, shuffle=shuffle, seed=seed,
                      window_chunks=window_chunks, prefetch=prefetch, drop_last=drop_last,
                      normalize=normalize, heads=heads, splits=splits, threads=threads)

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
        from .windows import Windows

        return Windows(self, lookback=lookback, horizon=horizon, by=by, split=split,
                       splits=splits, heads=heads)

    @cached_property
    def _chunk_cache(self) -> ChunkCache:
        from .chunks import ChunkCache
        from .loader import sample_sources

        return ChunkCache(sample_sources(self, list(self.heads)), max_chunks=4)

    def __getitem__(self, key: Any) -> dict[str, Any]:
        """Rows as a dict like a loader batch: ``ds[i]``, ``ds[[3, 9, 4]]``, ``ds[10:20]``.

        Rows are read through a small LRU cache of decoded chunks (4 per array), so nearby
        rows are cheap; for shuffled training use :meth:`loader`, which reads each chunk once
        per epoch. An int gives arrays without the batch axis.
        """
        from .chunks import as_ids

        ids, scalar = as_ids(key, self.n_samples)
        got = self._chunk_cache.gather(list(self._chunk_cache.sources), ids)
        labels = {h: got[f"labels/{h}"] for h in self.heads}
        masks = {h: got[f"masks/{h}"] for h in self.heads}
        if scalar:
            return {"features": got["features"][0], "labels": {h: a[0] for h, a in labels.items()},
                    "masks": {h: a[0] for h, a in masks.items()}, "index": ids[0]}
        return {"features": got["features"], "labels": labels, "masks": masks, "index": ids}

    def to_xarray(self) -> xr.Dataset:
        """Every sample array as one lazy ``xarray.Dataset`` (Dask-backed, chunked as stored).

        Variables ``features`` (sample, feature), ``labels_<head>`` (sample,), ``masks_<head>``
        (sample, <head>_class) and ``meta_<name>``; coordinates ``sample`` (row numbers) and
        ``feature`` (feature names); the store's chunkstore attrs as ``attrs``.

        Raises
        ------
        ImportError
            If xarray is not installed (``pip install 'chunkstore[xarray]'``).
        """
        try:
            import xarray as xr
        except ImportError as e:
            raise ImportError("Dataset.to_xarray() needs xarray: pip install "
                              "'chunkstore[xarray]'") from e
        d = self._dask
        data: dict[str, tuple[tuple[str, ...], da.Array]] = {
            "features": (("sample", "feature"), d["features"])}
        for h in self.heads:
            data[f"labels_{h}"] = (("sample",), d[f"labels/{h}"])
            data[f"masks_{h}"] = (("sample", f"{h}_class"), d[f"masks/{h}"])
        for k in self.meta:
            a = d[f"meta/{k}"]
            data[f"meta_{k}"] = (("sample", *(f"{k}_dim{i}" for i in range(1, a.ndim))), a)
        coords = {"sample": np.arange(self.n_samples), "feature": self.feature_names}
        attrs = {k: v for k, v in self.attrs.items()
                 if k not in ("feature_names", "heads", "compression")}
        attrs["heads"] = ",".join(f"{h}:{k}" for h, k in self.heads.items())
        return xr.Dataset(data, coords=coords, attrs=attrs)

    @cached_property
    def _dask(self) -> dict[str, da.Array]:
        import dask.array as da

        arrays = {"features": da.from_zarr(self.features)}
        arrays.update({f"labels/{h}": da.from_zarr(a) for h, a in self.labels.items()})
        arrays.update({f"masks/{h}": da.from_zarr(a) for h, a in self.masks.items()})
        arrays.update({f"meta/{k}": da.from_zarr(a) for k, a in self.meta.items()})
        return arrays

    def to_dask(self) -> dict[str, da.Array]:
        """Every sample array as a Dask array chunked like the store, keyed by its path."""
        return dict(self._dask)


def open(path: str, mode: Literal["r", "r+"] = "r", *,  # noqa: A001 - mirrors zarr.open
         storage_options: dict[str, Any] | None = None) -> Dataset:
    """Open a chunkstore store.

    Parameters
    ----------
    path : the store's path, or an fsspec URL such as ``s3://bucket/x.zarr``.
    mode : "r" (default) or "r+".
    storage_options : fsspec options for a URL (``endpoint_url``, ``key``, ...); they become
        this process's defaults for the URL's protocol (see :func:`chunkstore.storage.configure`).

    Raises
    ------
    NotAStoreError
        If ``path`` holds no chunkstore store.

    Examples
    --------
    >>> ds = chunkstore.open("data/demo.zarr")  # doctest: +SKIP
    >>> ds.features[:5].shape
    (5, 893)
    """
    if mode not in ("r", "r+"):
        raise ChunkstoreError(f"mode must be 'r' or 'r+', found {mode!r}")
    from .storage import configure, normalize

    path = normalize(path)
    configure(path, storage_options)
    return Dataset(path, mode=mode)
