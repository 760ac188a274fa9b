"""The committed golden store (format version 1) must keep reading exactly, with plain zarr."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import zarr

HERE = Path(__file__).parents[1] / "fixtures"


def test_golden_store_reads_exactly_with_plain_zarr():
    g = zarr.open(str(HERE / "golden.zarr"), mode="r")
    expected = np.load(HERE / "golden_expected.npz")
    meta = g.attrs["chunkstore"]
    assert meta["format_version"] == 1 and meta["status"] == "complete"
    assert meta["n_samples"] == 37 and meta["chunk_rows"] == 8
    assert meta["feature_names"] == ["hp", "x", "y", "gold", "armour", "speed"]
    assert meta["heads"] == {"action": {"classes": 3, "label_dtype": "int16", "mask_dtype": "int8"},
                             "target": {"classes": 2, "label_dtype": "int8", "mask_dtype": "int8"}}
    np.testing.assert_array_equal(g["features"][:], expected["features"])
    np.testing.assert_array_equal(g["meta/group"][:], expected["group"])
    for h in ("action", "target"):
        np.testing.assert_array_equal(g[f"labels/{h}"][:], expected[f"labels__{h}"])
        np.testing.assert_array_equal(g[f"masks/{h}"][:], expected[f"masks__{h}"])
    assert g["labels/target"].dtype == np.int8
    np.testing.assert_allclose(g["stats/all/mean"][:],
                               expected["features"].astype(np.float64).mean(0), rtol=1e-12)


def test_golden_codecs_are_blosc_then_crc32c():
    meta = json.loads((HERE / "golden.zarr" / "features" / "zarr.json").read_text())
    assert [c["name"] for c in meta["codecs"]] == ["bytes", "blosc", "crc32c"]
    assert meta["dimension_names"] == ["sample", "feature"]
    assert meta["chunk_grid"]["configuration"]["chunk_shape"] == [8, 6]


def test_flipped_byte_is_detected_on_read(tmp_path):
    import shutil

    import pytest

    copy = tmp_path / "g.zarr"
    shutil.copytree(HERE / "golden.zarr", copy)
    chunk = copy / "features" / "c" / "1" / "0"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    g = zarr.open(str(copy), mode="r")
    with pytest.raises(ValueError, match="checksum"):
        g["features"][8:16]
