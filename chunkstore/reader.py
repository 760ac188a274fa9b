"""Reading a store: ``chunkstore.open(path)`` -> :class:`Dataset`.

The store is plain Zarr, so ``Dataset`` is a thin, typed view over ``zarr.open_group``: arrays,
names, heads, statistics and split views, and Dask arrays for analysis. Nothing is loaded until
sliced.
"""

from __future__ import annotations

import warnings
from functools import cached_property
from typing import TYPE_CHECKING, Any

import zarr

from . import layout
from .errors import ChunkstoreError

if TYPE_CHECKING:
    import dask.array as da


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

    def __init__(self, path: str, *, mode: str = "r") -> None:
        self.path = path
        self.attrs = layout.read_attrs(path)
        self.group = zarr.open_group(path, mode=mode)
        self.n_samples: int = self.attrs["n_samples"]
        self.chunk_rows: int = self.attrs["chunk_rows"]
        self.feature_names: list[str] = list(self.attrs["feature_names"])
        self.heads: dict[str, int] = {h: d["classes"] for h, d in self.attrs["heads"].items()}
        self.features = self.group["features"]
        self.labels = {h: self.group[f"labels/{h}"] for h in self.heads}
        self.masks = {h: self.group[f"masks/{h}"] for h in self.heads}
        meta = self.group.get("meta")
        self.meta = {k: v for k, v in meta.arrays()} if meta is not None else {}
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


def open(path: str, mode: str = "r") -> Dataset:  # noqa: A001 - mirrors zarr.open
    """Open a chunkstore store.

    Parameters
    ----------
    path : the store's path.
    mode : "r" (default) or "r+".

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
    return Dataset(path, mode=mode)
