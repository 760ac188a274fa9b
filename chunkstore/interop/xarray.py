"""A store as one lazy ``xarray.Dataset`` (Dask-backed, chunked as stored)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from chunkstore.errors import MissingDependencyError
from chunkstore.store.view import StoreView

if TYPE_CHECKING:
    import dask.array as da
    import xarray as xr


def to_xarray(view: StoreView, arrays: dict[str, da.Array]) -> xr.Dataset:
    """Every sample array as one lazy ``xarray.Dataset``.

    Variables ``features`` (sample, feature), ``labels_<head>`` (sample,), ``masks_<head>``
    (sample, <head>_class) and ``meta_<name>``; coordinates ``sample`` (row numbers) and
    ``feature`` (feature names); the store's chunkstore attrs as ``attrs``. ``arrays`` are the
    store's Dask arrays keyed by path (``Dataset.to_dask()``).

    Raises
    ------
    MissingDependencyError
        (also an ImportError) if xarray is not installed (``pip install 'chunkstore[xarray]'``).
    """
    try:
        import xarray as xr
    except ImportError as e:
        raise MissingDependencyError("Dataset.to_xarray() needs xarray: pip install "
                                     "'chunkstore[xarray]'") from e
    data: dict[str, tuple[tuple[str, ...], da.Array]] = {
        "features": (("sample", "feature"), arrays["features"])}
    for h in view.heads:
        data[f"labels_{h}"] = (("sample",), arrays[f"labels/{h}"])
        data[f"masks_{h}"] = (("sample", f"{h}_class"), arrays[f"masks/{h}"])
    for k in view.meta:
        a = arrays[f"meta/{k}"]
        data[f"meta_{k}"] = (("sample", *(f"{k}_dim{i}" for i in range(1, a.ndim))), a)
    coords = {"sample": np.arange(view.n_samples), "feature": view.feature_names}
    attrs = {k: v for k, v in view.attrs.items()
             if k not in ("feature_names", "heads", "compression")}
    attrs["heads"] = ",".join(f"{h}:{k}" for h, k in view.heads.items())
    return xr.Dataset(data, coords=coords, attrs=attrs)
