"""``chunkstore.open(path, version=...)`` is a full read-only Dataset of the store as it was:
rows ``[0, N_v)``, that version's split codes, statistics and heads, for the loader, split
views, Dask and map-style reads, after a later append, split overwrite and stats rerun."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import zarr

import chunkstore
from chunkstore import ingest
from chunkstore.cli.app import main
from chunkstore.errors import UsageError, VersionError
from chunkstore.ingest.append import append
from chunkstore.ingest.heads import add_head
from chunkstore.interop.export import export
from chunkstore.splits.write import run_split
from chunkstore.stats.compute import compute_stats
from chunkstore.store import versions
from chunkstore.testing import make_items, write_config, write_items


def _cfg(tmp: Path, name: str, items: list, store: Path) -> Path:
    return write_config(tmp / f"{name}.yaml", store=store,
                        paths=write_items(tmp / f"{name}-items", items),
                        ingest={"chunk_rows": 8, "task_chunks": 2})


@pytest.fixture(scope="module")
def grown(tmp_path_factory):
    """A store tagged 'paper' at 33 rows (split seed 1, stats/train), then appended to 63
    rows, split overwritten (seed 9), stats/train recomputed and a head added."""
    tmp = tmp_path_factory.mktemp("grown")
    store = tmp / "s.zarr"
    s = str(store)
    items_a, items_b = make_items([13, 20], seed=1), make_items([30], seed=2)
    ingest(_cfg(tmp, "a", items_a, store), progress=False)
    run_split(s, method="random", seed=1)
    compute_stats(s, split="train", progress=False)
    then = {"codes": np.asarray(zarr.open_array(s, path="splits/default")[:]),
            "mean": np.asarray(zarr.open_array(s, path="stats/train/mean")[:]),
            "std": np.asarray(zarr.open_array(s, path="stats/train/std")[:])}
    versions.tag(s, "paper")
    append(_cfg(tmp, "b", items_b, store))
    run_split(s, method="random", seed=9, overwrite=True)
    compute_stats(s, split="train", progress=False)
    add_head(s, "later", 2, np.arange(63) % 2, workers=1)
    features = np.concatenate([it["strategic_features"] for it in items_a + items_b])
    return s, then, features


def test_the_old_version_loader_reads_its_rows_split_and_normalization(grown):
    s, then, features = grown
    ds = chunkstore.open(s, version="paper")
    assert isinstance(ds, chunkstore.Dataset)
    assert len(ds) == 33 and ds.features.shape == (33, 4) and "later" not in ds.heads
    assert not np.array_equal(np.asarray(zarr.open_array(s, path="splits/default")[:33]),
                              then["codes"])  # the live split did change
    train = np.flatnonzero(then["codes"] == 0)
    got = {}
    for batch in ds.loader(batch_size=5, split="train", normalize=True, seed=3):
        for i, row in zip(batch["index"].tolist(), batch["features"], strict=True):
            got[i] = row
    assert sorted(got) == train.tolist()
    std = np.where(then["std"] > 1e-8, then["std"], 1.0)
    want = ((features[train] - then["mean"]) / std).astype(np.float32)
    np.testing.assert_allclose(np.stack([got[i] for i in train]), want, rtol=1e-5, atol=1e-6)
    every = np.concatenate([b["index"] for b in ds.loader(batch_size=7, shuffle=False)])
    np.testing.assert_array_equal(every, np.arange(33))


def test_the_old_version_views_stats_dask_and_rows(grown):
    s, then, features = grown
    ds = chunkstore.open(s, version="paper")
    np.testing.assert_array_equal(ds.split("train").indices, np.flatnonzero(then["codes"] == 0))
    np.testing.assert_array_equal(ds.split("val").features.compute(),
                                  features[:33][then["codes"] == 1])
    np.testing.assert_array_equal(ds.stats("train").mean, then["mean"])
    assert ds.stats("train").rows == int((then["codes"] == 0).sum())
    np.testing.assert_array_equal(ds.to_dask()["features"].compute(), features[:33])
    assert ds.to_dask()["labels/move"].shape == (33,)
    np.testing.assert_array_equal(ds[30:40]["features"], features[30:33])
    np.testing.assert_array_equal(ds.split_array().array[:], then["codes"])
    live = chunkstore.open(s)
    assert len(live) == 63 and "later" in live.heads
    np.testing.assert_array_equal(live.features[:], features)
    assert zarr.open_group(s, mode="r").attrs["chunkstore"]["n_samples"] == 63


def test_a_version_is_read_only_and_must_exist(grown):
    s = grown[0]
    with pytest.raises(UsageError, match="read-only"):
        chunkstore.open(s, mode="r+", version="paper")
    with pytest.raises(VersionError, match="no version or tag 'nope'"):
        chunkstore.open(s, version="nope")


def _cli(capsys, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI in this process (its ``main``), as a finished process: code, stdout, stderr."""
    code = main(list(args))
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out.out, out.err)


def test_export_info_and_stats_accept_a_version(grown, tmp_path, capsys):
    s, then, features = grown
    train = np.flatnonzero(then["codes"] == 0)
    out = tmp_path / "npy"
    r = _cli(capsys, "export", s, str(out), "--format", "npy", "--split", "train",
             "--version", "paper")
    assert r.returncode == 0, r.stderr
    np.testing.assert_array_equal(np.load(out / "X_train.npy"), features[train])
    h5 = tmp_path / "v.h5"
    export(s, h5, version="paper")
    import h5py

    with h5py.File(h5, "r") as f:
        np.testing.assert_array_equal(f["features"][...], features[:33])
        np.testing.assert_array_equal(f["splits/default"][...], then["codes"])
        np.testing.assert_array_equal(f["stats/train/mean"][...], then["mean"])
        assert "labels/later" not in f and json.loads(f.attrs["chunkstore"])["version"]
    r = _cli(capsys, "info", s, "--version", "paper", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["n_samples"] == 33 and "later" not in info["heads"]
    assert info["splits"]["default"]["rows"]["train"] == len(train)
    assert info["version"]["id"] == versions.resolve(s, "paper").id
    assert json.loads(_cli(capsys, "info", s, "--json").stdout)["version"] is None
    r = _cli(capsys, "stats", s, "--version", "paper", "--split", "train")
    assert r.returncode == 0, r.stderr
    assert f"stats/train    {len(train):,} rows" in r.stdout and "33 rows" in r.stdout
    now = _cli(capsys, "stats", s, "--version", "latest", "--split", "train").stdout
    assert f"stats/train    {len(train):,} rows" not in now


@pytest.mark.parametrize("args, code, message", [
    (["stats", "{s}", "--version", "paper", "--bins", "8"], 2, "cannot recompute"),
    (["stats", "{s}", "--version", "paper", "--split", "test"], 1,
     "no statistics for scope 'test'"),
    (["info", "{s}", "--version", "nope"], 1, "no version or tag 'nope'"),
    (["export", "{s}", "{out}", "--version", "99"], 1, "no version or tag '99'"),
])
def test_a_bad_version_request_is_one_clear_line(grown, tmp_path, capsys, args, code,
                                                 message):
    s = grown[0]
    r = _cli(capsys, *(a.format(s=s, out=tmp_path / "x") for a in args))
    assert r.returncode == code and message in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "x").exists()
