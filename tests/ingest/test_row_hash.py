"""``meta/row_hash``: every ingest writes each row's fingerprint, the same whatever the schedule."""

from __future__ import annotations

import numpy as np
import zarr
from producers import process

from chunkstore import ingest
from chunkstore.core.rowhash import row_hashes
from chunkstore.testing import chunk_files, concat, make_items, write_config, write_items


def _hashes(store) -> np.ndarray:
    return zarr.open_array(str(store), path="meta/row_hash", mode="r")[:]


def _with_nan_payloads(items: list[dict[str, np.ndarray]]) -> None:
    """Rows 0 and 1 of item 0 become equal but for their NaN payloads (0x7fc00000 vs
    0x7fc00001 and a negative NaN), row 2 equal to row 0 bit for bit."""
    x = items[0]["strategic_features"]
    x[1] = x[0]
    x[2] = x[0]
    bits = x.view(np.uint32)
    bits[0, 1] = 0x7FC00000
    bits[1, 1] = 0x7FC00001
    bits[2, 1] = 0xFFC00000
    assert np.isnan(x[:3, 1]).all() and bits[0, 1] != bits[1, 1]


def test_ordered_ingest_writes_row_hashes_equal_for_one_and_two_workers(tmp_path):
    items = make_items([7, 30, 1, 0, 22, 5, 16], seed=4)
    _with_nan_payloads(items)
    paths = write_items(tmp_path / "b", items)
    stores = []
    for w in (1, 2):
        store = tmp_path / f"w{w}.zarr"
        ingest(write_config(tmp_path / f"c{w}.yaml", store=store, paths=paths,
                            ingest={"workers": w, "chunk_rows": 8, "task_chunks": 1}),
               progress=False)
        stores.append(store)
    h = _hashes(stores[0])
    assert h.dtype == np.uint64 and h.shape == (81,)
    np.testing.assert_array_equal(h, row_hashes(concat(items, "strategic_features")))
    assert h[0] == h[1] == h[2] and len(set(h[3:].tolist())) == 78  # NaN payloads hash equal
    a, b = ({k: v for k, v in chunk_files(s).items() if k.startswith("meta/row_hash")}
            for s in stores)
    assert a == b and len(a) > 1


def test_streaming_ingest_writes_row_hashes_of_its_rows(python_config, tmp_path):
    items = [(k, n) for k, n in enumerate([0, 5, 8, 30, 3, 17, 1])]
    store = tmp_path / "s.zarr"
    ingest(python_config(store), items=items, process=process, workers=2, progress=False)
    g = zarr.open_group(str(store), mode="r")
    h = _hashes(store)
    assert h.shape == (64,)
    np.testing.assert_array_equal(h, row_hashes(g["features"][:]))
    expected = {k: row_hashes(process(item)["features"]) for k, item in enumerate(items)}
    np.testing.assert_array_equal(h, [expected[k][r] for k, r in g["meta/source"][:]])
