"""Small datasets written as real batch files, configs that ingest them, and store checks.

Items use the npz batch-file convention of the ``npz`` source: ``strategic_features`` (n, F)
float32, ``labels_<head>`` (n,), ``masks_<head>`` (n, K) int8 and ``group`` (n,) int64. A source
author writes the same items in their own format and checks the ingested store with
:func:`assert_store_equals`.
"""

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
    """Batch-file dicts with the npz convention, one per size; group = 1000 + item index.

    Examples
    --------
    >>> [len(d["group"]) for d in make_items([3, 0, 2])]
    [3, 0, 2]
    """
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
    """One ``batch_<k>.npz`` per item under ``directory``; returns the glob naming them."""
    directory.mkdir(parents=True, exist_ok=True)
    for k, d in enumerate(items):
        np.savez(directory / f"batch_{k:05d}.npz", **d)  # type: ignore[arg-type]
    return str(directory / "*.npz")


def concat(items: list[dict[str, np.ndarray]], key: str) -> np.ndarray:
    """One member of every item, concatenated in item order (the store's row order)."""
    return np.concatenate([d[key] for d in items])


def write_config(path: Path, *, store: Path, paths: str | None, n_features: int = N_FEATURES,
                 heads: dict[str, int] = HEADS, ingest: dict[str, Any] | None = None,
                 source: dict[str, Any] | None = None, **extra: Any) -> Path:
    """A YAML config at ``path``: the npz source over ``paths`` unless ``source`` is given;
    one worker unless ``ingest`` says otherwise; ``extra`` adds top-level keys."""
    cfg: dict[str, Any] = {
        "store": str(store),
        "schema": {"features": n_features, "heads": dict(heads)},
        "source": source or {"kind": "npz", "paths": paths},
        "ingest": {"workers": 1, **(ingest or {})},
        **extra,
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def _array(store: Path | str, path: str) -> np.ndarray:
    """One whole array of a store, read with plain zarr."""
    return np.asarray(zarr.open_array(str(store), path=path, mode="r")[...])


def assert_store_equals(store: Path | str, items: list[dict[str, np.ndarray]],
                        heads: dict[str, int] = HEADS) -> None:
    """Every array of the store equals the concatenated source arrays, read with plain zarr."""
    np.testing.assert_array_equal(_array(store, "features"), concat(items, "strategic_features"))
    for h in heads:
        np.testing.assert_array_equal(_array(store, f"labels/{h}"), concat(items, f"labels_{h}"))
        np.testing.assert_array_equal(_array(store, f"masks/{h}"), concat(items, f"masks_{h}"))
    np.testing.assert_array_equal(_array(store, "meta/group"), concat(items, "group"))
    attrs: Any = zarr.open_group(str(store), mode="r").attrs.asdict()
    assert attrs["chunkstore"]["status"] == "complete"


def chunk_files(store: Path | str) -> dict[str, bytes]:
    """Bytes of every chunk file and array metadata file of the sample arrays (local store)."""
    out = {}
    root = Path(store)
    for sub in ("features", "labels", "masks", "meta"):
        for p in sorted((root / sub).rglob("*")):
            if p.is_file():
                out[str(p.relative_to(root))] = p.read_bytes()
    return out


def read_all(store: str) -> dict[str, np.ndarray]:
    """features, ``labels/<head>`` and ``masks/<head>`` of a store, read whole with plain zarr."""
    out = {"features": _array(store, "features")}
    for kind in ("labels", "masks"):
        for h in zarr.open_group(store, path=kind, mode="r").array_keys():
            out[f"{kind}/{h}"] = _array(store, f"{kind}/{h}")
    return out


def assert_batch_matches(batch: dict[str, Any], full: dict[str, np.ndarray]) -> None:
    """A loader batch (numpy) equals the rows ``batch["index"]`` of :func:`read_all`'s arrays."""
    idx = batch["index"]
    np.testing.assert_array_equal(batch["features"], full["features"][idx])
    for kind in ("labels", "masks"):
        for h, a in batch[kind].items():
            np.testing.assert_array_equal(a, full[f"{kind}/{h}"][idx])
