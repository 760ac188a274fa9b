"""Writing one task's rows into every sample array at once.

A write task fills rows ``[start, stop)`` of ~17 arrays (features, meta, a label and a mask
array per head). Written one after another, each small array costs a full round trip through
zarr's event loop (its shard's inner chunks are encoded on worker threads, one hop each), and
those latencies add up to more than the features' write. :func:`write_rows` hands every
array's write to the event loop together (``asyncio.gather`` of the public
``Array.async_array.setitem``), so the small arrays' encodes overlap the features' and each
other's. The bytes written are the same as with sequential ``arr[start:stop] = data``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, cast

import zarr
from numpy.typing import NDArray
from zarr.core.sync import sync


def write_rows(group: zarr.Group, buffers: Mapping[str, NDArray[Any]], start: int,
               stop: int) -> None:
    """``group[name][start:stop] = data`` for every ``(name, data)`` of ``buffers``, at once."""
    arrays = [(cast(zarr.Array, group[name]), data) for name, data in buffers.items()]

    async def write_all() -> None:
        await asyncio.gather(*(a.async_array.setitem(slice(start, stop), data)
                               for a, data in arrays))

    sync(write_all())
