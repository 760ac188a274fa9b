"""chunkstore info: the store summary, its --json schema, incomplete and not-a-store paths."""

from __future__ import annotations

import json

import pytest
import zarr

from chunkstore import NotAStoreError
from chunkstore.cli import main
from chunkstore.report.info import JSON_KEYS, store_info
from chunkstore.store import layout
from chunkstore.store.journal import record_path
from chunkstore.store.layout import update_attrs
from chunkstore.store.view import DIGEST_KEY
from chunkstore.testing import HEADS

N_FEATURES = 6  # conftest.analysed_store: 160 rows in 10 chunks of 16


@pytest.fixture
def store(analysed_store: str) -> str:
    return analysed_store


def test_info_of_a_complete_analysed_store(store):
    info = store_info(store, names=3, top=2)
    assert info.status == "complete" and info.missing.rows == 0 and info.missing.ranges == ()
    assert info.n_samples == 160 and info.chunk_rows == 16
    assert info.format_version == layout.FORMAT_VERSION
    assert info.n_features == N_FEATURES and info.feature_names == ("f0", "f1", "f2")
    assert info.feature_dtype == "float32" and dict(info.heads) == HEADS
    assert [c["name"] for c in info.codec] == ["bytes", "blosc", "crc32c"]
    assert info.bytes_raw > 0 and info.bytes_stored > 0
    assert {"features", "labels", "masks", "meta", "splits", "stats"} == set(info.bytes_by_node)
    assert info.bytes_by_node["features"][0] == 160 * N_FEATURES * 4
    (split,) = info.splits
    assert split.name == "default" and split.method == "random"
    assert list(split.rows) == ["train", "val", "test"] and sum(split.rows.values()) == 160
    scopes = {s.scope: s for s in info.stats}
    assert set(scopes) == {"all", "train"}
    assert scopes["train"].rows == split.rows["train"]
    assert {"corr", "hist", "mutual_info"} <= set(scopes["all"].holds)
    mi = scopes["all"].top_mutual_info
    assert set(mi) == set(HEADS) and all(len(v) == 2 for v in mi.values())
    text = info.format()
    for needle in ("status           complete", "160", "f0, f1, f2, ...", "move (5 classes)",
                   "16 rows per chunk", "blosc(lz4", "ratio", "train", "top MI move"):
        assert needle in text, needle


def test_info_json_schema(store, capsys):
    assert main(["info", store, "--json", "--top", "3"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert tuple(d) == JSON_KEYS
    assert d["info_version"] == 1 and d["status"] == "complete" and d["n_samples"] == 160
    assert d["missing"] == {"rows": 0, "ranges": [], "tasks": [], "tasks_total": 0,
                            "locked": False}
    assert d["features"]["count"] == N_FEATURES and d["features"]["dtype"] == "float32"
    assert d["heads"] == {h: {"classes": k} for h, k in HEADS.items()}
    assert d["bytes"]["raw"] == sum(v["raw"] for v in d["bytes"]["by_node"].values())
    assert d["bytes"]["ratio"] == pytest.approx(d["bytes"]["raw"] / d["bytes"]["stored"])
    assert d["splits"]["default"]["rows"].keys() == {"train", "val", "test"}
    assert set(d["stats"]) == {"all", "train"}
    top = d["stats"]["all"]["top_mutual_info"]["move"]
    assert len(top) == 3 and all(isinstance(n, str) and v >= 0 for n, v in top)
    assert d["chunk_rows"] == 16 and d["shard_rows"] is None


def test_info_text_cli(store, capsys):
    assert main(["info", store]) == 0
    assert "status           complete" in capsys.readouterr().out


def test_info_of_an_incomplete_store(ingested_store, capsys):
    store = ingested_store
    update_attrs(store, status="incomplete")  # as a killed ingest leaves it: not yet sealed
    root = zarr.open_group(store, mode="r+")
    root.attrs.put({k: v for k, v in root.attrs.asdict().items() if k != DIGEST_KEY})
    record_path(store, 3).unlink()
    record_path(store, 4).unlink()
    record_path(store, 8).unlink()
    info = store_info(store)
    assert info.status == "incomplete"
    assert info.missing.ranges == ((48, 80), (128, 144)) and info.missing.rows == 48
    assert info.missing.tasks == (3, 4, 8) and info.missing.tasks_total == 10
    assert main(["info", store]) == 0
    out = capsys.readouterr().out
    assert "INCOMPLETE: 48 of 160 rows not written ([48, 80), [128, 144)); 3 of 10 tasks" in out
    assert main(["info", store, "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["status"] == "incomplete" and d["missing"]["ranges"] == [[48, 80], [128, 144]]


def test_info_not_a_store(tmp_path, capsys):
    with pytest.raises(NotAStoreError):
        store_info(str(tmp_path / "nothing"))
    assert main(["info", str(tmp_path / "nothing")]) == 1
    err = capsys.readouterr().err
    assert "chunkstore: error: no chunkstore store at" in err
    import zarr

    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w")
    assert main(["info", str(tmp_path / "plain.zarr"), "--json"]) == 1
    assert "not a chunkstore store" in capsys.readouterr().err


def test_info_shows_the_duplicate_share_after_dedup(ingested_store):
    from chunkstore.core.splitspec import SplitSpec
    from chunkstore.dedup import dedup
    from chunkstore.splits.write import write_split

    assert store_info(ingested_store).duplicates is None
    assert "duplicates       not checked" in store_info(ingested_store).format()
    s = dedup(ingested_store)
    write_split(ingested_store, SplitSpec(name="dd", method="random", seed=1), overwrite=True)
    info = store_info(ingested_store)
    d = info.duplicates
    assert d is not None and d.current and (d.rows, d.duplicate_rows) == (s.rows, s.duplicate_rows)
    assert f"duplicates       {s.duplicate_rows:,} rows ({s.share:.2%})" in info.format()
    j = info.to_dict()
    assert set(j) == set(JSON_KEYS) and j["duplicates"]["duplicate_rows"] == s.duplicate_rows
    assert j["splits"]["dd"]["leaked"] is not None
