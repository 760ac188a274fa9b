"""Partial moments and co-moments against a float64 numpy reference, on adversarial data.

Tolerances (issue 3): counts, min, max, NaN/inf counts and class counts exact; mean within
1e-12 x max(|mean|, std); variance rtol 1e-10 (1e-8 for offset columns); correlation atol 1e-9
with |rho| <= 1. Merges must not depend on block order or tree shape.
"""

from __future__ import annotations

from functools import reduce

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chunkstore.core.moments import CoMoments, Moments, Partial, block_stats, merge_partials
from chunkstore.store.stats_io import partial_arrays

OFFSET_COLS = (0, 1)  # columns at 1e4 and 1e6 with sigma 1 (the oracle's adversarial data)
N_BLOCKS = 10  # len(oracle.SIZES): zero- and one-row blocks, 3000 rows
def assert_matches(m: Moments, ref: dict[str, np.ndarray], offset_cols=OFFSET_COLS) -> None:
    np.testing.assert_array_equal(m.count, ref["count"])
    np.testing.assert_array_equal(m.nan_count, ref["nan"])
    np.testing.assert_array_equal(m.inf_count, ref["inf"])
    seen = ref["count"] > 0
    np.testing.assert_array_equal(m.min[seen], ref["min"][seen])
    np.testing.assert_array_equal(m.max[seen], ref["max"][seen])
    std = np.sqrt(ref["var"][seen])
    tol = 1e-12 * np.maximum(np.abs(ref["mean"][seen]), std)
    assert np.all(np.abs(m.mean[seen] - ref["mean"][seen]) <= tol)
    var = m.var
    rtol = np.where(np.isin(np.arange(len(var)), offset_cols), 1e-8, 1e-10)[seen]
    assert np.all(np.abs(var[seen] - ref["var"][seen]) <= rtol * ref["var"][seen] + 1e-300)
    np.testing.assert_array_equal(np.isnan(var), ~seen)
    spread = seen & (ref["var"] > 0)
    np.testing.assert_allclose(m.skew[spread], ref["skew"][spread], rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(m.kurtosis[spread], ref["kurt"][spread], rtol=1e-6, atol=1e-8)


def assert_corr(r: np.ndarray, ref: np.ndarray) -> None:
    np.testing.assert_array_equal(np.isnan(r), np.isnan(ref))
    ok = ~np.isnan(ref)
    assert np.all(np.abs(r[ok] - ref[ok]) <= 1e-9)
    assert np.all(np.abs(r[ok]) <= 1.0)


@pytest.fixture(scope="module")
def data(oracle):
    x = oracle.adversarial()
    return x, oracle.reference(x), oracle.reference_corr(x)


def test_one_block_matches_reference(data):
    x, ref, rc = data
    m, c = block_stats(x, correlation=True)
    assert_matches(m, ref)
    assert c is not None and c.pairwise
    assert_corr(c.correlation(), rc)
    # near-collinear columns stay accurate and below 1
    assert 0.999 < c.correlation()[8, 9] < 1.0


def test_merged_blocks_match_reference(oracle, data):
    x, ref, rc = data
    parts = [block_stats(x[s], correlation=True) for s in oracle.blocks(x)]
    m = reduce(Moments.merge, (p[0] for p in parts), Moments.empty(x.shape[1]))
    c = reduce(CoMoments.merge, (p[1] for p in parts), CoMoments.empty(x.shape[1]))
    assert_matches(m, ref)
    assert_corr(c.correlation(), rc)
    np.testing.assert_array_equal(c.pair_counts()[5, 6], 0)
    np.testing.assert_array_equal(c.pair_counts()[0, 5], ref["count"][5])


def test_dense_blocks_only_keep_per_feature_form():
    rng = np.random.default_rng(3)
    x = rng.normal(100, 3, (700, 5)).astype(np.float32)
    parts = [block_stats(x[i:i + 100], correlation=True)[1] for i in range(0, 700, 100)]
    c = reduce(CoMoments.merge, parts)
    assert not c.pairwise and c.mean.shape == (5, 1)
    assert_corr(c.correlation(), np.corrcoef(x.astype(np.float64), rowvar=False))


def test_partial_round_trips_through_record_arrays(oracle, data):
    x, ref, rc = data
    n = len(x)
    p = Partial.of_block(x, oracle.labels_for(n), oracle.masks_for(n), oracle.HEADS,
                         correlation=True)
    q = Partial.from_arrays(p.to_arrays())
    for name in ("count", "mean", "m2", "m3", "m4", "min", "max"):
        np.testing.assert_array_equal(getattr(q.moments, name), getattr(p.moments, name))
    np.testing.assert_array_equal(q.comoments.c, p.comoments.c)
    np.testing.assert_array_equal(q.comoments.n, p.comoments.n)
    # the record keeps one triangle of the symmetric matrices
    assert p.to_arrays()["comoments/c"].size == x.shape[1] * (x.shape[1] + 1) // 2


def test_class_and_mask_counts_merge_exactly(oracle, data):
    x, _, _ = data
    n = len(x)
    lab, msk, heads = oracle.labels_for(n), oracle.masks_for(n), oracle.HEADS
    parts = [Partial.of_block(x[s], {h: lab[h][s] for h in heads}, {h: msk[h][s] for h in heads},
                              heads, correlation=False) for s in oracle.blocks(x)]
    total = merge_partials(parts, Partial.empty(x.shape[1], heads, False))
    assert total.rows == n and total.comoments is None
    for h, k in heads.items():
        np.testing.assert_array_equal(total.class_counts[h], np.bincount(lab[h], minlength=k))
        np.testing.assert_array_equal(total.mask_counts[h], msk[h].sum(axis=0))
    assert total.class_counts["rare"].tolist() == [n // 2, n - n // 2 - 1, 0, 1]


def test_stored_form_of_partials(oracle, data):
    x, ref, _ = data
    n = len(x)
    p = Partial.of_block(x, oracle.labels_for(n), oracle.masks_for(n), oracle.HEADS,
                         correlation=True)
    a = partial_arrays(p)
    assert np.isnan(a["mean"][6]) and np.isnan(a["min"][6]) and a["count"][6] == 0
    np.testing.assert_array_equal(a["std"][2:5], 0.0)
    assert a["max"][4] == np.float32(1e30) and a["corr_count"].shape == (12, 12)
    assert np.isnan(a["corr"][2, 3]) and a["corr"][0, 0] == 1.0


def test_naive_float32_formula_fails_offset_data_negative_control(data):
    """E[x^2] - E[x]^2 in float32 is far off on the offset columns: the data is adversarial."""
    x, ref, _ = data
    m, _ = block_stats(x, correlation=False)
    for j in OFFSET_COLS:
        c = x[:, j]
        naive = np.mean(c * c, dtype=np.float32) - np.mean(c, dtype=np.float32) ** 2
        assert not np.isclose(naive, ref["var"][j], rtol=1e-8, atol=0)
        assert abs(naive - ref["var"][j]) > 0.1 * ref["var"][j]
        assert np.isclose(m.var[j], ref["var"][j], rtol=1e-8, atol=0)


def _tree(parts: list, cuts: list[int], merge):
    """Merge ``parts`` along a tree whose shape is drawn from ``cuts``."""
    if len(parts) == 1:
        return parts[0]
    k = 1 + cuts[len(parts) % len(cuts)] % (len(parts) - 1)
    return merge(_tree(parts[:k], cuts[1:] or [0], merge), _tree(parts[k:], cuts[1:] or [0],
                                                                 merge))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(perm=st.permutations(list(range(N_BLOCKS))),
       cuts=st.lists(st.integers(0, 100), min_size=1, max_size=8))
def test_merge_order_and_tree_shape_do_not_matter(oracle, data, perm, cuts):
    x, ref, rc = data
    parts = [block_stats(x[s], correlation=True) for s in oracle.blocks(x)]
    shuffled = [parts[i] for i in perm]
    m = _tree([p[0] for p in shuffled], cuts, Moments.merge)
    c = _tree([p[1] for p in shuffled], cuts, CoMoments.merge)
    assert_matches(m, ref)
    assert_corr(c.correlation(), rc)


def test_empty_block_is_the_identity(oracle):
    x = oracle.adversarial(300)
    m, c = block_stats(x, correlation=True)
    e, ec = block_stats(x[:0], correlation=True)
    for got in (m.merge(e), e.merge(m)):
        np.testing.assert_array_equal(got.mean, m.mean)
        np.testing.assert_array_equal(got.m2, m.m2)
    np.testing.assert_array_equal(c.merge(ec).correlation(), c.correlation())
