"""Row fingerprints: a 64-bit xxh3 hash of each row's bytes, NaN canonicalised.

Equal rows hash equally whatever their NaN payloads (every NaN is replaced by the one quiet NaN
of its dtype before hashing), so ``meta/row_hash`` finds exact duplicates. A hash is only a
candidate: :mod:`chunkstore.dedup` compares candidate rows byte for byte (through
:func:`canonical`), so a collision never merges two different rows.
"""

from __future__ import annotations

import numpy as np
import xxhash
from numpy.typing import NDArray

U64 = NDArray[np.uint64]


def canonical(rows: np.ndarray) -> np.ndarray:
    """``rows`` as a C-contiguous 2-D array with every NaN the canonical quiet NaN (a copy only
    when there is a NaN to replace or the input is not contiguous)."""
    rows = np.ascontiguousarray(rows.reshape(len(rows), int(np.prod(rows.shape[1:]))))
    # min() propagates NaN: one pass with no (N, F) mask allocated when there is none (~40%
    # cheaper than isnan().any() on a task's features)
    if rows.dtype.kind == "f" and rows.size and np.isnan(rows.min()):
        nan = np.isnan(rows)
        if nan.any():
            rows = rows.copy()
            rows[nan] = np.nan
    return rows


def row_hashes(rows: np.ndarray) -> U64:
    """(N,) uint64: the xxh3-64 digest of each row of ``rows`` (any shape (N, ...)), NaN
    canonicalised; a row's hash depends on its bytes only (not on N or its position)."""
    block = canonical(rows)
    if block.dtype.kind == "b":  # the buffer protocol has no bool rows; same bytes as uint8
        block = block.view(np.uint8)
    # Each row of a C-contiguous 2-D array is a contiguous buffer xxhash reads in place: no
    # slicing of a memoryview per row (~20% of the time for 3.5 KB rows).
    return np.fromiter(map(xxhash.xxh3_64_intdigest, block), np.uint64, len(block))
