"""add-head from a source config whose items line up with the store's rows (the ingest's items,
then each append's), in Python and on the CLI; items that do not line up are a clear error
that names the item and changes nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from chunkstore import ingest
from chunkstore.cli.app import main
from chunkstore.errors import AppendError
from chunkstore.ingest.append import append
from chunkstore.ingest.heads import add_head
from chunkstore.testing import concat, make_items, write_config, write_items

A, B = [5, 12, 9], [3, 20]


def _cfg(tmp: Path, name: str, items: list, store: Path, heads: dict | None = None) -> Path:
    extra = {} if heads is None else {"heads": heads}
    return write_config(tmp / f"{name}.yaml", store=store,
                        paths=write_items(tmp / f"{name}-items", items),
                        ingest={"chunk_rows": 8, "task_chunks": 2, "workers": 1}, **extra)


@pytest.fixture(scope="module")
def grown(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("heads")
    store = tmp / "s.zarr"
    ingest(_cfg(tmp, "a", make_items(A, seed=1), store), progress=False)
    append(_cfg(tmp, "b", make_items(B, seed=2), store))
    return store


def _head_items(sizes: list[int]) -> list:
    return make_items(sizes, seed=9, heads={"outcome": 6})


def test_a_head_from_lined_up_items(grown, tmp_path, capsys):
    items = _head_items(A + B)
    cfg = _cfg(tmp_path, "h", items, grown, heads={"outcome": 6})
    summary = add_head(str(grown), "outcome", source=cfg, workers=1)
    assert summary.classes == 6 and summary.rows == sum(A + B)
    g = zarr.open_group(str(grown), mode="r")
    np.testing.assert_array_equal(g["labels/outcome"][:], concat(items, "labels_outcome"))
    np.testing.assert_array_equal(g["masks/outcome"][:], concat(items, "masks_outcome"))
    np.testing.assert_array_equal(g["stats/all/class_counts/outcome"][:],
                                  np.bincount(concat(items, "labels_outcome"), minlength=6))
    items2 = _head_items(A + B)
    for it in items2:  # the npz convention names arrays after the head
        it["labels_second"], it["masks_second"] = it.pop("labels_outcome"), it.pop(
            "masks_outcome")
    cfg2 = _cfg(tmp_path, "h2", items2, grown, heads={"second": 6})
    assert main(["add-head", str(grown), "second", "--config", str(cfg2), "--workers",
                 "1"]) == 0, capsys.readouterr().err
    np.testing.assert_array_equal(zarr.open_array(str(grown), path="labels/second")[:],
                                  concat(items2, "labels_second"))


@pytest.mark.parametrize("sizes, message", [
    ([5, 12, 9, 3, 19], r"item 4 .* has 19 rows, but the store's item at that place has 20"),
    ([5, 9, 12, 3, 20], r"item 1 .* has 9 rows, but the store's item at that place has 12"),
    ([5, 12, 9, 3], r"holds 4 items with rows; the store holds 5"),
    ([5, 12, 9, 3, 20, 2], r"item 5 .* is beyond the store's 5 items"),
])
def test_items_that_do_not_line_up_name_the_item_and_change_nothing(grown, tmp_path, sizes,
                                                                     message):
    before = sorted(p.name for p in grown.rglob("*"))
    cfg = _cfg(tmp_path, "bad", _head_items(sizes), grown, heads={"bad": 6})
    with pytest.raises(AppendError, match=message):
        add_head(str(grown), "bad", source=cfg)
    assert sorted(p.name for p in grown.rglob("*")) == before


def test_a_head_of_a_streaming_store_follows_meta_source(python_config, tmp_path):
    """Streaming placement records where each (item, row) went in ``meta/source``: the head's
    item rows are placed there, whatever order the workers filled the chunks in."""
    from producers import process

    sizes = [5, 0, 12, 1, 30, 7, 9]
    store = tmp_path / "st.zarr"
    ingest(python_config(store), items=[(k, n) for k, n in enumerate(sizes)],
           process=process, workers=2, progress=False)
    items = _head_items(sizes)
    summary = add_head(str(store), "outcome", source=_cfg(tmp_path, "h", items, store,
                                                          heads={"outcome": 6}), workers=1)
    assert summary.rows == sum(sizes)
    g = zarr.open_group(str(store), mode="r")
    src = g["meta/source"][:]
    want = np.array([items[k]["labels_outcome"][r] for k, r in src])
    np.testing.assert_array_equal(g["labels/outcome"][:], want)
    np.testing.assert_array_equal(g["masks/outcome"][:],
                                  np.stack([items[k]["masks_outcome"][r] for k, r in src]))


def test_a_head_of_a_store_with_its_own_provenance_follows_the_journal(tmp_path):
    """meta/source holds the python source's own pairs (provenance: true): the head's item
    rows are placed by the chunk records' (item, row) runs instead."""
    import sys

    sources = Path(__file__).parents[1] / "sources"
    sys.path.insert(0, str(sources))
    import provenance_producers as pp

    sizes = [5, 0, 12, 1, 30, 7, 9]
    store = tmp_path / "st.zarr"
    ingest({"store": str(store), "schema": {"features": pp.N_FEATURES,
                                            "heads": {pp.HEAD: pp.CLASSES}},
            "source": {"kind": "python", "path": [str(sources)], "provenance": True,
                       "process": "provenance_producers:process"},
            "ingest": {"chunk_rows": 8, "workers": 2}},
           items=[(k, n) for k, n in enumerate(sizes)], progress=False)
    items = _head_items(sizes)
    summary = add_head(str(store), "outcome", source=_cfg(tmp_path, "h", items, store,
                                                          heads={"outcome": 6}), workers=1)
    assert summary.rows == sum(sizes)
    g = zarr.open_group(str(store), mode="r")
    keys, rows = pp.item_row(g["meta/source"][:])
    want = np.array([items[k]["labels_outcome"][r] for k, r in zip(keys, rows, strict=True)])
    np.testing.assert_array_equal(g["labels/outcome"][:], want)
