"""The pure split functions: properties (Hypothesis) and spec validation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chunkstore.core import assign as splits
from chunkstore.core import splitspec
from chunkstore.core.splitspec import SplitSpec

SEEDS = st.integers(0, 2**64 - 1)


@st.composite
def fraction_lists(draw: st.DrawFn, max_parts: int = 5) -> list[float]:
    """Non-negative fractions summing to 1 (some may be exactly 0)."""
    w = draw(st.lists(st.sampled_from([0, 0, 1, 2, 3, 5, 8]), min_size=1, max_size=max_parts))
    if sum(w) == 0:
        w[0] = 1
    return [x / sum(w) for x in w]


@st.composite
def cut_points(draw: st.DrawFn, n: int) -> list[int]:
    return sorted(draw(st.lists(st.integers(0, n), max_size=6)))


def pieces(x: np.ndarray, cuts: list[int]) -> list[np.ndarray]:
    return np.split(x, cuts)


# ------------------------------------------------------------------------------ hashing --

def test_mix64_is_a_bijection_sample_and_uniform_is_in_unit_interval():
    keys = np.arange(100_000, dtype=np.uint64)
    assert np.unique(splits.mix64(keys)).size == keys.size
    u = splits.unit_uniform(keys, seed=7)
    assert u.min() >= 0.0 and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 0.005  # 0.5 +- 1/sqrt(12 * 1e5) * 5


def test_source_keys_are_distinct_for_distinct_item_row_pairs():
    items, rows = np.meshgrid(np.arange(300), np.arange(300), indexing="ij")
    src = np.stack([items.ravel(), rows.ravel()], axis=1)
    assert np.unique(splits.source_keys(src)).size == src.shape[0]


# ------------------------------------------------------------------------------- random --

@given(n=st.integers(0, 3000), fr=fraction_lists(), seed=SEEDS, data=st.data())
@settings(max_examples=60, deadline=None)
def test_random_is_per_sample_so_blocks_do_not_matter(n, fr, seed, data):
    keys = splits.as_keys(np.arange(n) + data.draw(st.integers(0, 2**40)))
    whole = splits.assign_random(keys, fr, seed)
    blocks = [splits.assign_random(k, fr, seed) for k in pieces(keys, data.draw(cut_points(n)))]
    np.testing.assert_array_equal(np.concatenate(blocks), whole)
    assert whole.dtype == np.int8 and ((whole >= 0) & (whole < len(fr))).all()
    for i, f in enumerate(fr):
        if f == 0:
            assert not (whole == i).any()


def test_edges_stay_sorted_when_rounding_overshoots_before_trailing_zeros():
    fr = [0.7, 0.3 + 1e-12, 0.0]
    e = splits.edges(fr)
    assert (np.diff(e) >= 0).all() and e[-1] == 1.0
    codes = splits.codes_of(np.linspace(0, 1, 1000, endpoint=False), fr)
    assert not (codes == 2).any() and (codes == 1).sum() == 300


def test_random_sizes_are_binomial_and_seeds_differ():
    keys = splits.as_keys(np.arange(200_000))
    fr = [0.7, 0.2, 0.1]
    a = splits.assign_random(keys, fr, seed=1)
    counts = np.bincount(a, minlength=3)
    se = np.sqrt(np.array(fr) * (1 - np.array(fr)) * keys.size)
    assert (np.abs(counts - np.array(fr) * keys.size) < 4 * se).all()
    b = splits.assign_random(keys, fr, seed=2)
    assert 0.4 < (a == b).mean() < 0.6  # independent: P(same) = 0.49 + 0.04 + 0.01


# --------------------------------------------------------------------- tables and groups --

@given(keys=st.lists(st.integers(-2**62, 2**62), max_size=300), data=st.data())
@settings(max_examples=60, deadline=None)
def test_pair_counts_merge_is_order_and_partition_independent(keys, data):
    k = np.array(keys, dtype=np.int64)
    sub = np.array(data.draw(st.lists(st.integers(-1, 3), min_size=k.size, max_size=k.size)),
                   dtype=np.int64)
    whole = splits.pair_counts(k, sub)
    cuts = data.draw(cut_points(k.size))
    parts = [splits.pair_counts(a, b) for a, b in zip(pieces(k, cuts), pieces(sub, cuts),
                                                       strict=True)]
    perm = data.draw(st.permutations(range(len(parts))))
    merged = splits.merge_pair_counts(*[parts[i] for i in perm])
    for x, y in zip(whole, merged, strict=True):
        np.testing.assert_array_equal(x, y)
    assert whole[2].sum() == k.size


@given(keys=st.lists(st.integers(-3, 3), max_size=300), max_runs=st.sampled_from([0.0, 0.125, 1.0]))
@settings(max_examples=60, deadline=None)
def test_kept_runs_rebuild_the_block_codes(keys, max_runs):
    k = np.array(keys, dtype=np.int64)
    table, key_runs = splits.table_and_runs(k, max_runs=max_runs)
    values, _ = splits.key_totals(table)
    codes = (np.arange(values.size) % 3).astype(np.int8)
    if key_runs is None:  # too many runs to keep: the caller reads the keys again
        assert splits.runs(k)[0].size > max(1.0, max_runs * k.size)
    else:
        np.testing.assert_array_equal(splits.expand_runs(values, codes, key_runs),
                                      splits.lookup(values, codes, k))


@given(sizes=st.lists(st.integers(1, 400), min_size=1, max_size=200), fr=fraction_lists(),
       seed=SEEDS)
@settings(max_examples=80, deadline=None)
def test_group_cut_meets_fractions_within_the_largest_group(sizes, fr, seed):
    groups = np.arange(len(sizes), dtype=np.int64) * 7919 - 100
    s = np.array(sizes, dtype=np.int64)
    codes = splits.assign_groups(groups, s, fr, seed)
    rows = np.bincount(codes, weights=s, minlength=len(fr))
    assert (np.abs(rows - np.array(fr) * s.sum()) <= s.max()).all()
    for i, f in enumerate(fr):
        if f == 0:
            assert rows[i] == 0


@given(n_groups=st.integers(1, 150), n_classes=st.integers(1, 6), fr=fraction_lists(4),
       seed=SEEDS, data=st.data())
@settings(max_examples=60, deadline=None)
def test_stratified_groups_assign_every_group_once_and_meet_row_targets(
        n_groups, n_classes, fr, seed, data):
    sizes = np.array(data.draw(st.lists(st.integers(1, 60), min_size=n_groups,
                                        max_size=n_groups)))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    g = np.repeat(np.arange(n_groups) * 3 + 11, sizes)
    labels = rng.integers(0, n_classes, size=g.size)
    table = splits.pair_counts(g, labels)
    groups, codes = splits.assign_stratified_groups(table, n_classes, fr, seed)
    np.testing.assert_array_equal(groups, np.unique(g))
    rows = np.bincount(codes, weights=sizes, minlength=len(fr))
    # Greedy, largest first: each part ends within the largest group of its target.
    assert (np.abs(rows - np.array(fr) * g.size) <= sizes.max()).all()
    for i, f in enumerate(fr):
        if f == 0:
            assert rows[i] == 0


def test_stratified_groups_balance_classes_better_than_plain_groups():
    rng = np.random.default_rng(0)
    sizes = rng.integers(5, 40, size=600)
    g = np.repeat(np.arange(sizes.size), sizes)
    # each group leans towards one class, so a plain group split is visibly unbalanced
    lean = rng.integers(0, 4, size=sizes.size)
    labels = np.where(rng.random(g.size) < 0.6, lean[g], rng.integers(0, 4, size=g.size))
    fr = [0.8, 0.1, 0.1]

    def worst(codes_per_group: np.ndarray) -> float:
        code = codes_per_group[g]
        share = np.array([np.bincount(labels[code == s], minlength=4) / (code == s).sum()
                          for s in range(3)])
        return float(np.abs(share - np.bincount(labels) / g.size).max())

    _, sg = splits.assign_stratified_groups(splits.pair_counts(g, labels), 4, fr, seed=0)
    plain = splits.assign_groups(np.arange(sizes.size), sizes, fr, seed=0)
    assert worst(sg) < worst(plain) / 3


# ---------------------------------------------------------------------------- stratified --

@given(n=st.integers(1, 5000), n_classes=st.integers(1, 8), fr=fraction_lists(4), seed=SEEDS,
       data=st.data())
@settings(max_examples=60, deadline=None)
def test_stratified_meets_each_class_fraction_and_blocks_do_not_matter(
        n, n_classes, fr, seed, data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    labels = rng.integers(0, n_classes, size=n)
    keys = splits.as_keys(np.arange(n))
    cuts_at = data.draw(cut_points(n))
    hist = sum(splits.class_hash_hist(lab, k, seed, n_classes)
               for lab, k in zip(pieces(labels, cuts_at), pieces(keys, cuts_at), strict=True))
    cuts = splits.class_cuts(hist, fr)
    codes = splits.assign_stratified(labels, keys, seed, cuts)
    blocks = [splits.assign_stratified(lab, k, seed, cuts)
              for lab, k in zip(pieces(labels, cuts_at), pieces(keys, cuts_at), strict=True)]
    np.testing.assert_array_equal(np.concatenate(blocks), codes)
    for c in range(n_classes):
        nc = int((labels == c).sum())
        got = np.bincount(codes[labels == c], minlength=len(fr))
        # exact up to the rows inside the one histogram bin that holds each cut
        tol = 2 + 5 * np.sqrt(nc / splits.HIST_BINS)
        assert (np.abs(got - np.array(fr) * nc) <= tol).all(), (c, got, nc)
        for i, f in enumerate(fr):
            if f == 0:
                assert got[i] == 0


def test_stratified_rejects_labels_outside_the_classes():
    with pytest.raises(ValueError, match=r"label 5 is outside \[0, 3\)"):
        splits.class_hash_hist(np.array([0, 5]), splits.as_keys(np.arange(2)), 0, 3)


# ------------------------------------------------------------------------------- ordered --

@given(n=st.integers(1, 3000), fr=fraction_lists())
@settings(max_examples=60, deadline=None)
def test_ordered_is_contiguous_in_order_and_meets_fractions_within_a_row(n, fr):
    codes = splits.assign_ordered_rank(np.arange(n), n, fr)
    assert (np.diff(codes) >= 0).all()  # parts in order: the last fraction is last
    rows = np.bincount(codes, minlength=len(fr))
    assert (np.abs(rows - np.array(fr) * n) <= 1).all()


def test_lookup_finds_codes_and_refuses_unknown_keys():
    keys, codes = np.array([-5, 3, 9]), np.array([2, 0, 1], dtype=np.int8)
    np.testing.assert_array_equal(splits.lookup(keys, codes, np.array([9, -5, 9])), [1, 2, 1])
    with pytest.raises(ValueError, match="key 4 is not in the split's table"):
        splits.lookup(keys, codes, np.array([3, 4]))


# ------------------------------------------------------------------------ specs, parsing --

def test_parse_fractions():
    assert splitspec.parse_fractions("train=0.8, val=0.1,test=0.1") == (
        ("train", 0.8), ("val", 0.1), ("test", 0.1))
    with pytest.raises(ValueError, match="NAME=FRACTION"):
        splitspec.parse_fractions("train:0.8")
    with pytest.raises(ValueError, match="not a number"):
        splitspec.parse_fractions("train=most")


@pytest.mark.parametrize("kwargs, key, message", [
    ({"fractions": (("a", 0.5), ("b", 0.6))}, "fractions", "must sum to 1"),
    ({"fractions": (("a", 1.5), ("b", -0.5))}, "fractions", "must be >= 0"),
    ({"fractions": (("a", 0.5), ("a", 0.5))}, "fractions", "must be unique"),
    ({"fractions": (("all", 1.0),)}, "fractions", "not 'all'"),
    ({"fractions": (("my part", 1.0),)}, "fractions", "identifier-like"),
    ({"method": "kfold", "k": 1, "fractions": (("fold0", 1.0),)}, "k", "2 <= k"),
    ({"k": 3}, "k", "only for method kfold"),
    ({"method": "shuffle"}, "method", "expected one of"),
    ({"method": "stratified"}, "by", "needs 'by'"),
    ({"method": "group", "by": "move"}, "by", "use 'stratified-group'"),
    ({"method": "random", "by": "move"}, "by", "use 'stratified'"),
    ({"group": True}, "group", "for kfold"),
    ({"method": "ordered", "by": "move"}, "by", "meta/<name>"),
    ({"name": "my-split"}, "name", "identifier-like"),
])
def test_spec_problems(kwargs, key, message):
    bad = SplitSpec(**kwargs).problem()
    assert bad is not None and bad[0] == key and message in bad[1]


def test_good_specs_have_no_problem():
    assert SplitSpec().problem() is None
    assert SplitSpec(method="kfold", k=4, fractions=splitspec.kfold_fractions(4), by="x",
                     group=True).problem() is None
    assert SplitSpec(method="ordered", by="meta/time",
                     fractions=(("train", 0.9), ("test", 0.1))).problem() is None


# ------------------------------------------------------------------------ duplicates --

def test_merge_keys_connects_chains_and_takes_the_smallest_key() -> None:
    from chunkstore.core.assign import merge_keys

    keys, comp = merge_keys(np.array([5, 9, 30, 7]), np.array([9, 2, 31, 30]))
    assert keys.tolist() == [2, 5, 7, 9, 30, 31]
    assert comp.tolist() == [2, 2, 7, 2, 7, 7]
    rng = np.random.default_rng(0)  # a long chain in random order still collapses to one id
    perm = rng.permutation(200)
    keys, comp = merge_keys(perm[:-1], perm[1:])
    assert keys.size == 200 and set(comp.tolist()) == {0}


def test_remap_keys_leaves_unlisted_values() -> None:
    from chunkstore.core.assign import remap_keys

    out = remap_keys(np.array([1, 5, 9, 5, 3]), np.array([5, 9]), np.array([2, 2]))
    assert out.tolist() == [1, 2, 2, 2, 3]


def test_leakage_counts_rows_with_a_copy_in_the_first_part() -> None:
    from chunkstore.core.assign import leakage

    codes = np.array([0, 1, 2, 1, 0, 2, 2], dtype=np.int8)
    # groups {0, 1, 2} (root 0, in part 0), {3, 5} (root 3, no part-0 member), {4, 6}
    rows, roots = np.array([1, 2, 5, 6]), np.array([0, 0, 3, 4])
    assert leakage(codes, rows, roots, 3).tolist() == [0, 1, 2]
