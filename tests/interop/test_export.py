"""``chunkstore export``: HDF5 and npy outputs equal the store, for all rows and for a split."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest
import zarr

from chunkstore import ingest
from chunkstore.cli import main
from chunkstore.errors import ExportError, NotAStoreError
from chunkstore.interop.export import export
from chunkstore.testing import HEADS, make_items, write_config, write_items

CHUNK = 16
NAMES = ["train", "val", "test"]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A complete store (N=150, chunks of 16 rows) with two split arrays written by hand."""
    tmp = tmp_path_factory.mktemp("export")
    items = make_items([40, 7, 55, 48], seed=11)
    items[2]["strategic_features"][5, 1] = np.nan
    paths = write_items(tmp / "b", items)
    path = tmp / "store.zarr"
    cfg = write_config(tmp / "c.yaml", store=path, paths=paths,
                       ingest={"chunk_rows": CHUNK, "workers": 1})
    ingest(str(cfg), progress=False)
    g = zarr.open_group(str(path), mode="r+")
    n = g["features"].shape[0]
    rng = np.random.default_rng(0)
    for name, codes, names in [("default", rng.choice(3, n, p=[0.7, 0.2, 0.1]), NAMES),
                               ("other", (np.arange(n) % 2), ["a", "b"])]:
        a = g.create_array(f"splits/{name}", shape=(n,), chunks=(CHUNK,), dtype="int8")
        a[:] = codes.astype(np.int8)
        a.attrs.update({"names": names, "method": "random", "seed": 0, "by": None,
                        "complete": True})
    return path


def sample_paths(g: zarr.Group) -> list[str]:
    return ["features", *(f"{k}/{h}" for k in ("labels", "masks") for h in HEADS), "meta/group"]


def rows_of(g: zarr.Group, split: str | None, array: str = "default") -> np.ndarray:
    n = g["features"].shape[0]
    if split is None:
        return np.arange(n)
    a = g[f"splits/{array}"]
    return np.flatnonzero(a[:] == list(a.attrs["names"]).index(split))


@pytest.mark.parametrize("split, block_mib", [(None, 32.0), (None, 0.001), ("val", 0.001),
                                              ("train", 32.0)])
def test_hdf5_export_equals_the_store(store, tmp_path, split, block_mib):
    out = tmp_path / "out.h5"
    summary = export(store, out, split=split, block_mib=block_mib)
    g = zarr.open_group(str(store), mode="r")
    rows = rows_of(g, split)
    assert summary.rows == len(rows) and summary.files == (str(out),)
    with h5py.File(out, "r") as f:
        for p in sample_paths(g):
            np.testing.assert_array_equal(f[p][:], g[p][:][rows], err_msg=p)
            assert f[p].chunks[0] == min(CHUNK, len(rows))
            assert f[p].compression == "gzip" and f[p].shuffle
        np.testing.assert_array_equal(f["splits/default"][:], g["splits/default"][:][rows])
        assert list(f["splits/default"].attrs["names"]) == NAMES
        assert [n.decode() if isinstance(n, bytes) else n
                for n in f["features"].attrs["feature_names"]] == g.attrs["chunkstore"][
                    "feature_names"]
        assert json.loads(f.attrs["heads"]) == g.attrs["chunkstore"]["heads"]
        assert f["labels/move"].attrs["classes"] == HEADS["move"]
        np.testing.assert_array_equal(f["stats/all/mean"][:], g["stats/all/mean"][:])
        np.testing.assert_array_equal(f["stats/all/class_counts/target"][:],
                                      g["stats/all/class_counts/target"][:])
        assert json.loads(f.attrs["chunkstore"])["split"] == split
        assert ("meta/row" in f) == (split is not None)
        if split:
            np.testing.assert_array_equal(f["meta/row"][:], rows)
    assert not Path(str(out) + ".partial").exists()


@pytest.mark.parametrize("compression", ["lzf", "none"])
def test_hdf5_other_compressions(store, tmp_path, compression):
    out = tmp_path / "o.h5"
    export(store, out, compression=compression, split="a", splits="other")
    g = zarr.open_group(str(store), mode="r")
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f["features"][:], g["features"][:][::2])
        assert f["features"].compression == (None if compression == "none" else "lzf")


def test_h5dump_lists_the_datasets_and_reads_the_data(store, tmp_path):
    if not shutil.which("h5dump"):
        # the test command installs it (Debian: hdf5-tools); CI must run this test
        assert not os.environ.get("CI"), "h5dump is missing: apt-get install hdf5-tools"
        pytest.skip("h5dump is not installed (Debian: apt-get install hdf5-tools)")
    out = tmp_path / "d.h5"
    assert main(["export", str(store), str(out)]) == 0
    header = subprocess.run(["h5dump", "-H", str(out)], capture_output=True, text=True,
                            check=True).stdout
    datasets = set(re.findall(r'DATASET "([^"]+)"', header))
    assert {"features", "move", "target", "group", "default", "other", "mean"} <= datasets
    groups = set(re.findall(r'GROUP "([^"]+)"', header))
    assert {"/", "labels", "masks", "meta", "splits", "stats", "all"} <= groups
    assert 'ATTRIBUTE "feature_names"' in header
    # h5dump decodes the gzip chunks written directly (not through h5py's filter)
    dump = subprocess.run(["h5dump", "-d", "/labels/move", "-w", "0", "-y", str(out)],
                          capture_output=True, text=True, check=True).stdout
    data = dump.split("DATA {", 1)[1].split("}", 1)[0]
    values = [int(v) for v in re.findall(r"-?\d+", data)]
    np.testing.assert_array_equal(values, zarr.open_group(str(store))["labels/move"][:])


@pytest.mark.parametrize("split", [None, "train", "test"])
def test_npy_export_equals_the_store(store, tmp_path, split):
    args = ["export", str(store), str(tmp_path / "npy"), "--format", "npy"]
    assert main(args + (["--split", split] if split else [])) == 0
    g = zarr.open_group(str(store), mode="r")
    rows = rows_of(g, split)
    sfx = f"_{split}" if split else ""
    x = np.load(tmp_path / "npy" / f"X{sfx}.npy", mmap_mode="r")
    np.testing.assert_array_equal(x, g["features"][:][rows])
    with np.load(tmp_path / "npy" / f"labels{sfx}.npz") as lab, \
            np.load(tmp_path / "npy" / f"masks{sfx}.npz") as mask:
        assert sorted(lab.files) == sorted(mask.files) == sorted(HEADS)
        for h in HEADS:
            np.testing.assert_array_equal(lab[h], g[f"labels/{h}"][:][rows])
            np.testing.assert_array_equal(mask[h], g[f"masks/{h}"][:][rows])
    assert sorted(p.name for p in (tmp_path / "npy").iterdir()) == sorted(
        [f"X{sfx}.npy", f"labels{sfx}.npz", f"masks{sfx}.npz"])


@pytest.mark.slow
def test_exports_ingest_back_unchanged(store, tmp_path):
    """HDF5 export -> hdf5 source, npy export -> npy source: the same arrays and names."""
    g = zarr.open_group(str(store), mode="r")
    export(store, tmp_path / "all.h5")
    export(store, tmp_path / "npy", format="npy")
    for kind, source in [("hdf5", {"kind": "hdf5", "paths": str(tmp_path / "all.h5")}),
                         ("npy", {"kind": "npy", "features": str(tmp_path / "npy" / "X.npy"),
                                  "labels": str(tmp_path / "npy" / "labels.npz"),
                                  "masks": str(tmp_path / "npy" / "masks.npz")})]:
        back = tmp_path / f"{kind}.zarr"
        cfg = write_config(tmp_path / f"{kind}.yaml", store=back, paths="", source=source,
                           ingest={"chunk_rows": CHUNK, "workers": 1})
        ingest(str(cfg), progress=False)
        b = zarr.open_group(str(back), mode="r")
        for p in sample_paths(g)[:-1]:
            np.testing.assert_array_equal(b[p][:], g[p][:], err_msg=f"{kind} {p}")
    np.testing.assert_array_equal(zarr.open_group(str(tmp_path / "hdf5.zarr"))["meta/group"][:],
                                  g["meta/group"][:])


def test_empty_split_exports_empty_arrays(store, tmp_path):
    g = zarr.open_group(str(store), mode="r+")
    n = g["features"].shape[0]
    a = g.create_array("splits/empty", shape=(n,), chunks=(CHUNK,), dtype="int8", fill_value=0)
    a.attrs.update({"names": ["all", "none"], "complete": True})
    export(store, tmp_path / "e.h5", split="none", splits="empty")
    export(store, tmp_path / "e", split="none", splits="empty", format="npy")
    with h5py.File(tmp_path / "e.h5") as f:
        assert f["features"].shape == (0, g["features"].shape[1])
    assert np.load(tmp_path / "e" / "X_none.npy").shape == (0, g["features"].shape[1])
    del g["splits/empty"]


def test_bad_requests_are_clear_errors(store, tmp_path, capsys):
    with pytest.raises(ExportError, match="split 'nope' is not in 'splits/default', whose names "
                                          "are \\['train', 'val', 'test'\\]"):
        export(store, tmp_path / "a.h5", split="nope")
    with pytest.raises(ExportError, match="no split array 'splits/missing' \\(it has "
                                          "\\['default', 'other'\\]\\)"):
        export(store, tmp_path / "a.h5", split="train", splits="missing")
    with pytest.raises(ExportError, match="unknown compression"):
        export(store, tmp_path / "a.h5", compression="zstd")
    with pytest.raises(NotAStoreError):
        export(tmp_path / "nothing", tmp_path / "a.h5")
    (tmp_path / "x.h5").write_text("keep me")
    assert main(["export", str(store), str(tmp_path / "x.h5")]) == 1
    assert "already exist; pass --overwrite" in capsys.readouterr().err
    assert (tmp_path / "x.h5").read_text() == "keep me"
    assert main(["export", str(store), str(tmp_path / "x.h5"), "--overwrite"]) == 0
    assert not list(tmp_path.glob("*.partial"))


def test_incomplete_store_is_refused(store, tmp_path):
    copy = tmp_path / "copy.zarr"
    shutil.copytree(store, copy)
    g = zarr.open_group(str(copy), mode="r+")
    g.attrs["chunkstore"] = {**g.attrs["chunkstore"], "status": "incomplete"}
    with pytest.raises(ExportError, match="incomplete"):
        export(copy, tmp_path / "a.h5")
    assert not (tmp_path / "a.h5").exists()
