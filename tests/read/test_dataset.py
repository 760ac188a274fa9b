"""chunkstore.open: the Dataset view over a store."""

from __future__ import annotations

import numpy as np
import pytest

import chunkstore
from chunkstore import IncompleteStoreWarning, NotAStoreError, ingest
from chunkstore.store.journal import record_path
from chunkstore.testing import concat, make_items, write_config, write_items


@pytest.mark.slow
def test_open_reads_arrays_names_heads_and_dask(tmp_path):
    items = make_items([6, 9, 2])
    cfg = write_config(tmp_path / "c.yaml", store=tmp_path / "s.zarr",
                       paths=write_items(tmp_path / "b", items), ingest={"chunk_rows": 4})
    ingest(cfg, progress=False)
    ds = chunkstore.open(str(tmp_path / "s.zarr"))
    assert len(ds) == 17 and ds.chunk_rows == 4 and ds.status == "complete"
    assert ds.heads == {"move": 5, "target": 3} and ds.feature_names[0] == "f0"
    np.testing.assert_array_equal(ds.features[3:11], concat(items, "strategic_features")[3:11])
    np.testing.assert_array_equal(ds.labels["move"][:], concat(items, "labels_move"))
    np.testing.assert_array_equal(ds.meta["group"][:], concat(items, "group"))
    d = ds.to_dask()
    assert d["features"].chunks[0] == (4, 4, 4, 4, 1)
    np.testing.assert_array_equal(d["masks/target"].compute(), concat(items, "masks_target"))
    assert "17 samples" in repr(ds)


@pytest.mark.slow
def test_open_incomplete_store_warns_with_missing_rows(tmp_path):
    items = make_items([8, 8, 8])
    cfg = write_config(tmp_path / "c.yaml", store=tmp_path / "s.zarr",
                       paths=write_items(tmp_path / "b", items),
                       ingest={"chunk_rows": 4, "task_chunks": 1})
    ingest(cfg, progress=False)
    from chunkstore.store.layout import update_attrs

    update_attrs(str(tmp_path / "s.zarr"), status="incomplete")
    record_path(str(tmp_path / "s.zarr"), 2).unlink()
    record_path(str(tmp_path / "s.zarr"), 3).unlink()
    with pytest.warns(IncompleteStoreWarning,
                      match=r"8 of 24 rows are not written yet \(\[8, 16\)\)"):
        chunkstore.open(str(tmp_path / "s.zarr"))


def test_open_not_a_store(tmp_path):
    with pytest.raises(NotAStoreError, match="no chunkstore store"):
        chunkstore.open(str(tmp_path / "nothing"))
    import zarr

    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w")
    with pytest.raises(NotAStoreError, match="not a chunkstore store"):
        chunkstore.open(str(tmp_path / "plain.zarr"))
