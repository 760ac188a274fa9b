"""Histograms, quantiles, contingency tables and mutual information (pure functions)."""

from __future__ import annotations

import math
from functools import reduce

import numpy as np

from chunkstore.core.histograms import (
    QUANTILE_PROBS,
    Binning,
    HistPartial,
    mi_bias,
    mutual_info,
    quantiles,
)
from chunkstore.core.moments import block_stats


def _binned(oracle, x, labels, bins=16):
    """Binning from x's moments and the merged histograms of the oracle's blocks."""
    m, _ = block_stats(x, correlation=False)
    b = Binning.from_moments(m, bins)
    heads = oracle.HEADS
    parts = [HistPartial.of_block(x[s], {h: labels[h][s] for h in heads}, b, heads)
             for s in oracle.blocks(x, oracle.SIZES)]
    return b, reduce(HistPartial.merge, parts)


def test_histograms_equal_numpy_with_the_stored_edges(oracle):
    x = oracle.adversarial()
    b, hp = _binned(oracle, x, oracle.labels_for(len(x)))
    hist, edges = hp.hist(b), b.edges()
    assert hist.shape == (12, 16) and edges.shape == (12, 17)
    v = x.astype(np.float64)
    for j in range(x.shape[1]):
        col = v[np.isfinite(v[:, j]), j]
        if col.size == 0:
            assert hist[j].sum() == 0
            continue
        np.testing.assert_array_equal(hist[j], np.histogram(col, bins=edges[j])[0])
        fine = np.histogram(col, bins=b.fine_edges()[j])[0]
        np.testing.assert_array_equal(hp.fine[j], fine)
    assert hist[4, -1] == len(x)  # a constant column (1e30) lands in the last bin, as in numpy
    assert edges[0, 0] == v[:, 0].min() and edges[0, -1] == v[:, 0].max()


def test_values_on_bin_edges_follow_numpy(oracle):
    x = np.repeat(np.arange(11, dtype=np.float32)[:, None] / 10, 3, axis=1)
    x[:, 2] = np.arange(11) * 0.7
    lab = {h: np.zeros(len(x), np.int64) for h in oracle.HEADS}
    m, _ = block_stats(x, correlation=False)
    b = Binning.from_moments(m, 10)
    hp = HistPartial.of_block(x, lab, b, oracle.HEADS)
    for j in range(3):
        np.testing.assert_array_equal(hp.hist(b)[j], np.histogram(x[:, j].astype(np.float64),
                                                                  bins=b.edges()[j])[0])
        np.testing.assert_array_equal(hp.fine[j], np.histogram(x[:, j].astype(np.float64),
                                                               bins=b.fine_edges()[j])[0])


def test_contingency_tables_count_rows_by_bin_and_class(oracle):
    x = oracle.adversarial()
    lab = oracle.labels_for(len(x))
    lab["move"][:40] = -1  # unwritten rows (label -1) are left out
    b, hp = _binned(oracle, x, lab)
    v = x.astype(np.float64)
    edges = b.edges()
    for h, k in oracle.HEADS.items():
        t = hp.contingency(h)
        assert t.shape == (12, 16, k)
        for j in (0, 5, 7, 10):
            ok = np.isfinite(v[:, j]) & (lab[h] >= 0)
            ref = np.histogram2d(v[ok, j], lab[h][ok], bins=[edges[j], np.arange(k + 1)])[0]
            np.testing.assert_array_equal(t[j], ref.astype(np.int64))


def test_quantiles_within_one_fine_bin(oracle):
    rng = np.random.default_rng(5)
    x = np.stack([rng.normal(3, 2, 3000), rng.exponential(1, 3000),
                  rng.uniform(-1, 1, 3000)], axis=1).astype(np.float32)
    x[::50, 0] = np.nan
    b, hp = _binned(oracle, x, oracle.labels_for(len(x)))
    q = quantiles(hp.fine, b.fine_edges())
    assert q.shape == (3, len(QUANTILE_PROBS))
    for j in range(3):
        col = x[:, j][np.isfinite(x[:, j])].astype(np.float64)
        width = (col.max() - col.min()) / b.fine
        ref = np.quantile(col, QUANTILE_PROBS)
        assert np.all(np.abs(q[j] - ref) <= 2 * width), (j, q[j], ref)
        assert np.all(np.diff(q[j]) >= 0)


def test_quantiles_of_an_empty_feature_are_nan():
    q = quantiles(np.zeros((1, 8), np.int64), np.zeros((1, 9)))
    assert np.isnan(q).all()


def test_mi_of_merged_tables_equals_mi_of_one_table(oracle):
    x = oracle.adversarial()
    lab = oracle.labels_for(len(x))
    b, merged = _binned(oracle, x, lab)
    whole = HistPartial.of_block(x, lab, b, oracle.HEADS)
    for h in oracle.HEADS:
        np.testing.assert_array_equal(merged.contingency(h), whole.contingency(h))
        mi_a, mi_b = mutual_info(merged.contingency(h)), mutual_info(whole.contingency(h))
        np.testing.assert_allclose(mi_a, mi_b, rtol=1e-12)
        assert np.isnan(mi_a[6])  # all-NaN feature: no table


def _phi(z):
    return 0.5 * (1.0 + np.vectorize(math.erf)(np.asarray(z) / math.sqrt(2.0)))


def test_mi_of_gaussian_class_conditional_feature_is_within_bias_plus_3se(oracle):
    """x | class k ~ N(mu_k, 1): the plug-in estimate is near the binned variable's true MI."""
    rng = np.random.default_rng(11)
    n, priors, mu = 20000, np.array([0.5, 0.3, 0.2]), np.array([-1.0, 0.0, 1.5])
    y = rng.choice(3, size=n, p=priors)
    x = (rng.normal(0, 1, n) + mu[y]).astype(np.float32)[:, None]
    bins = 16
    m, _ = block_stats(x, correlation=False)
    b = Binning.from_moments(m, bins)
    hp = HistPartial.of_block(x, {"move": y, "rare": y}, b, oracle.HEADS)
    est = mutual_info(hp.contingency("move"))[0]
    # exact MI of the binned variable; the outer bins reach to +/- infinity
    e = b.edges()[0].copy()
    e[0], e[-1] = -np.inf, np.inf
    pbk = np.stack([(_phi(e[1:] - mu[k]) - _phi(e[:-1] - mu[k])) * priors[k] for k in range(3)],
                   axis=1)
    pb = pbk.sum(axis=1, keepdims=True)
    ratio = np.log(np.where(pbk > 0, pbk / (pb * priors), 1.0))
    true = float((pbk * ratio).sum())
    se = math.sqrt(max(float((pbk * ratio ** 2).sum()) - true ** 2, 0.0) / n)
    bias = mi_bias(bins, 3, n)
    assert true > 0.2
    assert abs(est - true) <= bias + 3 * se, (est, true, bias, se)


def test_mi_of_independent_feature_is_about_the_bias(oracle):
    rng = np.random.default_rng(2)
    n = 50000
    x = rng.normal(0, 1, (n, 1)).astype(np.float32)
    y = rng.integers(0, 4, n)
    m, _ = block_stats(x, correlation=False)
    b = Binning.from_moments(m, 8)
    est = mutual_info(HistPartial.of_block(x, {"move": y, "rare": y}, b, oracle.HEADS)
                      .contingency("move"))[0]
    assert 0 <= est < 4 * mi_bias(8, 4, n)
