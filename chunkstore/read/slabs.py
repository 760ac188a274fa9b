"""Recycled output buffers for the loader's windows."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any

from numpy.typing import NDArray


class SlabPool:
    """Window output buffers ("slabs"), recycled only when nothing refers to them any more.

    A window's batches are views of one slab per array. Fresh slabs per window make the
    kernel zero new pages, ~10% of the loader's CPU. Reusing a slab is safe only when no view
    of it is alive anywhere -- a batch the caller kept, a view of a view, a tensor sharing its
    memory: each of those holds a reference to the slab array itself (numpy views point at the
    owner), so a slab is free exactly when its reference counts are back to what they were
    when it was new and not handed out.
    """

    def __init__(self, make: Callable[[], dict[str, NDArray[Any]]], keep: int) -> None:
        self._make, self._keep = make, keep
        self._entries: list[list[Any]] = []  # [slab, baseline refcounts, busy]
        self._lock = threading.Lock()

    @staticmethod
    def _refs(slab: dict[str, NDArray[Any]]) -> list[int]:
        return [sys.getrefcount(a) for a in slab.values()]

    def acquire(self) -> dict[str, NDArray[Any]]:
        """A slab no one refers to: a recycled one, else a new one (kept if there is room)."""
        with self._lock:
            for entry in self._entries:
                if not entry[2] and self._refs(entry[0]) == entry[1]:
                    entry[2] = True
                    return entry[0]  # type: ignore[no-any-return]
            slab = self._make()
            if len(self._entries) < self._keep:
                self._entries.append([slab, self._refs(slab), True])
            return slab

    def release(self, slab: dict[str, NDArray[Any]]) -> None:
        """The producer is done writing ``slab``; it is reused once its views are gone."""
        with self._lock:
            for entry in self._entries:
                if entry[0] is slab:
                    entry[2] = False
