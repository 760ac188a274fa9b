"""Decoded copies of a loader's small arrays (labels, masks), kept across epochs.

A batch of the loader needs features plus a label and a mask per head: 15 arrays, 14 of them
small (a chunk of int16 labels is 2 KiB). Decoding those per window costs a file open and a
Blosc call per array and chunk, about a quarter of the decode time although they hold ~6% of
the bytes. When they are small altogether (``BUDGET`` bytes decoded, 120 MiB for 547,000 rows of
7 heads), the loader keeps one decoded copy of each for the life of the loader instead: chunks
are decoded the first time a window needs them (so the first epoch costs what it did), and
later epochs only gather rows from memory, as a memmap would from the page cache.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from chunkstore.store.chunkfiles import ChunkSource, read_chunk

BUDGET = 256 << 20  # bytes of decoded small arrays a loader may keep


class SmallArrays:
    """Whole decoded arrays, filled chunk by chunk on demand (pages untouched until filled).

    Threads fill different chunks of an epoch (every chunk is in one window); two threads
    filling the same chunk would write the same bytes, so no lock is needed.
    """

    def __init__(self, sources: Mapping[str, ChunkSource]) -> None:
        self.sources = dict(sources)
        first = next(iter(self.sources.values()))
        self.rows, self.chunk_rows = first.shape[0], first.chunk_rows
        self.arrays = {k: np.empty(s.shape, s.dtype) for k, s in self.sources.items()}
        self.have = np.zeros(-(-self.rows // self.chunk_rows), dtype=bool)

    @staticmethod
    def fits(sources: Mapping[str, ChunkSource], budget: int | None = None) -> bool:
        """Whether the decoded arrays of ``sources`` together fit ``budget`` (``BUDGET``)."""
        budget = BUDGET if budget is None else budget
        total = sum(int(np.prod(s.shape)) * s.dtype.itemsize for s in sources.values())
        return 0 < total <= budget

    def ensure(self, chunks: NDArray[np.int64]) -> None:
        """Decode the chunks not decoded yet."""
        r = self.chunk_rows
        for c in chunks.tolist():
            if self.have[c]:
                continue
            lo, hi = c * r, min(self.rows, (c + 1) * r)
            for k, src in self.sources.items():
                dst = self.arrays[k]
                if hi - lo == r:
                    read_chunk(src, c, dst[lo:hi])
                else:  # the short last chunk decodes to a whole chunk's buffer
                    dst[lo:hi] = read_chunk(src, c)
            self.have[c] = True

    def take(self, rows: NDArray[np.int64], out: Mapping[str, NDArray[Any]]
             ) -> dict[str, NDArray[Any]]:
        """Store rows ``rows`` of every array, into ``out[name][:len(rows)]``."""
        n = len(rows)
        return {k: np.take(a, rows, axis=0, out=out[k][:n], mode="clip")
                for k, a in self.arrays.items()}
