"""A read-only view of an open store: attrs, arrays, names and heads; nothing loaded.

Every operation that reads a store (statistics, splits, the loader, exporters) takes a
:class:`StoreView`; :class:`chunkstore.Dataset` adds the user-facing methods on top of it.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

import zarr

from chunkstore.errors import IncompleteStoreWarning, IntegrityError, ReadError
from chunkstore.store import layout
from chunkstore.store.journal import completed_tasks, missing_rows
from chunkstore.store.membership import SplitArray, split_array
from chunkstore.store.urls import configure, normalize, open_group, storage_options

if TYPE_CHECKING:
    import dask.array as da


DIGEST_KEY = "chunkstore_digest"  # root attr: per-key sha256 of the chunkstore attrs at commit


def attrs_digest(attrs: Mapping[str, Any]) -> dict[str, str]:
    """A short sha256 of every ``chunkstore`` attr, key by key (so a change names its key)."""
    return {k: hashlib.sha256(json.dumps(v, sort_keys=True).encode()).hexdigest()[:16]
            for k, v in attrs.items()}


def seal_attrs(path: str) -> None:
    """Record the digest of the store's ``chunkstore`` attrs (at commit, after every change)."""
    group = open_group(path, mode="r+")
    group.attrs[DIGEST_KEY] = attrs_digest(dict(group.attrs[layout.ATTR_KEY]))  # type: ignore[arg-type]


def attrs_problems(path: str, group: zarr.Group | None = None) -> list[str]:
    """Keys of the ``chunkstore`` attrs that differ from the digest sealed at commit.

    An unsealed store (incomplete, or written before digests) has none to check against.
    """
    group = group if group is not None else open_group(path, mode="r")
    sealed = group.attrs.get(DIGEST_KEY)
    attrs = group.attrs.get(layout.ATTR_KEY)
    if not isinstance(sealed, dict):
        return []
    if not isinstance(attrs, dict):
        return [f"attrs key {layout.ATTR_KEY!r} is missing or not a mapping"]
    now = attrs_digest(attrs)
    if attrs.get("status") == layout.INCOMPLETE and "status" in sealed:
        now["status"] = sealed["status"]  # back to incomplete (to be resumed): opens warn
    out = [f"attrs key {k!r} was removed" for k in sealed if k not in now]
    out += [f"attrs key {k!r} was added" for k in now if k not in sealed]
    out += [f"attrs key {k!r} was changed (found {_short(attrs[k])})" for k in sealed
            if k in now and now[k] != sealed[k]]
    return out


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text):,} chars)"


def check_attrs(path: str, group: zarr.Group | None = None) -> None:
    """IntegrityError naming every ``chunkstore`` attr that changed since the store was sealed."""
    bad = attrs_problems(path, group)
    if bad:
        raise IntegrityError(
            f"store {path!r}: its zarr.json was edited after chunkstore wrote it: "
            f"{'; '.join(bad)}. Restore the file (or rebuild the store); `chunkstore verify "
            f"{path}` lists every problem")


def is_decode_error(e: BaseException) -> bool:
    """Whether ``e`` is zarr/numcodecs failing on a chunk's bytes (checksum, Blosc, size)."""
    text = str(e).lower()
    return isinstance(e, (ValueError, RuntimeError, TypeError)) and any(
        w in text for w in ("checksum", "blosc", "decompress", "cannot reshape", "buffer size"))


def read_checked(array: zarr.Array, start: int, stop: int, store: str = "") -> Any:
    """``array[start:stop]``; a chunk that does not decode is a ReadError naming its key and
    rows (found by reading the range's chunks one by one, only after a failure)."""
    try:
        return array[start:stop]
    except Exception as e:
        if not is_decode_error(e):
            raise
        r = int(array.chunks[0])
        for c in range(start // r, -(-stop // r)):
            try:
                array[c * r:min((c + 1) * r, array.shape[0])]
            except Exception as bad:
                key = f"{array.path}/{layout.chunk_key(array, c)}"
                where = f" of store {store!r}" if store else ""
                raise ReadError(
                    f"chunk {key!r}{where} (rows [{c * r}, {min((c + 1) * r, array.shape[0])}) "
                    f"of array {array.path!r}) is corrupt: {str(bad).splitlines()[0][:200]}; "
                    "`chunkstore verify` lists every bad chunk and `chunkstore repair CONFIG` "
                    "rewrites them from the source") from bad
        raise ReadError(f"array {array.path!r} rows [{start}, {stop}) do not decode: "
                        f"{str(e).splitlines()[0][:200]}") from e


class StoreView:
    """A chunkstore store opened for reading.

    Parameters
    ----------
    path : the store's path or fsspec URL.
    mode : "r" or "r+" (for writers of statistics and splits).
    warn : warn (IncompleteStoreWarning) when the store is not complete.
    storage_options : fsspec options for a URL; registered for this store only (see
        :func:`chunkstore.store.urls.configure`); None uses those registered already.

    Attributes
    ----------
    path : the store's path or URL.
    attrs : the store's ``chunkstore`` attrs.
    group : the root ``zarr.Group``.
    features : zarr.Array (N, F)
    labels, masks : dict head -> zarr.Array
    meta : dict name -> zarr.Array (``group``, ``source`` when present)
    n_samples, chunk_rows : int
    feature_names : list[str]
    heads : dict head -> number of classes
    """

    def __init__(self, path: str, *, mode: Literal["r", "r+"] = "r", warn: bool = True,
                 storage_options: Mapping[str, Any] | None = None) -> None:
        self.path = path = normalize(path)
        configure(path, storage_options)  # every later open of this store's files uses them
        self.attrs = layout.read_attrs(path)
        self.group = open_group(path, mode=mode)
        check_attrs(path, self.group)
        self.n_samples: int = self.attrs["n_samples"]
        self.chunk_rows: int = self.attrs["chunk_rows"]
        self.feature_names: list[str] = list(self.attrs["feature_names"])
        self.heads: dict[str, int] = {h: d["classes"] for h, d in self.attrs["heads"].items()}
        self.features = self.array(layout.FEATURES)
        self.labels = {h: self.array(layout.label_path(h)) for h in self.heads}
        self.masks = {h: self.array(layout.mask_path(h)) for h in self.heads}
        meta = self.group.get(layout.META)
        self.meta: dict[str, zarr.Array] = (
            dict(meta.arrays()) if isinstance(meta, zarr.Group) else {})
        self.unfinished_streaming = (self.status != layout.COMPLETE
                                     and self.attrs.get("placement") == "streaming")
        if self.unfinished_streaming:
            self.n_samples = 0  # its rows are placed only when the ingest ends
            if warn:
                committed = len(completed_tasks(path))
                warnings.warn(
                    f"store {path!r} is a streaming ingest that has not finished: "
                    f"{committed:,} chunks are committed in its journal but rows are placed "
                    "only at the end, so it reads as 0 rows; rerun the ingest to finish it",
                    IncompleteStoreWarning, stacklevel=3)
        elif warn and self.status != layout.COMPLETE:
            gaps = missing_rows(path)
            shown = ", ".join(f"[{a}, {b})" for a, b in gaps[:5]) + (" ..." if len(gaps) > 5
                                                                     else "")
            warnings.warn(
                f"store {path!r} is incomplete: {sum(b - a for a, b in gaps):,} of "
                f"{self.n_samples:,} rows are not written yet ({shown}); they read as NaN "
                "features and label -1. Rerun the ingest to finish it.",
                IncompleteStoreWarning, stacklevel=3)

    def array(self, name: str) -> zarr.Array:
        """The array at ``name`` (e.g. ``"splits/default"``); KeyError if there is none."""
        node = self.group[name]
        if not isinstance(node, zarr.Array):
            raise KeyError(f"{name!r} in store {self.path!r} is a group, not an array")
        return node

    @property
    def storage_options(self) -> dict[str, Any]:
        """The fsspec options this process uses for the store (``{}`` for a local path); pass
        them to plain zarr or fsspec: ``zarr.open_group(ds.path, storage_options=...)``."""
        return storage_options(self.path)

    @property
    def status(self) -> str:
        return str(self.attrs["status"])

    def split_array(self, name: str = layout.DEFAULT_SPLITS) -> SplitArray:
        """``splits/<name>``, resolved by the one membership rule (SplitLookupError if not)."""
        return split_array(self.group, self.path, name, self.n_samples)

    @cached_property
    def _dask(self) -> dict[str, da.Array]:
        import dask.array as da

        if self.unfinished_streaming:
            raise ReadError(f"store {self.path!r} is a streaming ingest that has not finished; "
                            "its arrays are not sized yet: rerun the ingest to finish it")
        arrays = {"features": da.from_zarr(self.features)}
        arrays.update({f"labels/{h}": da.from_zarr(a) for h, a in self.labels.items()})
        arrays.update({f"masks/{h}": da.from_zarr(a) for h, a in self.masks.items()})
        arrays.update({f"meta/{k}": da.from_zarr(a) for k, a in self.meta.items()})
        return arrays

    def to_dask(self) -> dict[str, da.Array]:
        """Every sample array as a Dask array chunked like the store, keyed by its path."""
        return dict(self._dask)

    def __len__(self) -> int:
        return self.n_samples

    def __repr__(self) -> str:
        return (f"<chunkstore.{type(self).__name__} {self.path!r}: {self.n_samples:,} samples "
                f"x {len(self.feature_names)} features, heads {self.heads}, {self.status}>")

