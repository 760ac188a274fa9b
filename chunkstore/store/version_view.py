"""A store read as of one version: :class:`VersionView` (``chunkstore.open(path, version=)``).

A version is the row prefix ``[0, N_v)`` of the live arrays plus the split and statistics
arrays it saw (kept as blobs, see :mod:`chunkstore.store.versions`). The view is a
:class:`~chunkstore.store.view.StoreView` whose

- sample arrays (``features``, ``labels/<head>``, ``masks/<head>``, ``meta/*``) are the live
  arrays cut to ``N_v`` rows: the same chunk files (an append rewrites the last chunk with its
  old rows first, unchanged), read through metadata whose shape is ``N_v`` -- so every reader
  (the loader's direct chunk path, Dask, zarr slicing) stops at row ``N_v``;
- ``group`` is a small in-memory Zarr group holding that version's ``splits/`` and ``stats/``
  and the root attrs with ``n_samples = N_v`` and the heads it had: split lookups,
  normalization and statistics read the version's arrays, never the live ones, so a later
  ``split --overwrite`` or ``stats`` run does not change what it reads.

Heads added after the version are not part of it. The view is read-only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import zarr
from zarr.core.array import AsyncArray
from zarr.storage import MemoryStore

from chunkstore.store import layout, versions
from chunkstore.store.stats_io import STATS
from chunkstore.store.view import DIGEST_KEY, StoreView

OVERLAY = (layout.SPLITS, STATS)  # top-level nodes a version keeps its own copy of


def truncated(array: zarr.Array, n: int) -> zarr.Array:
    """A read-only view of rows ``[0, n)`` of ``array``: the same chunk files, shape cut.

    Arrays with ``n`` rows or fewer are returned as they are.
    """
    if array.shape[0] <= n:
        return array
    a = array._async_array
    meta = a.metadata.update_shape((n, *array.shape[1:]))
    return zarr.Array(AsyncArray(metadata=meta, store_path=a.store_path, config=a.config))


def _put(group: zarr.Group, path: str, data: np.ndarray[Any, Any],
         attrs: Mapping[str, Any] | None = None) -> None:
    parent, _, name = path.rpartition("/")
    where = group.require_group(parent) if parent else group
    a = np.ascontiguousarray(data)
    arr = where.create_array(name, shape=a.shape, dtype=a.dtype, chunks=a.shape or (1,),
                             compressors=None, fill_value=0)
    arr[...] = a
    if attrs:
        arr.attrs.update(dict(attrs))


def overlay_group(store: str, version: versions.Version, root_attrs: Mapping[str, Any]
                  ) -> zarr.Group:
    """An in-memory group with the version's ``splits/``, ``stats/`` and root attrs."""
    group = zarr.open_group(MemoryStore(), mode="w", zarr_format=3)
    attrs = {k: v for k, v in root_attrs.items() if k != DIGEST_KEY}
    cs = dict(attrs.get(layout.ATTR_KEY, {}))
    live_heads = dict(cs.get("heads", {}))
    cs["n_samples"] = version.n_samples
    cs["heads"] = {h: live_heads.get(h, {"classes": k}) for h, k in version.heads.items()}
    attrs[layout.ATTR_KEY] = cs
    attrs["chunkstore_version_of"] = {"id": version.id, "time": version.time,
                                      "command": version.command}
    group.attrs.update(attrs)
    for name, sha in sorted(version.splits.items()):
        arrays, a = versions.read_blob(store, sha)
        _put(group, layout.split_path(name), arrays["codes"], a)
    for scope, sha in sorted(version.stats.items()):
        arrays, a = versions.read_blob(store, sha)
        sub = group.require_group(f"{STATS}/{scope}")
        sub.attrs.update(a)
        for name, value in arrays.items():
            _put(sub, name, value)
    return group


class VersionView(StoreView):
    """A store as of version ``version`` (an id, a tag, or None/"latest"); see the module
    docstring. ``live_group`` is the store's root group as it is now.

    Raises
    ------
    VersionError
        If the store has no such version or tag.
    """

    def __init__(self, path: str, version: str | int | None = None, *, warn: bool = True,
                 storage_options: Mapping[str, Any] | None = None) -> None:
        super().__init__(path, mode="r", warn=warn, storage_options=storage_options)
        self.version = versions.resolve(self.path, version)
        n = self.version.n_samples
        self.live_group = self.group
        self.group = overlay_group(self.path, self.version, dict(self.live_group.attrs))
        self.attrs = dict(self.group.attrs[layout.ATTR_KEY])  # type: ignore[arg-type]
        self.n_samples = n
        self.heads = dict(self.version.heads)
        self.features = truncated(self.features, n)
        self.labels = {h: self.array(layout.label_path(h)) for h in self.heads}
        self.masks = {h: self.array(layout.mask_path(h)) for h in self.heads}
        self.meta = {k: truncated(a, n) for k, a in self.meta.items()}

    def array(self, name: str) -> zarr.Array:
        """``splits/...`` and ``stats/...`` as the version saw them; sample arrays cut to its
        rows; KeyError if there is none."""
        live = getattr(self, "live_group", None)
        if live is None or name.split("/", 1)[0] in OVERLAY:
            return super().array(name)  # during StoreView.__init__, or the version's copy
        node = live[name]
        if not isinstance(node, zarr.Array):
            raise KeyError(f"{name!r} in store {self.path!r} is a group, not an array")
        return truncated(node, self.n_samples)

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", version {self.version.id}>"
