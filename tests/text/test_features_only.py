"""A store without heads (issue 19): ingest, loader, export, info, xarray.

Built by a real ingest of the python source over ``examples/pack_text.py`` (uint16 token ids)
so that ``meta/group`` holds document ids.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

import chunkstore
from chunkstore.cli import main

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from examples.pack_text import Settings, prepare  # noqa: E402

L = 8


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    tmp = tmp_path_factory.mktemp("features_only")
    corpus = tmp / "corpus"
    corpus.mkdir()
    for k in range(12):
        (corpus / f"m{k:02d}.py").write_text(f"# module {k}\n" + "x = 1\n" * (k * 3 + 1))
    items = prepare(Settings(corpus=str(corpus), max_docs=None, max_mib=None, byte_vocab=True,
                             vocab_size=258, sequence_len=L, shard_mib=100 / 2**20,
                             work=str(tmp / "work")))
    path = str(tmp / "s.zarr")
    chunkstore.ingest({"store": path,
                       "schema": {"features": {"count": L, "dtype": "uint16"}, "heads": {}},
                       "source": {"kind": "python", "path": [str(REPO)], "group": True,
                                  "provenance": True,
                                  "process": "examples.pack_text:pack_shard"},
                       "ingest": {"workers": 2, "chunk_rows": 8}}, items=items,
                      progress=False)
    return path


def test_the_store_has_no_label_or_mask_arrays(store):
    g = zarr.open_group(store, mode="r")
    assert g.attrs["chunkstore"]["heads"] == {}
    assert "labels" not in g and "masks" not in g
    assert {"group", "source"} <= set(g["meta"].array_keys())


def test_the_loader_yields_every_row_once_without_heads(store):
    g = zarr.open_group(store, mode="r")
    feats = g["features"][:]
    seen = []
    for b in chunkstore.open(store).loader(batch_size=5, seed=3):
        assert set(b) == {"features", "labels", "masks", "index"}
        assert b["labels"] == {} and b["masks"] == {} and b["features"].shape[1] == L
        np.testing.assert_array_equal(b["features"], feats[b["index"]])
        seen.extend(b["index"].tolist())
    assert sorted(seen) == list(range(len(feats)))


def test_export_npy_writes_features_only(store, tmp_path):
    out = tmp_path / "npy"
    assert main(["export", store, str(out), "--format", "npy", "--quiet"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["X.npy"]
    np.testing.assert_array_equal(np.load(out / "X.npy"),
                                  zarr.open_group(store, mode="r")["features"][:])


def test_xarray_and_info_without_heads(store, capsys):
    xr_ds = chunkstore.open(store).to_xarray()
    assert not [v for v in xr_ds.data_vars if v.startswith(("labels_", "masks_"))]
    assert xr_ds.attrs["heads"] == ""
    assert main(["info", store]) == 0
    assert "complete" in capsys.readouterr().out


from chunkstore.splits.write import run_split  # noqa: E402


@pytest.mark.parametrize("method", ["random", "group"])
def test_splits_and_the_loader_work_without_heads(store, method):
    run_split(store, method=method, name=method, overwrite=True)
    g = zarr.open_group(store, mode="r")
    codes = g[f"splits/{method}"][:]
    n = g["features"].shape[0]
    assert codes.shape == (n,) and set(np.unique(codes)) <= {0, 1, 2}
    if method == "group":  # a document's rows (by first token) never straddle parts
        doc = g["meta/group"][:]
        for d in np.unique(doc):
            assert len(set(codes[doc == d])) == 1
    ds = chunkstore.open(store)
    seen = []
    for b in ds.loader(batch_size=5, split="train", splits=method, seed=3):
        assert set(b) == {"features", "labels", "masks", "index"}
        assert b["labels"] == {} and b["masks"] == {} and b["features"].shape[1] == L
        np.testing.assert_array_equal(b["features"], g["features"][np.sort(b["index"])][
            np.argsort(np.argsort(b["index"]))])
        seen.extend(b["index"].tolist())
    assert sorted(seen) == np.flatnonzero(codes == 0).tolist()




def test_dedup_without_heads(store):
    from chunkstore.dedup import dedup

    g = zarr.open_group(store, mode="r")
    rows = g["features"][:]
    s = dedup(store)
    dup = g["meta/duplicate_of"][:]
    _, first = np.unique(rows, axis=0, return_index=True)
    assert s.duplicate_rows == len(rows) - len(first) == int((dup >= 0).sum())
    assert (dup[np.sort(first)] == -1).all()
    np.testing.assert_array_equal(rows[dup >= 0], rows[dup[dup >= 0]])


def test_windows_without_heads_stay_in_a_document(store):
    g = zarr.open_group(store, mode="r")
    doc, feats = g["meta/group"][:], g["features"][:]
    w = chunkstore.open(store).windows(lookback=2, by="group")
    assert len(w) > 0
    batch = w[np.arange(len(w))]
    assert batch["labels"] == {} and batch["features"].dtype == np.uint16
    for start, x in zip(batch["start"], batch["features"], strict=True):
        assert len(set(doc[start:start + 2])) == 1
        np.testing.assert_array_equal(x, feats[start:start + 2])


def test_hdf5_export_without_heads(store, tmp_path):
    h5py = pytest.importorskip("h5py")
    out = tmp_path / "x.h5"
    assert main(["export", store, str(out), "--format", "hdf5", "--quiet"]) == 0
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f["features"][:], zarr.open_group(store, mode="r")[
            "features"][:])
        assert f["features"].dtype == np.uint16
