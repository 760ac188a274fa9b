"""``ds.partial_fit``: every training row once per epoch through the loader, classes and
normalization from the store, a real SGDClassifier, no scikit-learn needed to call it."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import numpy as np
import pytest

import chunkstore
from chunkstore.errors import ReadError, UsageError
from chunkstore.splits.write import run_split
from chunkstore.stats.compute import compute_stats
from chunkstore.testing import read_all


class Recorder:
    """An incremental 'estimator' that keeps every batch it was given."""

    def __init__(self) -> None:
        self.x: list[np.ndarray] = []
        self.y: list[np.ndarray] = []
        self.classes: list[Any] = []

    def partial_fit(self, x: np.ndarray, y: np.ndarray | None = None,
                    classes: Any = None) -> Recorder:
        self.x.append(np.array(x))
        if y is not None:
            self.y.append(np.array(y))
        self.classes.append(classes)
        return self


class Unsupervised:
    """An estimator whose partial_fit takes X only (like IncrementalPCA)."""

    def __init__(self) -> None:
        self.rows = 0

    def partial_fit(self, x: np.ndarray) -> Unsupervised:
        self.rows += len(x)
        return self


@pytest.fixture(scope="module")
def store(small_store, copy_store) -> str:
    """The small store (333 rows, chunks of 8) with a split and stats/train."""
    path = copy_store(small_store(8), "sk")
    run_split(path, seed=1)
    compute_stats(path, split="train", correlation=False)
    return path


def _sorted_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    both = np.column_stack([x, y])
    return both[np.lexsort(both.T[::-1])]


def test_every_training_row_once_per_epoch(store: str) -> None:
    ds = chunkstore.open(store)
    full = read_all(store)
    train = ds.split_array().mask("train")
    want = _sorted_rows(full["features"][train], full["labels/target"][train])
    rec = ds.partial_fit(Recorder(), split="train", label="target", batch_size=32, epochs=3)
    x, y = np.concatenate(rec.x), np.concatenate(rec.y)
    n = int(train.sum())
    assert len(x) == 3 * n
    for e in range(3):
        np.testing.assert_array_equal(_sorted_rows(x[e * n:(e + 1) * n], y[e * n:(e + 1) * n]),
                                      want)
    assert not np.array_equal(x[:n], x[n:2 * n])  # each epoch is shuffled anew
    assert all(np.array_equal(c, np.arange(3)) for c in rec.classes)  # "target" has 3 classes


def test_normalize_uses_train_statistics(store: str) -> None:
    ds = chunkstore.open(store)
    stats = ds.stats("train")
    rec = ds.partial_fit(Recorder(), split="train", label="move", normalize=True)
    raw = ds.partial_fit(Recorder(), split="train", label="move")
    x, x0 = np.concatenate(rec.x), np.concatenate(raw.x)
    np.testing.assert_allclose(x, (x0 - stats.mean) / stats.std, rtol=1e-5, atol=1e-5)


def test_without_label_and_with_explicit_classes(store: str) -> None:
    ds = chunkstore.open(store)
    est = ds.partial_fit(Unsupervised(), split="val", epochs=2)
    assert est.rows == 2 * int(ds.split_array().mask("val").sum())
    rec = ds.partial_fit(Recorder(), split="test", label="move",
                         classes=[0, 1, 2, 3, 4, 5])
    assert all(list(c) == [0, 1, 2, 3, 4, 5] for c in rec.classes)


def test_a_real_sgd_classifier(store: str) -> None:
    linear = pytest.importorskip("sklearn.linear_model")
    ds = chunkstore.open(store)
    clf = ds.partial_fit(linear.SGDClassifier(loss="log_loss", random_state=0), split="train",
                         label="target", epochs=2, batch_size=64, normalize=True)
    np.testing.assert_array_equal(clf.classes_, np.arange(3))
    x = np.asarray(ds.features[:20])
    assert clf.predict_proba((x - ds.stats("train").mean) / ds.stats("train").std).shape == (
        20, 3)


def test_bad_arguments_say_what_to_do(store: str) -> None:
    ds = chunkstore.open(store)
    with pytest.raises(UsageError, match="no partial_fit"):
        ds.partial_fit(object(), label="target")
    with pytest.raises(UsageError, match="epochs"):
        ds.partial_fit(Recorder(), label="target", epochs=0)
    with pytest.raises(ReadError, match="not a head"):
        ds.partial_fit(Recorder(), label="nope")


def test_a_folds_train_side_of_several_parts(store: str) -> None:
    """The train side of a k-fold (k-1 parts) is one selection: each of its rows once per
    epoch, none of the validation fold's."""
    full = read_all(store)
    run_split(store, method="kfold", k=3, group=True, name="cv", seed=0)
    ds = chunkstore.open(store)
    for train, valid in ds.folds("cv"):
        member = train.mask(ds)
        assert not (member & valid.mask(ds)).any()
        rec = ds.partial_fit(Recorder(), split=train, label="target", batch_size=16, epochs=2)
        x, y = np.concatenate(rec.x), np.concatenate(rec.y)
        n = int(member.sum())
        assert len(x) == 2 * n
        want = _sorted_rows(full["features"][member], full["labels/target"][member])
        np.testing.assert_array_equal(_sorted_rows(x[:n], y[:n]), want)
        np.testing.assert_array_equal(_sorted_rows(x[n:], y[n:]), want)


def test_normalize_with_another_split_set_reads_its_own_train_stats(store: str,
                                                                    write_split: Any) -> None:
    ds = chunkstore.open(store)
    write_split(store, (np.arange(ds.n_samples) % 2).astype(np.int8), name="alt",
                names=["train", "val"])
    with pytest.raises(ReadError, match="stats/alt/train/mean.*--split-set alt"):
        ds.partial_fit(Recorder(), split="alt/train", label="move", normalize=True)
    compute_stats(store, split="train", splits="alt", correlation=False)
    ds = chunkstore.open(store)
    alt = ds.stats("alt/train")
    assert not np.allclose(alt.mean, ds.stats("train").mean)
    rec = ds.partial_fit(Recorder(), split="alt/train", label="move", normalize=True)
    raw = ds.partial_fit(Recorder(), split="alt/train", label="move")
    np.testing.assert_allclose(np.concatenate(rec.x), (np.concatenate(raw.x) - alt.mean)
                               / alt.std, rtol=1e-5, atol=1e-5)


def test_needs_no_scikit_learn(store: str) -> None:
    code = ("import sys; sys.modules['sklearn'] = None\n"
            "import chunkstore\n"
            "class R:\n"
            "    n = 0\n"
            "    def partial_fit(self, x, y, classes=None):\n"
            "        self.n += len(x)\n"
            f"r = chunkstore.open({store!r}).partial_fit(R(), split='train', label='target')\n"
            "print('ROWS', r.n)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    n = int(chunkstore.open(store).split_array().mask("train").sum())
    assert f"ROWS {n}" in out
