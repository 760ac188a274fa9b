"""``ds.to_xgboost``: a QuantileDMatrix read chunk by chunk trains the model the in-memory
arrays train; folds of a grouped k-fold; weights from masks; the missing-extra hint."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb  # noqa: E402  (test extra: xgboost-cpu)

import chunkstore  # noqa: E402
from chunkstore import ingest  # noqa: E402
from chunkstore.errors import ReadError, SplitError, UsageError  # noqa: E402
from chunkstore.interop.training import Parts, StoreBatches  # noqa: E402
from chunkstore.splits.write import run_split  # noqa: E402
from chunkstore.testing import make_items, read_all, write_config, write_items  # noqa: E402

SIZES = [37, 5, 60, 23, 41, 9, 77, 30, 1, 50]  # 333 rows: 42 chunks of 8, the last short
PARAMS = {"tree_method": "hist", "objective": "multi:softprob", "num_class": 3,
          "max_depth": 3, "seed": 0, "nthread": 1}
MAX_BIN = 512  # > rows: the quantile cuts are exact, so batching cannot move them


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A complete store with ~10% NaN features, a train/val/test split and a grouped
    3-fold split set ``cv`` (10 groups)."""
    tmp = tmp_path_factory.mktemp("xgb")
    items = make_items(SIZES, seed=3)
    rng = np.random.default_rng(0)
    for d in items:
        f = d["strategic_features"]
        f[rng.random(f.shape) < 0.1] = np.nan
    cfg = write_config(tmp / "c.yaml", store=tmp / "s.zarr", paths=write_items(tmp / "b", items),
                       ingest={"chunk_rows": 8})
    ingest(cfg, progress=False)
    path = str(tmp / "s.zarr")
    run_split(path, seed=1)
    run_split(path, method="kfold", k=3, group=True, name="cv", seed=2)
    return path


@pytest.fixture(scope="module")
def full(store: str) -> dict[str, np.ndarray]:
    return {**read_all(store), "meta/group": np.asarray(chunkstore.open(store).meta["group"][:])}


def _predict(dtrain: xgb.DMatrix, x: np.ndarray) -> np.ndarray:
    return xgb.train({**PARAMS, "max_bin": MAX_BIN}, dtrain, 8).predict(xgb.DMatrix(x))


@pytest.mark.parametrize("split", [None, "train"])
def test_store_matrix_trains_the_in_memory_model(store: str, full: dict[str, np.ndarray],
                                                 split: str | None) -> None:
    ds = chunkstore.open(store)
    x, y = full["features"], full["labels/target"]
    assert np.isnan(x).any() and ds.n_samples % ds.chunk_rows
    rows = slice(None) if split is None else ds.split_array().mask(split)
    # batch_bytes=1: one chunk per batch, so XGBoost merges 42 (or fewer) sketches
    dstore = ds.to_xgboost(split=split, label="target", max_bin=MAX_BIN, batch_bytes=1)
    dmem = xgb.QuantileDMatrix(x[rows], label=y[rows], max_bin=MAX_BIN)
    assert dstore.num_row() == dmem.num_row() and dstore.num_col() == x.shape[1]
    np.testing.assert_array_equal(dstore.get_label(), y[rows])
    np.testing.assert_allclose(_predict(dstore, x), _predict(dmem, x), rtol=0, atol=1e-6)


def test_validation_matrix_shares_the_training_cuts(store: str) -> None:
    ds = chunkstore.open(store)
    dtrain = ds.to_xgboost(split="train", label="target")
    dval = ds.to_xgboost(split="val", label="target", ref=dtrain)
    result: dict[str, dict[str, list[float]]] = {}
    xgb.train(PARAMS, dtrain, 3, evals=[(dval, "val")], evals_result=result)
    assert len(result["val"]["mlogloss"]) == 3
    assert dval.num_row() == int(ds.split_array().mask("val").sum())


def test_external_memory_trains_the_same_model(store: str, full: dict[str, np.ndarray],
                                               tmp_path: Path) -> None:
    ds = chunkstore.open(store)
    x, y = full["features"], full["labels/target"]
    dext = ds.to_xgboost(label="target", max_bin=MAX_BIN, external_memory=True,
                         cache_dir=str(tmp_path), batch_bytes=1)
    assert isinstance(dext, xgb.ExtMemQuantileDMatrix)
    dmem = xgb.QuantileDMatrix(x, label=y, max_bin=MAX_BIN)
    np.testing.assert_allclose(_predict(dext, x), _predict(dmem, x), rtol=0, atol=1e-6)


def test_batches_hold_a_few_chunks_and_every_selected_row_once(
        store: str, full: dict[str, np.ndarray]) -> None:
    ds = chunkstore.open(store)
    member = ds.split_array().mask("train")
    row_bytes = 4 * ds.features.shape[1]
    batches = StoreBatches(ds, member=member, label="target", weight=None,
                           batch_bytes=3 * ds.chunk_rows * row_bytes)
    read = [batches.read(i) for i in range(len(batches))]
    batches.close()
    assert all(len(c) <= 3 for c in batches.batches) and len(batches) > 1
    np.testing.assert_array_equal(np.concatenate([b["features"] for b in read]),
                                  full["features"][member])
    np.testing.assert_array_equal(np.concatenate([b["label"] for b in read]),
                                  full["labels/target"][member])


def test_weights_from_the_label_heads_mask(store: str, full: dict[str, np.ndarray]) -> None:
    ds = chunkstore.open(store)
    y, mask = full["labels/target"], full["masks/target"]
    d = ds.to_xgboost(label="target", weight="mask")
    np.testing.assert_array_equal(d.get_weight(), mask[np.arange(len(y)), y].astype(np.float32))
    assert ds.to_xgboost(label="target").get_weight().size == 0  # masks ignored by default


def test_grouped_folds_are_disjoint_by_group_and_cover_the_split(
        store: str, full: dict[str, np.ndarray]) -> None:
    ds = chunkstore.open(store)
    folds = ds.folds("cv")
    groups = full["meta/group"]
    assert [f.name for f in folds] == ["fold0", "fold1", "fold2"]
    held = np.zeros(ds.n_samples, dtype=np.int64)
    for train, valid in folds:
        t, v = train.mask(ds), valid.mask(ds)
        assert not (t & v).any() and (t | v).all()
        assert not set(groups[t]) & set(groups[v])
        held += v
        d = ds.to_xgboost(split=train, label="target")
        assert d.num_row() == int(t.sum())
    assert (held == 1).all()  # every row is validated in exactly one fold


def test_bad_arguments_say_what_to_do(store: str) -> None:
    ds = chunkstore.open(store)
    with pytest.raises(SplitError, match="not a k-fold split set"):
        ds.folds("default")
    with pytest.raises(ReadError, match="not a head"):
        ds.to_xgboost(label="nope")
    with pytest.raises(ReadError, match="needs label"):
        ds.to_xgboost(weight="mask")
    with pytest.raises(ReadError, match="expected None, 'mask'"):
        ds.to_xgboost(label="target", weight="meta/nothing")
    with pytest.raises(UsageError, match="splits=Parts|drop splits="):
        ds.to_xgboost(split=Parts("cv", ("fold0",)), splits="default2", label="target")


def test_missing_xgboost_gives_the_install_hint(store: str) -> None:
    code = ("import sys; sys.modules['xgboost'] = None\n"
            "import chunkstore\n"
            "from chunkstore.errors import MissingDependencyError\n"
            f"ds = chunkstore.open({store!r})\n"
            "try:\n"
            "    ds.to_xgboost(label='target')\n"
            "except MissingDependencyError as e:\n"
            "    print('HINT', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert "HINT" in out and "pip install 'chunkstore[xgboost]'" in out


@pytest.mark.slow  # ~25 s: three folds of real XGBoost training
def test_the_grouped_cv_example_runs_every_fold(store: str, capsys: pytest.CaptureFixture
                                                ) -> None:
    from examples.boosting_cv import main

    results = main([store, "--label", "target", "--folds", "cv", "--rounds", "5"])
    ds = chunkstore.open(store)
    assert [r["fold"] for r in results] == ["fold0", "fold1", "fold2"]
    assert sum(r["valid_rows"] for r in results) == ds.n_samples
    assert all(np.isfinite(r["valid_mlogloss"]) for r in results)
    assert "mean over 3 folds" in capsys.readouterr().out
