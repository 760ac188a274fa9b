"""Shared helpers: small datasets written as real npz batch files, and store readers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml
import zarr

HEADS = {"move": 5, "target": 3}
N_FEATURES = 4


def make_items(sizes: Sequence[int], *, seed: int = 0, n_features: int = N_FEATURES,
               heads: dict[str, int] = HEADS) -> list[dict[str, np.ndarray]]:
    """Batch-file dicts with the npz convention; group = item index."""
    rng = np.random.default_rng(seed)
    items = []
    for k, n in enumerate(sizes):
        d: dict[str, np.ndarray] = {
            "strategic_features": rng.normal(3.0, 2.0, size=(n, n_features)).astype(np.float32)}
        for h, classes in heads.items():
            lab = rng.integers(0, classes, size=n)
            mask = (rng.random((n, classes)) < 0.5).astype(np.int8)
            mask[np.arange(n), lab] = 1
            d[f"labels_{h}"] = lab
            d[f"masks_{h}"] = mask
        d["group"] = np.full(n, 1000 + k, dtype=np.int64)
        items.append(d)
    return items


def write_items(directory: Path, items: list[dict[str, np.ndarray]]) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    for k, d in enumerate(items):
        np.savez(directory / f"batch_{k:05d}.npz", **d)
    return str(directory / "*.npz")


def concat(items: list[dict[str, np.ndarray]], key: str) -> np.ndarray:
    return np.concatenate([d[key] for d in items])


def write_config(path: Path, *, store: Path, paths: str, n_features: int = N_FEATURES,
                 heads: dict[str, int] = HEADS, ingest: dict[str, Any] | None = None,
                 source: dict[str, Any] | None = None, **extra: Any) -> Path:
    cfg: dict[str, Any] = {
        "store": str(store),
        "schema": {"features": n_features, "heads": dict(heads)},
        "source": source or {"kind": "npz", "paths": paths},
        "ingest": {"workers": 1, **(ingest or {})},
        **extra,
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def assert_store_equals(store: Path | str, items: list[dict[str, np.ndarray]],
                        heads: dict[str, int] = HEADS) -> None:
    """Every array of the store equals the concatenated source arrays, read with plain zarr."""
    g = zarr.open_group(str(store), mode="r")
    np.testing.assert_array_equal(g["features"][:], concat(items, "strategic_features"))
    for h in heads:
        np.testing.assert_array_equal(g[f"labels/{h}"][:], concat(items, f"labels_{h}"))
        np.testing.assert_array_equal(g[f"masks/{h}"][:], concat(items, f"masks_{h}"))
    np.testing.assert_array_equal(g["meta/group"][:], concat(items, "group"))
    assert g.attrs["chunkstore"]["status"] == "complete"


def chunk_files(store: Path | str) -> dict[str, bytes]:
    """Bytes of every chunk file and array metadata file of the sample arrays."""
    out = {}
    root = Path(store)
    for sub in ("features", "labels", "masks", "meta"):
        for p in sorted((root / sub).rglob("*")):
            if p.is_file():
                out[str(p.relative_to(root))] = p.read_bytes()
    return out


