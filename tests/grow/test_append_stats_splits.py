"""After an append: merged statistics equal a full recompute within the exactness bars, and
every stored split is extended (old rows keep their codes, no group in two parts)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from chunkstore import ingest
from chunkstore.ingest.append import append
from chunkstore.splits.write import run_split
from chunkstore.stats.compute import compute_stats
from chunkstore.testing import make_items, write_config, write_items

A_SIZES, B_SIZES = [37, 5, 60, 23], [41, 9, 77]  # A: 125 rows, ends mid-chunk


def _cfg(tmp: Path, name: str, items: list, store: Path) -> Path:
    return write_config(tmp / f"{name}.yaml", store=store,
                        paths=write_items(tmp / f"{name}-items", items),
                        ingest={"chunk_rows": 8, "task_chunks": 2, "workers": 2},
                        stats={"correlation": True})


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> tuple[str, str, dict[str, np.ndarray]]:
    tmp = tmp_path_factory.mktemp("grow")
    items = make_items(A_SIZES + B_SIZES, seed=5)
    grown, whole = tmp / "grown.zarr", tmp / "whole.zarr"
    ingest(_cfg(tmp, "a", items[:len(A_SIZES)], grown), progress=False)
    run_split(str(grown), method="random", seed=4, name="default")
    run_split(str(grown), method="group", seed=4, name="grouped")
    run_split(str(grown), method="stratified", by="move", seed=4, name="strat")
    compute_stats(str(grown), split="train", progress=False)
    before = {name: np.asarray(zarr.open_array(str(grown), path=f"splits/{name}")[:])
              for name in ("default", "grouped", "strat")}
    summary = append(_cfg(tmp, "b", items[len(A_SIZES):], grown))
    assert set(summary.splits_extended) == {"default", "grouped", "strat"}
    assert set(summary.scopes_updated) == {"all", "train"}
    ingest(_cfg(tmp, "whole", items, whole), progress=False)
    run_split(str(whole), method="random", seed=4, name="default")
    compute_stats(str(whole), progress=False)
    return str(grown), str(whole), before


def _stats(store: str, scope: str) -> dict[str, np.ndarray]:
    g = zarr.open_group(store, path=f"stats/{scope}", mode="r")
    return {k: np.asarray(a[...]) for k, a in g.arrays()} | {
        f"class_counts/{h}": np.asarray(a[...])
        for h, a in zarr.open_group(store, path=f"stats/{scope}/class_counts").arrays()}


def _check_exact(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    np.testing.assert_array_equal(got["count"], want["count"])
    np.testing.assert_array_equal(got["min"], want["min"])
    np.testing.assert_array_equal(got["max"], want["max"])
    np.testing.assert_allclose(got["mean"], want["mean"], rtol=1e-12, atol=0)
    np.testing.assert_allclose(got["std"] ** 2, want["std"] ** 2, rtol=1e-10, atol=0)
    np.testing.assert_allclose(got["corr"], want["corr"], rtol=0, atol=1e-9)
    for h in ("move", "target"):
        np.testing.assert_array_equal(got[f"class_counts/{h}"], want[f"class_counts/{h}"])


def test_stats_all_after_append_equals_a_full_recompute(stores):
    grown, whole, _ = stores
    _check_exact(_stats(grown, "all"), _stats(whole, "all"))
    attrs = zarr.open_group(grown, path="stats/all").attrs.asdict()
    assert attrs["method"] == "append" and attrs["rows"] == sum(A_SIZES + B_SIZES)


def test_split_scope_after_append_equals_a_full_recompute(stores, tmp_path):
    grown, whole, _ = stores
    np.testing.assert_array_equal(zarr.open_array(grown, path="splits/default")[:],
                                  zarr.open_array(whole, path="splits/default")[:])
    compute_stats(whole, split="train", progress=False)
    _check_exact(_stats(grown, "train"), _stats(whole, "train"))


def test_old_rows_keep_codes_and_no_group_is_in_two_parts(stores):
    grown, _, before = stores
    n_a, n = sum(A_SIZES), sum(A_SIZES + B_SIZES)
    group = np.asarray(zarr.open_array(grown, path="meta/group")[:])
    for name, old in before.items():
        codes = np.asarray(zarr.open_array(grown, path=f"splits/{name}")[:])
        assert codes.shape == (n,) and codes.min() >= 0
        np.testing.assert_array_equal(codes[:n_a], old)
    grouped = np.asarray(zarr.open_array(grown, path="splits/grouped")[:])
    for g in np.unique(group):
        assert np.unique(grouped[group == g]).size == 1
    strat = np.asarray(zarr.open_array(grown, path="splits/strat")[:])
    labels = np.asarray(zarr.open_array(grown, path="labels/move")[:])
    for c in np.unique(labels):  # every class spread over the parts near 0.8/0.1/0.1
        share = np.bincount(strat[labels == c], minlength=3) / np.count_nonzero(labels == c)
        assert abs(share[0] - 0.8) < 0.1


def test_a_merged_scope_drops_its_second_pass_arrays_and_says_so(stores):
    grown = stores[0]
    g = zarr.open_group(grown, path="stats/train", mode="r")
    assert not {"hist", "hist_edges", "quantiles", "mutual_info", "contingency"} & set(g)
    assert g.attrs["method"] == "append" and "chunkstore stats" in g.attrs["append_note"]
    assert "bins" not in g.attrs and {"mean", "corr", "class_counts"} <= set(g)
