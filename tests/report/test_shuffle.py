"""Shuffle-quality report: figures of known orders, and the loader against random."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import chunkstore
from chunkstore.report.shuffle import order_figures, shuffle_report
from chunkstore.testing.data import write_config, write_items

CLASSES = 12
EPISODES, EPISODE_ROWS, CHUNK_ROWS = 60, 40, 40


@pytest.fixture(scope="module")
def episode_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """2,400 rows ordered by episode: one file of 40 rows per episode, each episode one
    class of head ``a`` (labels persist within an episode), one episode per chunk."""
    tmp = tmp_path_factory.mktemp("episodes")
    rng = np.random.default_rng(0)
    items = []
    for e in range(EPISODES):
        label = np.full(EPISODE_ROWS, e % CLASSES, np.int64)
        items.append({"strategic_features": rng.normal(size=(EPISODE_ROWS, 3)).astype(np.float32),
                      "labels_a": label, "masks_a": np.ones((EPISODE_ROWS, CLASSES), np.int8)})
    cfg = write_config(tmp / "c.yaml", store=tmp / "s.zarr", paths=write_items(tmp / "b", items),
                       n_features=3, heads={"a": CLASSES}, ingest={"chunk_rows": CHUNK_ROWS})
    chunkstore.ingest(cfg, progress=False)
    return str(tmp / "s.zarr")


def test_store_order_is_perfectly_correlated_and_poorly_mixed() -> None:
    labels = {"a": np.repeat(np.arange(10), 100)}
    batches = list(np.arange(1000).reshape(10, 100))
    figs = order_figures(batches, labels, chunk_rows=50)
    assert figs.rank_correlation == pytest.approx(1.0)
    assert figs.distinct_classes["a"]["mean"] == 1.0
    assert figs.chunks_per_batch == 2.0 and figs.adjacent_share_chunk == 0.0


def test_reversed_order_has_rank_correlation_minus_one() -> None:
    figs = order_figures([np.arange(99, -1, -1)], {"a": np.zeros(100, np.int64)}, 10)
    assert figs.rank_correlation == pytest.approx(-1.0)


def test_unshuffled_loader_on_an_episode_store_is_far_from_random(episode_store: str) -> None:
    ds = chunkstore.open(episode_store)
    report = shuffle_report(ds, batch_size=40, shuffle=False)
    assert report.loader.rank_correlation == pytest.approx(1.0)
    assert report.loader.distinct_classes["a"]["mean"] == 1.0  # one episode per batch
    assert report.random.distinct_classes["a"]["mean"] > 9  # 40 draws of 12 classes: ~11
    assert abs(report.random.rank_correlation) < 0.1
    assert report.worst_ratio() < 0.2


def test_a_window_of_every_chunk_shuffles_like_random(episode_store: str) -> None:
    ds = chunkstore.open(episode_store)
    report = shuffle_report(ds, batch_size=40, window_chunks=EPISODES)
    assert report.loader.batches == report.random.batches == EPISODES
    assert report.ratio("a") == pytest.approx(1.0, abs=0.05)
    assert abs(report.loader.rank_correlation) < 0.1
    text = str(report)
    assert "a mean" in text and "rank correlation" in text
    assert report.to_dict()["ratio"]["a"]["mean"] == pytest.approx(report.ratio("a"))


def test_small_windows_mix_worse_than_large_ones(episode_store: str) -> None:
    ds = chunkstore.open(episode_store)
    small = shuffle_report(ds, batch_size=40, window_chunks=2).ratio("a")
    large = shuffle_report(ds, batch_size=40, window_chunks=30).ratio("a")
    assert small < 0.5 < large


def test_report_is_deterministic_for_seed_and_epoch(episode_store: str, tmp_path: Path) -> None:
    ds = chunkstore.open(episode_store)
    a = shuffle_report(ds, batch_size=40, window_chunks=4, seed=1, epoch=2).to_dict()
    b = shuffle_report(ds, batch_size=40, window_chunks=4, seed=1, epoch=2).to_dict()
    assert a == b
