"""``chunkstore stats`` end to end: real ingest processes, real Dask (threads and a LocalCluster),
real split arrays; ingest-time ``stats/all`` must equal the Dask recomputation."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

import chunkstore
from chunkstore import ingest
from chunkstore.cli import main
from chunkstore.errors import ReadError
from chunkstore.stats.compute import compute_stats
from chunkstore.testing import HEADS, concat, make_items, write_config, write_items

SIZES = [100, 37, 250, 1, 0, 150, 62]  # 600 rows
CHUNK = 32
F = 12
NAMES = ["train", "val", "test"]
FIXTURES = Path(__file__).parents[1] / "fixtures"


def _items(adversarial, seed: int = 0) -> list[dict[str, np.ndarray]]:
    items = make_items(SIZES, seed=seed, n_features=F)
    x = adversarial(sum(SIZES), seed=seed, chunk=CHUNK)  # column 10: one all-NaN chunk
    start = 0
    for d, n in zip(items, SIZES, strict=True):
        d["strategic_features"] = x[start:start + n]
        start += n
    return items


def _ingest(tmp: Path, items, **extra) -> Path:
    store = tmp / "s.zarr"
    cfg = write_config(tmp / "c.yaml", store=store, paths=write_items(tmp / "b", items),
                       n_features=F, ingest={"workers": 2, "chunk_rows": CHUNK,
                                             "task_chunks": 3},
                       **{"stats": {"correlation": True}, **extra})
    ingest(cfg, progress=False)
    return store


def _write_split(store: Path, name: str, codes: np.ndarray) -> None:
    g = zarr.open_group(str(store), mode="r+")
    a = g.create_array(f"splits/{name}", shape=codes.shape, dtype="int8", chunks=(CHUNK,),
                       fill_value=-1)
    a[...] = codes
    a.attrs.update({"names": NAMES, "method": "random", "seed": 0, "by": None, "complete": True})


@pytest.fixture(scope="module")
def built(tmp_path_factory, oracle):
    tmp = tmp_path_factory.mktemp("stats")
    items = _items(oracle.adversarial)
    store = _ingest(tmp, items)
    rng = np.random.default_rng(1)
    n = sum(SIZES)
    codes = rng.choice(3, size=n, p=[0.7, 0.2, 0.1]).astype(np.int8)
    _write_split(store, "default", codes)
    _write_split(store, "other", (2 - codes).astype(np.int8))
    return store, items, codes


@pytest.fixture
def store(built, tmp_path):
    src, items, codes = built
    dst = tmp_path / "copy.zarr"
    shutil.copytree(src, dst)
    return dst, items, codes


def _read(store: Path, scope: str) -> dict[str, np.ndarray]:
    g = zarr.open_group(str(store), mode="r")[f"stats/{scope}"]
    out = {}

    def walk(grp, prefix):
        for k, a in grp.arrays():
            out[prefix + k] = a[...]
        for k, sub in grp.groups():
            walk(sub, f"{prefix}{k}/")

    walk(g, "")
    return out


def _check_against_reference(oracle, got: dict[str, np.ndarray], x: np.ndarray) -> None:
    ref = oracle.reference(x)
    np.testing.assert_array_equal(got["count"], ref["count"])
    np.testing.assert_array_equal(got["nan_count"], ref["nan"])
    np.testing.assert_array_equal(got["inf_count"], ref["inf"])
    np.testing.assert_array_equal(got["min"], ref["min"])  # NaN where no finite value
    np.testing.assert_array_equal(got["max"], ref["max"])
    seen = ref["count"] > 0
    std = np.sqrt(ref["var"][seen])
    assert np.all(np.abs(got["mean"][seen] - ref["mean"][seen])
                  <= 1e-12 * np.maximum(np.abs(ref["mean"][seen]), std))
    np.testing.assert_allclose(got["std"][seen] ** 2, ref["var"][seen], rtol=1e-8, atol=0)
    rc = oracle.reference_corr(x)
    np.testing.assert_array_equal(np.isnan(got["corr"]), np.isnan(rc))
    ok = ~np.isnan(rc)
    assert np.all(np.abs(got["corr"][ok] - rc[ok]) <= 1e-9)


def test_ingest_stats_all_equals_dask_stats_and_numpy(store, oracle):
    path, items, _ = store
    x = concat(items, "strategic_features")
    online = _read(path, "all")
    assert zarr.open_group(str(path))["stats/all"].attrs["method"] == "ingest"
    _check_against_reference(oracle, online, x)
    for h, k in HEADS.items():
        lab = concat(items, f"labels_{h}")
        np.testing.assert_array_equal(online[f"class_counts/{h}"], np.bincount(lab, minlength=k))
        np.testing.assert_array_equal(online[f"mask_counts/{h}"],
                                      concat(items, f"masks_{h}").sum(axis=0))

    st = compute_stats(str(path), bins=8, progress=False, block_mib=0.001)  # 1 chunk per block
    lazy = _read(path, "all")
    assert st.attrs["method"] == "dask" and st.rows == len(x)
    _check_against_reference(oracle, lazy, x)
    for name in ("count", "nan_count", "inf_count", "min", "max", "corr_count"):
        np.testing.assert_array_equal(lazy[name], online[name])
    for name in ("mean", "std", "skew", "kurtosis", "corr"):
        np.testing.assert_allclose(lazy[name], online[name], rtol=1e-9, atol=1e-12,
                                   equal_nan=True)
    for h in HEADS:
        np.testing.assert_array_equal(lazy[f"class_counts/{h}"], online[f"class_counts/{h}"])
        np.testing.assert_array_equal(lazy[f"mask_counts/{h}"], online[f"mask_counts/{h}"])
        assert lazy[f"contingency/{h}"].shape == (F, 8, HEADS[h])
        assert lazy[f"mutual_info/{h}"].shape == (F,)
    assert lazy["hist"].shape == (F, 8) and lazy["quantiles"].shape == (F, 7)


def test_split_scope_covers_only_the_split_rows(store, oracle):
    path, items, codes = store
    x = concat(items, "strategic_features")
    train = codes == 0
    st = compute_stats(str(path), split="train", bins=8, progress=False)
    got = _read(path, "train")
    _check_against_reference(oracle, got, x[train])
    assert st.attrs["split"] == {"array": "splits/default", "name": "train", "code": 0}
    assert st.rows == int(train.sum())
    for h, k in HEADS.items():
        lab = concat(items, f"labels_{h}")[train]
        np.testing.assert_array_equal(got[f"class_counts/{h}"], np.bincount(lab, minlength=k))
    v = x[train].astype(np.float64)
    for j in (0, 5, 7, 11):
        col = v[np.isfinite(v[:, j]), j]
        np.testing.assert_array_equal(got["hist"][j], np.histogram(col, got["hist_edges"][j])[0])
    # the Python API reads it back, with normalization parameters
    ds = chunkstore.open(str(path))
    loaded = ds.stats("train")
    np.testing.assert_array_equal(loaded.mean, got["mean"])
    assert loaded.feature_names == tuple(ds.feature_names)
    for h in HEADS:
        masks = concat(items, f"masks_{h}")[train]
        np.testing.assert_allclose(loaded.mask_coverage()[h], (masks != 0).mean(axis=0))
    norm = loaded.normalization()
    assert norm.mean.dtype == np.float32 and np.all(norm.std > 0)
    assert norm.guarded[[2, 3, 4, 6]].all() and not norm.guarded[0]
    assert np.isfinite(norm.apply(np.nan_to_num(x[:5], posinf=0, neginf=0))[:, [0, 2, 4]]).all()
    # another split array gets its own scope
    compute_stats(str(path), split="train", splits="other", bins=8, progress=False)
    assert ds.stats("other/train").rows == int((codes == 2).sum())
    assert ds.stats("train").rows == int(train.sum())


@pytest.mark.cluster
def test_distributed_cluster_gives_the_same_result_as_threads(store):
    from distributed import LocalCluster

    path, _, _ = store
    local = compute_stats(str(path), split="val", bins=8, progress=False)
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                      dashboard_address=":0") as cluster:
        remote = compute_stats(str(path), split="val", bins=8, progress=True,
                               scheduler=cluster.scheduler_address)
    for name in ("mean", "std", "corr", "hist", "quantiles"):
        np.testing.assert_array_equal(getattr(remote, name), getattr(local, name))
    for h in HEADS:
        np.testing.assert_array_equal(remote.mutual_info[h], local.mutual_info[h])


def _stats_groups(path: Path) -> list[str]:
    return sorted(k for k, _ in zarr.open_group(str(path))["stats"].groups())


@pytest.mark.parametrize("kwargs, match", [
    ({"split": "holdout"}, "is not in .splits/default., whose names are"),
    ({"split": "train", "splits": "nope"}, "no split array 'splits/nope'"),
    ({"bins": 1}, "bins must be an integer >= 2"),
])
def test_bad_arguments_fail_and_leave_the_store_unchanged(store, kwargs, match):
    path, _, _ = store
    before = _stats_groups(path)
    with pytest.raises(ReadError, match=match):
        compute_stats(str(path), progress=False, **kwargs)
    assert _stats_groups(path) == before


def test_empty_split_and_incomplete_store_are_refused(store):
    path, _, codes = store
    _write_split(path, "half_written", codes)
    zarr.open_group(str(path), mode="r+")["splits/half_written"].attrs["complete"] = False
    with pytest.raises(ReadError, match="incomplete .*complete: true"):
        compute_stats(str(path), split="train", splits="half_written", progress=False)
    _write_split(path, "empty", np.full(len(codes), 1, np.int8))
    with pytest.raises(ReadError, match="holds no rows"):
        compute_stats(str(path), split="train", splits="empty", progress=False)
    g = zarr.open_group(str(path), mode="r+")
    g.attrs["chunkstore"] = {**g.attrs["chunkstore"], "status": "incomplete"}
    with pytest.raises(ReadError, match="incomplete"):
        compute_stats(str(path), progress=False)


def test_cli_prints_a_summary_and_errors_exit_1(store, capsys):
    path, _, _ = store
    assert main(["stats", str(path), "--split", "train", "--bins", "8", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "stats/train" in out and "constant features   3: f02, f03, f04" in out
    assert "features with NaN   3 (1 all NaN): f05, f06, f10" in out
    assert "top mutual information" in out and "class balance" in out
    assert main(["stats", str(path), "--split", "nope", "--quiet"]) == 1
    assert "is not in 'splits/default', whose names are" in capsys.readouterr().err
    assert main(["stats", str(path), "--no-correlation", "--quiet"]) == 0
    assert chunkstore.open(str(path)).stats().corr is None


@pytest.mark.slow
def test_online_stats_options(tmp_path):
    items = make_items([40, 25], seed=4)
    path = _ingest_small(tmp_path / "a", items, stats={"correlation": False})
    st = chunkstore.open(str(path)).stats()
    assert st.corr is None and st.attrs["correlation"] is False
    np.testing.assert_allclose(st.mean, concat(items, "strategic_features").mean(0), rtol=1e-6)
    path = _ingest_small(tmp_path / "b", items, stats={"online": False})
    assert "stats" not in zarr.open_group(str(path))
    with pytest.raises(ReadError, match=r"chunkstore stats .*b/s\.zarr"):
        chunkstore.open(str(path)).stats()
    compute_stats(str(path), progress=False)
    assert chunkstore.open(str(path)).stats().rows == 65


def _ingest_small(tmp: Path, items, **extra) -> Path:
    store = tmp / "s.zarr"
    cfg = write_config(tmp / "c.yaml", store=store, paths=write_items(tmp / "b", items),
                       ingest={"workers": 1, "chunk_rows": 16}, **extra)
    ingest(cfg, progress=False)
    return store


def test_stats_of_the_golden_store_still_load():
    here = FIXTURES / "golden.zarr"
    expected = np.load(FIXTURES / "golden_expected.npz")
    st = chunkstore.open(str(here)).stats()
    np.testing.assert_allclose(st.mean, expected["features"].astype(np.float64).mean(0),
                               rtol=1e-12)
    assert st.skew is None and st.corr is None and st.hist is None
    assert "stats/all" in st.format()


def test_one_pass_with_stored_edges_equals_two_passes_even_when_they_are_stale(store):
    """Ingest's exact min/max give the edges before reading, so both passes share one read;
    stale stored edges (here: a changed max) are detected and pass 2 reruns with the right
    ones, and a store without them takes two passes: all three results are identical."""
    path, items, _ = store
    x = concat(items, "strategic_features").astype(np.float64)
    compute_stats(str(path), bins=8, progress=False, block_mib=0.001)
    one = _read(path, "all")
    g = zarr.open_group(str(path), mode="r+")
    bad = g["stats/all/max"][...]
    bad[[0, 5]] += 1.0
    g["stats/all/max"][...] = bad
    compute_stats(str(path), bins=8, progress=False, block_mib=0.001)
    stale = _read(path, "all")
    del g["stats/all"]
    compute_stats(str(path), bins=8, progress=False, block_mib=0.001)
    two = _read(path, "all")
    for got in (stale, two):
        assert set(got) == set(one)
        for name in one:
            np.testing.assert_array_equal(got[name], one[name], err_msg=name)
    for j in range(x.shape[1]):
        col = x[np.isfinite(x[:, j]), j]
        np.testing.assert_array_equal(one["hist"][j], np.histogram(col, one["hist_edges"][j])[0])
