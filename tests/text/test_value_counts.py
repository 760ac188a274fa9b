"""Value counts (issue 19): exact against np.bincount, per scope, bounded by chunks.

The integer stores here are written with zarr directly (features + a split array), because the
ingest path cannot yet write integer features (fill value NaN); ``write_value_counts`` needs
nothing else of a store.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import zarr

from chunkstore.errors import SplitLookupError, ValueCountsError
from chunkstore.stats.value_counts import block_counts, value_counts, write_value_counts

LIMITS = {"uint8": 256, "uint16": 65536, "int32": 70000, "int64": 70000}


def int_store(path, dtype="uint16", n=1000, f=7, vocab=300, chunk=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, vocab, size=(n, f)).astype(dtype)
    x[0, 0], x[-1, -1] = 0, vocab - 1  # the range's limits are counted too
    g = zarr.open_group(str(path), mode="w",
                        attributes={"chunkstore": {"n_samples": n, "vocab_size": vocab}})
    g.create_array("features", shape=x.shape, chunks=(chunk, f), dtype=dtype)[...] = x
    codes = (rng.random(n) < 0.8).astype(np.int8)  # 1 = train, 0 = val
    for name in ("default", "other"):
        s = g.create_array(f"splits/{name}", shape=(n,), chunks=(chunk,), dtype="int8")
        s[...] = codes
        s.attrs.update({"names": ["val", "train"], "complete": True})
    return x, codes


@pytest.mark.parametrize("dtype", list(LIMITS))
def test_exact_against_bincount_for_each_dtype(tmp_path, dtype):
    vocab = LIMITS[dtype]
    x, _ = int_store(tmp_path / "s.zarr", dtype, vocab=vocab, chunk=100)
    got = value_counts(tmp_path / "s.zarr")  # vocab_size from the store's attrs
    assert got.dtype == np.int64 and got.shape == (vocab,)
    np.testing.assert_array_equal(got, np.bincount(x.ravel().astype(np.int64),
                                                   minlength=vocab))
    assert got[0] >= 1 and got[vocab - 1] >= 1 and got.sum() == x.size


def test_rows_as_mask_or_indices_and_dask_or_zarr_inputs(tmp_path):
    x, codes = int_store(tmp_path / "s.zarr", chunk=33)
    g = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    keep = codes == 1
    want = np.bincount(x[keep].ravel(), minlength=300)
    np.testing.assert_array_equal(value_counts(g["features"], 300, keep), want)
    np.testing.assert_array_equal(value_counts(g, 300, np.flatnonzero(keep)), want)
    dx = da.from_array(x, chunks=(50, 3))  # several column blocks too
    np.testing.assert_array_equal(value_counts(dx, 300, keep), want)
    np.testing.assert_array_equal(value_counts(dx[:, 0], 300), np.bincount(x[:, 0],
                                                                           minlength=300))


def test_written_per_scope_beside_other_statistics(tmp_path):
    path = tmp_path / "s.zarr"
    x, codes = int_store(path)
    g = zarr.open_group(str(path), mode="r+")
    g.create_array("stats/train/mean", shape=(7,), dtype="float64")[...] = np.arange(7.0)
    write_value_counts(path, "train")
    write_value_counts(path)
    write_value_counts(path, "val", splits="other")  # another split set: its own scope
    g = zarr.open_group(str(path), mode="r")
    np.testing.assert_array_equal(g["stats/train/value_counts"][:],
                                  np.bincount(x[codes == 1].ravel(), minlength=300))
    np.testing.assert_array_equal(g["stats/all/value_counts"][:], np.bincount(x.ravel(),
                                                                               minlength=300))
    np.testing.assert_array_equal(g["stats/train/mean"][:], np.arange(7.0))  # untouched
    assert g["stats/train/value_counts"].attrs["rows"] == int((codes == 1).sum())
    np.testing.assert_array_equal(g["stats/other/val/value_counts"][:],
                                  np.bincount(x[codes == 0].ravel(), minlength=300))
    with pytest.raises(SplitLookupError, match="'test' is not in"):
        write_value_counts(path, "test")


def test_out_of_range_values_name_the_row(tmp_path):
    path = tmp_path / "s.zarr"
    int_store(path, chunk=64)
    zarr.open_group(str(path), mode="r+")["features"][130, 2] = 300
    with pytest.raises(ValueCountsError, match=r"value 300 at row 130 is outside \[0, 300\)"):
        value_counts(path)
    with pytest.raises(ValueCountsError, match="value -1 at row 4"):
        block_counts(np.array([[1], [2], [3], [4], [-1]]), 10, 0)


def test_float_features_or_no_vocab_are_refused(tmp_path):
    with pytest.raises(ValueCountsError, match="need integer features"):
        value_counts(da.zeros((10, 2), dtype="float32"), 4)
    with pytest.raises(ValueCountsError, match="no vocab_size"):
        value_counts(da.zeros((10, 2), dtype="uint8"))


def test_empty_selection_counts_nothing():
    got = value_counts(da.ones((10, 2), dtype="uint8", chunks=3), 4, np.zeros(10, bool))
    np.testing.assert_array_equal(got, np.zeros(4, np.int64))
