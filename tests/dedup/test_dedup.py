"""chunkstore dedup on real stores with planted duplicates (issue 17)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

import chunkstore
from chunkstore import ingest
from chunkstore.cli.app import main
from chunkstore.core.rowhash import canonical, row_hashes
from chunkstore.dedup import dedup
from chunkstore.errors import DedupError
from chunkstore.testing import make_items, write_config, write_items

SIZES = [37, 5, 60, 23, 41, 9, 77, 30, 1, 50]  # 333 rows in 10 items (tasks), chunks of 8
CHUNK = 8


def _bounds(sizes: list[int]) -> np.ndarray:
    return np.r_[0, np.cumsum(sizes)]


def _set_row(items: list[dict[str, Any]], row: int, dst: int, keep_labels: bool = True) -> None:
    """Copy the features of global row ``row`` onto global row ``dst`` (labels stay dst's
    unless ``keep_labels`` is False, then they are copied too)."""
    b = _bounds([len(d["group"]) for d in items])
    k = np.searchsorted(b, row, side="right") - 1
    i = row - b[k]
    kd = np.searchsorted(b, dst, side="right") - 1
    j = dst - b[kd]
    items[kd]["strategic_features"][j] = items[k]["strategic_features"][i]
    if not keep_labels:
        for h in ("move", "target"):
            items[kd][f"labels_{h}"][j] = items[k][f"labels_{h}"][i]
            items[kd][f"masks_{h}"][j] = items[k][f"masks_{h}"][i]


# copies: (source row, copy row): within a chunk, across chunks, across items (tasks)
PLANTED = [(0, 3), (10, 200), (10, 320), (40, 41), (100, 300), (150, 151), (150, 152)]


def _store(tmp: Path, items: list[dict[str, Any]], workers: int = 1) -> str:
    cfg = write_config(tmp / "c.yaml", store=tmp / "s.zarr", paths=write_items(tmp / "b", items),
                       ingest={"chunk_rows": CHUNK, "workers": workers})
    ingest(cfg, progress=False)
    return str(tmp / "s.zarr")


def _expected(features: np.ndarray) -> np.ndarray:
    """duplicate_of by brute force over canonical bytes."""
    rows = canonical(features)
    first: dict[bytes, int] = {}
    out = np.full(len(rows), -1, dtype=np.int64)
    for i, r in enumerate(rows):
        b = r.tobytes()
        if b in first:
            out[i] = first[b]
        else:
            first[b] = i
    return out


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[dict[str, Any]]]:
    items = make_items(SIZES, seed=5)
    for src, dst in PLANTED:
        _set_row(items, src, dst, keep_labels=(src, dst) != (40, 41))
    # NaN rows with different payloads are equal; an all-NaN row twice as well
    nan_a = np.float32(np.nan)
    nan_b = np.array([0x7FC00123], dtype=np.uint32).view(np.float32)[0]
    items[2]["strategic_features"][5] = [1.5, nan_a, 2.0, 3.0]  # row 47
    items[6]["strategic_features"][70] = [1.5, nan_b, 2.0, 3.0]  # row 245
    workers = 2
    return _store(tmp_path_factory.mktemp("planted"), items, workers=workers), items


def test_planted_duplicates_found_exactly(planted: tuple[str, list[dict[str, Any]]]) -> None:
    store, items = planted
    s = dedup(store)
    g = zarr.open_group(store, mode="r")
    dup = g["meta/duplicate_of"][:]
    want = _expected(np.concatenate([d["strategic_features"] for d in items]))
    np.testing.assert_array_equal(dup, want)
    assert dup[3] == 0 and dup[200] == 10 and dup[320] == 10 and dup[41] == 40
    assert dup[245] == 47  # NaN payloads differ, the rows are equal
    assert s.duplicate_rows == int((want >= 0).sum()) == 8
    assert s.groups == 6 and s.largest[:2] == ((10, 3), (150, 3))
    assert dict(g["meta/duplicate_of"].attrs)["rows"] == 333
    np.testing.assert_array_equal(chunkstore.open(store).duplicates[:], want)


def test_conflicting_labels_exact(planted: tuple[str, list[dict[str, Any]]]) -> None:
    store, items = planted
    s = dedup(store)
    lab = {h: np.concatenate([d[f"labels_{h}"] for d in items]) for h in ("move", "target")}
    dup = _expected(np.concatenate([d["strategic_features"] for d in items]))
    for h, c in s.conflicts.items():
        differ = [i for i in np.flatnonzero(dup >= 0) if lab[h][i] != lab[h][dup[i]]]
        bad_roots = {int(dup[i]) for i in differ}
        assert c.differing == len(differ)
        assert c.groups == len(bad_roots)
        assert c.rows == sum(int((dup == r).sum()) + 1 for r in bad_roots)
        for e in c.examples:
            assert e[0][0] in bad_roots and all(lab[h][r] == v for r, v in e)


def test_forced_collision_never_merges(planted: tuple[str, list[dict[str, Any]]]) -> None:
    store, items = planted
    want = _expected(np.concatenate([d["strategic_features"] for d in items]))
    # every row gets the same hash: every row is a candidate, only bytes decide
    s = dedup(store, hasher=lambda rows: np.zeros(len(rows), dtype=np.uint64))
    np.testing.assert_array_equal(zarr.open_group(store, mode="r")["meta/duplicate_of"][:], want)
    assert s.duplicate_rows == 8 and s.hash_source == "computed"


def test_partial_collisions_never_merge(planted: tuple[str, list[dict[str, Any]]]) -> None:
    """Hashes folded to 2 bits: most hash runs mix true copies and different rows."""
    from chunkstore.core.rowhash import row_hashes

    store, items = planted
    want = _expected(np.concatenate([d["strategic_features"] for d in items]))
    s = dedup(store, hasher=lambda rows: row_hashes(rows) % np.uint64(4))
    np.testing.assert_array_equal(zarr.open_group(store, mode="r")["meta/duplicate_of"][:], want)
    assert s.duplicate_rows == 8


def test_by_features_and_labels(planted: tuple[str, list[dict[str, Any]]]) -> None:
    store, items = planted
    feats = np.concatenate([d["strategic_features"] for d in items])
    labs = [np.concatenate([d[f"labels_{h}"] for d in items]) for h in ("move", "target")]
    key = np.concatenate([canonical(feats).view(np.uint8).reshape(len(feats), -1),
                          np.stack(labs, 1).astype(np.int64).view(np.uint8)], axis=1)
    s = dedup(store, by="features+labels")
    np.testing.assert_array_equal(zarr.open_group(store, mode="r")["meta/duplicate_of"][:],
                                  _expected(key))
    assert s.conflicts == {}


def test_cli_prints_summary_and_json(planted: tuple[str, list[dict[str, Any]]],
                                     capsys: pytest.CaptureFixture[str]) -> None:
    store, _ = planted
    assert main(["dedup", store, "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "duplicate rows   8 (2.40%)" in out
    assert main(["dedup", store, "--json", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["duplicate_rows"] == 8


def test_bad_by_is_an_error(planted: tuple[str, list[dict[str, Any]]]) -> None:
    with pytest.raises(DedupError, match="by must be one of"):
        dedup(planted[0], by="labels")


def test_stored_row_hashes_are_used(planted: tuple[str, list[dict[str, Any]]],
                                    tmp_path: Path) -> None:
    """With meta/row_hash (written at ingest) no hash is computed; the result is the same."""
    import shutil

    from chunkstore.core.rowhash import row_hashes

    store = str(tmp_path / "h.zarr")
    shutil.copytree(planted[0], store)
    g = zarr.open_group(store, mode="r+")
    h = row_hashes(g["features"][:])
    if "meta/row_hash" in g:  # ingest writes it (issue 17, item 1): it must be these hashes
        np.testing.assert_array_equal(g["meta/row_hash"][:], h)
    else:
        g.create_array("meta/row_hash", shape=h.shape, dtype="uint64", chunks=(CHUNK,))[:] = h
    s = dedup(store)
    assert s.hash_source == "meta/row_hash" and s.duplicate_rows == 8


def test_duplicates_across_an_append_are_found(tmp_path: Path) -> None:
    """Rows appended later that copy rows of the original ingest (a replayed episode): the
    append writes their meta/row_hash like an ingest, and dedup links them to the first copy."""
    from chunkstore.ingest.append import append

    items = make_items([20, 13], seed=8)
    extra = make_items([11], seed=9)[0]
    extra["strategic_features"][2] = items[0]["strategic_features"][4]  # row 35 copies row 4
    extra["strategic_features"][7] = items[1]["strategic_features"][0]  # row 40 copies row 20
    store = tmp_path / "s.zarr"
    ingest(write_config(tmp_path / "a.yaml", store=store, ingest={"chunk_rows": CHUNK},
                        paths=write_items(tmp_path / "a", items)), progress=False)
    append(write_config(tmp_path / "b.yaml", store=store, ingest={"chunk_rows": CHUNK},
                        paths=write_items(tmp_path / "b", [extra])))
    g = zarr.open_group(str(store), mode="r")
    features = np.concatenate([d["strategic_features"] for d in [*items, extra]])
    np.testing.assert_array_equal(g["meta/row_hash"][:], row_hashes(features))
    s = dedup(str(store))
    dup = g["meta/duplicate_of"][:]
    np.testing.assert_array_equal(dup, _expected(features))
    assert dup[35] == 4 and dup[40] == 20 and s.duplicate_rows == 2
