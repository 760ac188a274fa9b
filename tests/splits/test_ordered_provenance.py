"""An ordered split of a streaming store whose python source supplies its own ``meta/source``
provenance (``provenance: true``): the pairs are not (item, row), so the split follows the row
order, and the store says so in its attrs (``source_provenance``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import zarr

from chunkstore import ingest
from chunkstore.splits.write import run_split

SOURCES = Path(__file__).parents[1] / "sources"
sys.path.insert(0, str(SOURCES))
import provenance_producers as pp  # noqa: E402

SIZES = [3, 0, 9, 5, 1, 12, 4]


def test_ordered_split_of_a_store_with_its_own_provenance_follows_row_order(tmp_path):
    store = tmp_path / "s.zarr"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(json.dumps({
        "store": str(store), "schema": {"features": pp.N_FEATURES, "heads": {pp.HEAD: pp.CLASSES}},
        "source": {"kind": "python", "path": [str(SOURCES)], "provenance": True,
                   "process": "provenance_producers:process",
                   "items": [[k, n] for k, n in enumerate(SIZES)]},
        "ingest": {"chunk_rows": 8, "workers": 1}}))
    ingest(str(cfg), progress=False)
    g = zarr.open_group(str(store), mode="r")
    assert g.attrs["chunkstore"]["source_provenance"] == "process"
    n = sum(SIZES)
    run_split(str(store), method="ordered", fractions="train=0.5,val=0.25,test=0.25")
    codes = zarr.open_group(str(store), mode="r")["splits/default"][:]
    assert codes.shape == (n,)
    # row order: train rows first, then val, then test, in the fractions' proportions
    assert np.all(np.diff(codes.astype(np.int64)) >= 0)
    assert np.bincount(codes, minlength=3).tolist() == [n // 2, n // 4, n - n // 2 - n // 4]
