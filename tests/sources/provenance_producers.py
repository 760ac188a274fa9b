"""Python-source producers that supply their own provenance (``source`` -> ``meta/source``).

Imported by worker processes by name (``"provenance_producers:process"``; configs put this
directory in ``source.path``, a CLI subprocess in ``PYTHONPATH``). Item ``(key, n)`` gives ``n``
rows; row ``r``'s provenance is ``(BASE - key, 3 * r + 1)``: not the item order and not the row
index, so a store that recorded chunkstore's (item, row) instead would not pass.
"""

from __future__ import annotations

import os
import time

import numpy as np

BASE = 5_000
N_FEATURES = 4
HEAD, CLASSES = "a", 3


def provenance_of(key: int, n: int) -> np.ndarray:
    return np.stack([np.full(n, BASE - key, dtype=np.int64),
                     3 * np.arange(n, dtype=np.int64) + 1], axis=1)


def item_row(source: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (item key, row) each provenance pair came from (the inverse of provenance_of)."""
    s = np.asarray(source, dtype=np.int64)
    return BASE - s[:, 0], (s[:, 1] - 1) // 3


def process(item: tuple[int, int]) -> dict:
    """Deterministic rows of item (key, n): feature 0 encodes (key, row) for checking."""
    key, n = item
    rng = np.random.default_rng(key)
    x = rng.normal(size=(n, N_FEATURES)).astype(np.float32)
    x[:, 0] = key * 10_000 + np.arange(n)
    lab = rng.integers(0, CLASSES, size=n)
    mask = (rng.random((n, CLASSES)) < 0.5).astype(np.int8)
    mask[np.arange(n), lab] = 1
    return {"features": x, "labels": {HEAD: lab}, "masks": {HEAD: mask},
            "group": np.full(n, key, dtype=np.int64), "source": provenance_of(key, n)}


def process_slow(item: tuple[int, int]) -> dict:
    time.sleep(0.02)
    return process(item)


def process_without_source(item: tuple[int, int]) -> dict:
    out = process(item)
    del out["source"]
    return out


def process_bad_source(item: tuple[int, int]) -> dict:
    out = process(item)
    out["source"] = out["source"][:, :1]  # one column instead of two
    return out


def items_from_env() -> list[tuple[int, int]]:
    sizes = [int(s) for s in os.environ["CHUNKSTORE_TEST_SIZES"].split(",")]
    return [(k, n) for k, n in enumerate(sizes)]
