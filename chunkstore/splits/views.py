"""Split views: ``chunkstore.open(path).split("train")`` -> the rows of one part, no copy.

Names: ``ds.split("train")`` looks ``train`` up in ``splits/default``; ``ds.split("cv/fold3")``
(or ``split_view(ds, "fold3", splits="cv")``) looks ``fold3`` up in ``splits/cv``. The statistics
scope of a part is its name for ``splits/default`` and ``"<array>/<name>"`` otherwise.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from chunkstore.errors import SplitError
from chunkstore.splits.graphs import DEFAULT_ARRAY
from chunkstore.store.stats_io import Stats, load_stats

if TYPE_CHECKING:
    import dask.array as da

    from chunkstore.store.view import StoreView


class SplitView:
    """The rows of one part of a split array; arrays are Dask arrays restricted to them.

    Attributes
    ----------
    name : the part, e.g. "train".
    array : the split array's name under ``splits/`` (default "default").
    code : the part's int8 code in ``splits/<array>``.
    indices : sorted row indices of the part (read on first use, then cached).
    """

    def __init__(self, dataset: StoreView, name: str, array: str = DEFAULT_ARRAY) -> None:
        self.dataset, self.name, self.array = dataset, name, array
        resolved = dataset.split_array(array)
        self.codes_array = resolved.array
        self.attrs: dict[str, Any] = dict(resolved.array.attrs)
        self.code = resolved.code(name)

    def __repr__(self) -> str:
        return (f"<chunkstore.SplitView {self.name!r} of splits/{self.array} "
                f"({self.attrs['method']}): {len(self):,} of {self.dataset.n_samples:,} rows>")

    def __len__(self) -> int:
        return int(self.attrs["rows"][self.name])

    @cached_property
    def indices(self) -> NDArray[np.int64]:
        """Sorted rows of this part (reads the int8 split array once)."""
        return np.flatnonzero(self.codes_array[:] == self.code).astype(np.int64)

    def _take(self, key: str) -> da.Array:
        return self.dataset.to_dask()[key][self.indices]

    @property
    def features(self) -> da.Array:
        return self._take("features")

    @property
    def labels(self) -> dict[str, da.Array]:
        return {h: self._take(f"labels/{h}") for h in self.dataset.heads}

    @property
    def masks(self) -> dict[str, da.Array]:
        return {h: self._take(f"masks/{h}") for h in self.dataset.heads}

    @property
    def meta(self) -> dict[str, da.Array]:
        return {k: self._take(f"meta/{k}") for k in self.dataset.meta}

    @property
    def scope(self) -> str:
        """The statistics scope: the name for ``splits/default``, else ``<array>/<name>``."""
        return self.name if self.array == DEFAULT_ARRAY else f"{self.array}/{self.name}"

    def stats(self) -> Stats:
        """Statistics of this part: ``dataset.stats(scope)``; see :mod:`chunkstore.stats`."""
        return load_stats(self.dataset, self.scope)


def split_view(dataset: StoreView, name: str, splits: str | None = None) -> SplitView:
    """The view of part ``name`` (``"train"`` or ``"<array>/<name>"``) of a split array.

    Parameters
    ----------
    dataset : an open :class:`~chunkstore.Dataset`.
    name : the part; ``"cv/fold3"`` means part ``fold3`` of ``splits/cv``.
    splits : the split array; default ``"default"`` (or the prefix of ``name``).

    Raises
    ------
    SplitError
        The split array or the part does not exist, or the array is incomplete.

    Examples
    --------
    >>> train = chunkstore.open("data/demo.zarr").split("train")  # doctest: +SKIP
    >>> x = train.features[:1000].compute()  # doctest: +SKIP
    """
    array, _, part = name.rpartition("/")
    if array and splits and array != splits:
        raise SplitError(f"split {name!r} names array {array!r} but splits={splits!r} was given")
    return SplitView(dataset, part, array or splits or DEFAULT_ARRAY)
