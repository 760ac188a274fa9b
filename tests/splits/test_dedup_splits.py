"""Splits and exact duplicates: leakage reported, --dedup splits leak nothing (issue 17)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from chunkstore import ingest
from chunkstore.cli.app import main
from chunkstore.core.splitspec import SplitSpec
from chunkstore.dedup import dedup
from chunkstore.errors import SplitError
from chunkstore.splits.write import write_split
from chunkstore.testing import make_items, write_config, write_items

SIZES = [9, 14, 7, 20, 11, 16, 5, 13, 18, 10, 12, 8, 15, 6, 17, 9, 11, 14, 7, 19] * 2  # 40 groups
# (source row, copy row) pairs: many across groups, so grouped --dedup must merge groups
COPIES = [(3, 400), (3, 401), (20, 21), (50, 300), (60, 460), (100, 101), (120, 250),
          (130, 131), (200, 470), (210, 215), (222, 350), (240, 241), (280, 420), (5, 440)]


def _rows(store: str, path: str) -> np.ndarray:
    return np.asarray(zarr.open_group(store, mode="r")[path][:])


@pytest.fixture(scope="module")
def dup_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    tmp = tmp_path_factory.mktemp("dupsplit")
    items = make_items(SIZES, seed=11)
    feats = np.concatenate([d["strategic_features"] for d in items])
    for src, dst in COPIES:
        feats[dst] = feats[src]
    bounds = np.r_[0, np.cumsum(SIZES)]
    for k, d in enumerate(items):
        d["strategic_features"] = feats[bounds[k]:bounds[k + 1]]
    cfg = write_config(tmp / "c.yaml", store=tmp / "s.zarr", paths=write_items(tmp / "b", items),
                       ingest={"chunk_rows": 16, "workers": 2})
    ingest(cfg, progress=False)
    return str(tmp / "s.zarr")


@pytest.fixture
def deduped(dup_store: str, tmp_path: Path) -> str:
    store = str(tmp_path / "d.zarr")
    shutil.copytree(dup_store, store)
    dedup(store)
    return store


def _brute_leakage(codes: np.ndarray, dup: np.ndarray, parts: int) -> list[int]:
    root = np.where(dup >= 0, dup, np.arange(dup.size))
    out = [0] * parts
    for i in range(dup.size):
        if codes[i] != 0 and np.any((root == root[i]) & (codes == 0)):
            out[codes[i]] += 1
    return out


def test_leakage_reported_exactly(deduped: str) -> None:
    s = write_split(deduped, SplitSpec(name="plain", method="random", seed=4))
    codes, dup = _rows(deduped, "splits/plain"), _rows(deduped, "meta/duplicate_of")
    want = _brute_leakage(codes, dup, 3)
    assert list(s.leaked or ()) == want and sum(want) > 0  # seed 4 leaks: the test can fail
    assert "rows with an exact duplicate in train: val" in s.format()
    assert zarr.open_group(deduped)["splits/plain"].attrs["leaked"]["val"] == want[1]


def test_no_duplicate_array_no_leakage_figure(dup_store: str, tmp_path: Path) -> None:
    store = str(tmp_path / "n.zarr")
    shutil.copytree(dup_store, store)
    s = write_split(store, SplitSpec(name="plain", method="random"))
    assert s.leaked is None and "not checked" in s.format()
    with pytest.raises(SplitError, match="chunkstore dedup"):
        write_split(store, SplitSpec(name="d", method="random", dedup=True))


SPECS = [SplitSpec(name="r", method="random", seed=4, dedup=True),
         SplitSpec(name="s", method="stratified", by="move", seed=4, dedup=True),
         SplitSpec(name="g", method="group", seed=4, dedup=True),
         SplitSpec(name="sg", method="stratified-group", by="move", seed=4, dedup=True),
         SplitSpec(name="kg", method="kfold", fractions=(("fold0", .5), ("fold1", .5)), k=2,
                   group=True, seed=1, dedup=True)]


@pytest.mark.parametrize("spec", SPECS, ids=[s.method + ("-g" if s.group else "") for s in SPECS])
def test_dedup_splits_leak_nothing(deduped: str, spec: SplitSpec) -> None:
    s = write_split(deduped, spec)
    codes, dup = _rows(deduped, f"splits/{spec.name}"), _rows(deduped, "meta/duplicate_of")
    copies = np.flatnonzero(dup >= 0)
    assert np.array_equal(codes[copies], codes[dup[copies]])  # every copy with its first row
    assert s.leaked is not None and not any(s.leaked)
    assert sum(s.rows) == dup.size and codes.min() >= 0
    if spec.method in ("group", "stratified-group") or spec.group:
        group = _rows(deduped, "meta/group")
        for g in np.unique(group):  # no group crosses parts
            assert np.unique(codes[group == g]).size == 1


def test_dedup_random_moves_only_copies(deduped: str) -> None:
    plain = write_split(deduped, SplitSpec(name="p", method="random", seed=4))
    write_split(deduped, SplitSpec(name="d", method="random", seed=4, dedup=True))
    p, d = _rows(deduped, "splits/p"), _rows(deduped, "splits/d")
    dup = _rows(deduped, "meta/duplicate_of")
    assert np.array_equal(p[dup < 0], d[dup < 0]) and plain.leaked and any(plain.leaked)


def test_cli_split_dedup_runs_dedup_first(dup_store: str, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    store = str(tmp_path / "c.zarr")
    shutil.copytree(dup_store, store)
    assert main(["split", store, "--method", "group", "--dedup", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "meta/duplicate_of" in out and "rows with an exact duplicate in train: val 0, test 0" \
        in out


def test_stale_duplicates_are_not_used(deduped: str) -> None:
    """After an append meta/duplicate_of covers fewer rows than the store: not trusted."""
    arr = zarr.open_group(deduped, mode="r+")["meta/duplicate_of"]
    arr.update_attributes({"rows": int(arr.attrs["rows"]) - 10})
    s = write_split(deduped, SplitSpec(name="st", method="random"))
    assert s.leaked is None
    with pytest.raises(SplitError, match="appended after the dedup"):
        write_split(deduped, SplitSpec(name="st2", method="group", dedup=True))
