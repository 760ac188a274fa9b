"""User-style producer functions for the python source tests (importable by worker processes)."""

from __future__ import annotations

import os
import time

import numpy as np

HEADS = {"move": 5, "target": 3}
N_FEATURES = 4


def rows_of(item: tuple[int, int]) -> int:
    return item[1]


def make(item: tuple[int, int]) -> dict:
    """Deterministic rows for item (key, n): feature 0 encodes (key, row) for checking."""
    key, n = item
    rng = np.random.default_rng(key)
    x = rng.normal(size=(n, N_FEATURES)).astype(np.float32)
    x[:, 0] = key * 10_000 + np.arange(n)
    out = {"features": x, "labels": {}, "masks": {}, "group": np.full(n, key, dtype=np.int64)}
    for h, k in HEADS.items():
        lab = rng.integers(0, k, size=n)
        out["labels"][h] = lab
        m = (rng.random((n, k)) < 0.5).astype(np.int8)
        m[np.arange(n), lab] = 1
        out["masks"][h] = m
    return out


def process(item: tuple[int, int]) -> dict:
    return make(item)


def process_failing(item: tuple[int, int]) -> dict:
    """Raises on key 13 unless CHUNKSTORE_TEST_FIXED is set (a bug the user then fixes)."""
    if item[0] == 13 and not os.environ.get("CHUNKSTORE_TEST_FIXED"):
        raise RuntimeError("corrupt replay header")
    return make(item)


def process_slow(item: tuple[int, int]) -> dict:
    time.sleep(0.02)
    return make(item)


def items_from_env() -> list[tuple[int, int]]:
    sizes = [int(s) for s in os.environ["CHUNKSTORE_TEST_SIZES"].split(",")]
    return [(k, n) for k, n in enumerate(sizes)]


def rows_of_plus_one_for_item_1(item: tuple[int, int]) -> int:
    return item[1] + (item[0] == 1)
