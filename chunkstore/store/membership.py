"""Which rows belong to a split: the one resolver every reader, exporter and statistic uses.

The rule: ``splits/<array>`` must be a Zarr array of shape ``(N,)`` whose attrs say
``complete: true`` (the split writer sets it last) and list the part ``names``; code ``i`` means
part ``names[i]``. Anything else is a :class:`~chunkstore.errors.SplitLookupError` that says
what to run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import zarr
from numpy.typing import NDArray

from chunkstore.errors import SplitLookupError
from chunkstore.store import layout


@dataclass(frozen=True)
class SplitArray:
    """A resolved split array: ``names[code]`` is the part of a row with that code."""

    store: str
    name: str  # under splits/
    array: zarr.Array
    names: tuple[str, ...]

    @property
    def path(self) -> str:
        return layout.split_path(self.name)

    def code(self, part: str) -> int:
        """The int8 code of ``part``; SplitLookupError naming the parts there are."""
        if part not in self.names:
            raise SplitLookupError(f"split {part!r} is not in {self.path!r}, whose names are "
                                   f"{list(self.names)} (store {self.store!r})")
        return self.names.index(part)

    def mask(self, part: str) -> NDArray[np.bool_]:
        """Boolean (N,) membership of ``part`` (reads the whole code array: 1 byte a row)."""
        code = self.code(part)
        return np.asarray(self.array[:]) == code

    def rows(self, part: str) -> NDArray[np.int64]:
        """Sorted store rows of ``part``."""
        return np.flatnonzero(self.mask(part)).astype(np.int64)


def split_array(group: zarr.Group, store: str, name: str, n_samples: int) -> SplitArray:
    """Resolve ``splits/<name>`` of an open store by the module's rule.

    Raises
    ------
    SplitLookupError
        If the array is missing, incomplete, has no part names or the wrong shape.
    """
    path = layout.split_path(name)
    node = group.get(path)
    if not isinstance(node, zarr.Array):
        sub = group.get(layout.SPLITS)
        have = sorted(sub.array_keys()) if isinstance(sub, zarr.Group) else []
        raise SplitLookupError(
            f"store {store!r} has no split array {path!r} (it has {have or 'none'}); write one "
            f"with `chunkstore split {store} --split-set {name}`, declare it in the config, or "
            "choose another split array")
    if node.attrs.get("complete") is not True:
        raise SplitLookupError(
            f"split array {path!r} of store {store!r} is incomplete (its writer stopped before "
            f"it set complete: true); rewrite it with `chunkstore split {store} --split-set {name} "
            "--overwrite`")
    names = node.attrs.get("names")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise SplitLookupError(f"split array {path!r} of store {store!r} has no list of part "
                               f"names in its attrs (found {names!r}); rewrite it")
    if tuple(node.shape) != (n_samples,):
        raise SplitLookupError(f"split array {path!r} of store {store!r} has shape "
                               f"{tuple(node.shape)}, expected ({n_samples},); rewrite it")
    return SplitArray(store, name, node, tuple(names))
