"""A head added after ``chunkstore stats`` gets its mutual information in every scope that has
it, equal bit for bit to a full recompute; a store without mutual information gets counts only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr

from chunkstore import add_head, ingest
from chunkstore.splits.write import run_split
from chunkstore.stats.compute import compute_stats
from chunkstore.store import versions
from chunkstore.testing import make_items, write_config, write_items


def _store(tmp: Path) -> str:
    store = tmp / "s.zarr"
    cfg = write_config(tmp / "a.yaml", store=store,
                       paths=write_items(tmp / "items", make_items([13, 20, 9], seed=3)),
                       ingest={"chunk_rows": 8, "task_chunks": 2})
    ingest(cfg, progress=False)
    return str(store)


def _arrays(store: str, scope: str, name: str) -> dict[str, np.ndarray]:
    g = zarr.open_group(store, path=f"stats/{scope}", mode="r")
    return {k: g[f"{k}/{name}"][...] for k in ("contingency", "mutual_info", "class_counts")}


def test_new_head_mutual_info_equals_a_recompute(tmp_path):
    store = _store(tmp_path)
    run_split(store, method="random", seed=2)
    compute_stats(store, progress=False)
    compute_stats(store, split="train", progress=False)
    labels = (np.arange(42) * 7) % 5
    summary = add_head(store, "outcome", 5, labels, workers=2, progress=False)
    assert "all, train (scopes)" in summary.format()
    assert versions.resolve(store).command == "stats mutual_info/outcome"
    got = {s: _arrays(store, s, "outcome") for s in ("all", "train")}
    bias = zarr.open_group(store, path="stats/train", mode="r").attrs["mutual_info"]["bias"]
    compute_stats(store, progress=False)  # the full recompute, every head
    compute_stats(store, split="train", progress=False)
    for scope in ("all", "train"):
        want = _arrays(store, scope, "outcome")
        for k in want:
            np.testing.assert_array_equal(got[scope][k], want[k], err_msg=f"{scope} {k}")
    assert got["all"]["mutual_info"].shape == (zarr.open_array(store, path="features").shape[1],)
    assert np.isfinite(got["all"]["mutual_info"]).all()
    again = zarr.open_group(store, path="stats/train", mode="r").attrs["mutual_info"]["bias"]
    assert bias["outcome"] == again["outcome"]


def test_store_without_mutual_info_gets_counts_only(tmp_path):
    store = _store(tmp_path)
    summary = add_head(store, "outcome", 3, np.arange(42) % 3, progress=False)
    assert "no stored scope has it" in summary.format()
    g = zarr.open_group(store, path="stats/all", mode="r")
    assert "class_counts/outcome" in g and "mutual_info" not in g
    assert versions.resolve(store).command == "add-head outcome"
