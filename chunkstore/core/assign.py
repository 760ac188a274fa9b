"""Split assignment: pure functions of (seed, key, small tables), applied one block at a time.

A split array ``splits/<name>`` holds one int8 code per sample: the index of its part in
``names`` (e.g. 0 = train, 1 = val, 2 = test). Every function here is pure and works on one
block of rows, so a Dask graph can apply it chunk by chunk (see :mod:`chunkstore.splits.graphs`).

How each method decides a sample's code:

- ``random``: ``u = hash(seed, sample key)`` in [0, 1) against the cumulative fractions. The
  sample key is the row index, or ``(item, row)`` from ``meta/source`` when the store has it, so
  the code depends on nothing else: not N, chunking, workers, or the order of ingestion, and
  appending rows never moves an existing sample. Fractions hold in expectation (binomial).
- ``group``: groups (``meta/group``) are ordered by ``hash(seed, group)`` and laid end to end by
  row count; a group goes to the part where the middle of its row range falls. No group is in
  two parts and each part's rows are within the largest group's size of its target.
- ``stratified``: per class of head ``by``, rows are ordered by ``hash(seed, sample key)`` and
  cut at the fractions of that class's count (cut points from a per-class histogram of the hash
  with linear interpolation inside one bin), so every part has the class proportions of the
  whole to within a few rows per class.
- ``stratified-group``: groups are assigned greedily, largest first (seeded order among groups of
  similar size), each to the part whose class counts and row count move closest to their
  targets (least squared deviation, class terms weighted by 1/class count).
- ``kfold``: k equal parts ``fold0..fold{k-1}``, by ``random``, ``group`` (``group: true``),
  ``stratified`` (``by``) or ``stratified-group`` (both).
- ``ordered``: parts in order along the rows (or along ``meta/source`` provenance, or along a
  ``meta/<name>`` order key given as ``by``, equal keys kept together): the last fraction is last.

Methods that meet fractions exactly (all but ``random``) depend on the table of all group sizes
or class counts, so appending rows can move the few groups or rows that sit at a boundary.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from chunkstore.errors import SplitError

I64 = NDArray[np.int64]
U64 = NDArray[np.uint64]
F64 = NDArray[np.float64]
Codes = NDArray[np.int8]
# (keys, sub-keys, counts): sorted unique (key, sub) pairs with their row counts.
PairCounts = tuple[I64, I64, I64]

HIST_BINS = 1024  # hash histogram bins per class for stratified cut points

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_SOURCE_SALT = np.uint64(0x5EED50CE5EED50CE)


# ---------------------------------------------------------------------------------- hashing --

def mix64(x: U64) -> U64:
    """The splitmix64 finalizer: a bijection on uint64 whose outputs look uniform."""
    with np.errstate(over="ignore"):
        x = x ^ (x >> np.uint64(30))
        x = x * np.uint64(0xBF58476D1CE4E5B9)
        x = x ^ (x >> np.uint64(27))
        x = x * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def as_keys(values: NDArray[Any]) -> U64:
    """Integer ids (row indices, group ids, any int dtype) as uint64 hash keys, bit-exact."""
    return np.ascontiguousarray(values, dtype=np.int64).view(np.uint64)


def source_keys(source: NDArray[Any]) -> U64:
    """Sample keys of ``meta/source`` rows ``(item, row within item)``."""
    s = np.asarray(source, dtype=np.int64).reshape(-1, 2)
    with np.errstate(over="ignore"):
        return mix64(as_keys(s[:, 0]) + _SOURCE_SALT) + as_keys(s[:, 1])


def unit_uniform(keys: U64, seed: int) -> F64:
    """``u = hash(seed, key)`` in [0, 1): the seed's splitmix64 stream at position ``key``."""
    state = mix64(np.array([seed], dtype=np.uint64))
    with np.errstate(over="ignore"):
        h = mix64(state + keys * _GAMMA)
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def edges(fractions: Sequence[float]) -> F64:
    """Cumulative fractions with the last forced to exactly 1, so every u < 1 gets a part
    (and none above 1 from rounding, so they stay sorted when trailing fractions are 0)."""
    e = np.minimum(np.cumsum(np.asarray(fractions, dtype=np.float64)), 1.0)
    e[-1] = 1.0
    return e


def codes_of(position: F64, fractions: Sequence[float]) -> Codes:
    """Part of each position in [0, 1): ``[0, e0) -> 0, [e0, e1) -> 1, ...``."""
    return np.searchsorted(edges(fractions), position, side="right").astype(np.int8)


# ------------------------------------------------------------------- per-row (no table) --

def assign_random(keys: U64, fractions: Sequence[float], seed: int) -> Codes:
    """``random`` (and unstratified, ungrouped kfold): a pure function of (seed, key)."""
    return codes_of(unit_uniform(keys, seed), fractions)


def assign_ordered_rank(rank: I64, n: int, fractions: Sequence[float]) -> Codes:
    """``ordered``: sample of 0-based rank ``rank`` among ``n`` goes where its middle falls."""
    return codes_of((np.asarray(rank, dtype=np.float64) + 0.5) / n, fractions)


# ------------------------------------------------------------------------- count tables --

def runs(keys: NDArray[Any]) -> tuple[I64, I64]:
    """Run-length encoding of a block: ``(values, lengths)`` of consecutive equal keys."""
    k = np.asarray(keys, dtype=np.int64).ravel()
    if k.size == 0:
        return k, k.copy()
    start = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
    return k[start], np.diff(np.r_[start, k.size])


def pair_counts(keys: NDArray[Any], subs: NDArray[Any] | None = None) -> PairCounts:
    """Row count of each distinct ``(key, sub)`` pair in one block (sub = 0 when None).

    Keys usually come in runs (a group's rows are contiguous), so rows are counted per run with
    one ``bincount`` (no sort of the block) and only the short run table is sorted.
    """
    k = np.asarray(keys, dtype=np.int64).ravel()
    values, lengths = runs(k)
    if subs is None:
        return merge_pair_counts((values, np.zeros_like(values), lengths))
    s = np.asarray(subs, dtype=np.int64).ravel()
    m = int(s.max()) + 1 if s.size else 1
    if s.size and s.min() >= 0 and values.size * m <= 4 * k.size:
        run_id = np.repeat(np.arange(values.size), lengths)
        table = np.bincount(run_id * m + s, minlength=values.size * m).reshape(values.size, m)
        r, c = np.nonzero(table)
        return merge_pair_counts((values[r], c.astype(np.int64), table[r, c]))
    return merge_pair_counts((k, s, np.ones(k.shape, dtype=np.int64)))


def merge_pair_counts(*parts: PairCounts) -> PairCounts:
    """Sum pair counts of several blocks: associative and commutative, result sorted."""
    k = np.concatenate([p[0] for p in parts])
    s = np.concatenate([p[1] for p in parts])
    c = np.concatenate([p[2] for p in parts])
    order = np.lexsort((s, k))
    k, s, c = k[order], s[order], c[order]
    if k.size == 0:
        return k, s, c
    start = np.flatnonzero(np.r_[True, (k[1:] != k[:-1]) | (s[1:] != s[:-1])])
    return k[start], s[start], np.add.reduceat(c, start)


def table_and_runs(keys: NDArray[Any], subs: NDArray[Any] | None = None, max_runs: float = 0.125
                   ) -> tuple[PairCounts, tuple[I64, I64] | None]:
    """A block's pair counts, plus its key runs when they are few (``<= max_runs`` per row).

    The runs let the second pass assign the block without reading its keys again.
    """
    key_runs = runs(keys)
    keep = key_runs if key_runs[0].size <= max(1.0, max_runs * np.size(keys)) else None
    return pair_counts(keys, subs), keep


def expand_runs(table_keys: I64, table_codes: Codes, key_runs: tuple[I64, I64]) -> Codes:
    """Codes of a block from its key runs: a lookup per run, repeated over the run."""
    values, lengths = key_runs
    return np.repeat(lookup(table_keys, table_codes, values), lengths)


def key_totals(table: PairCounts) -> tuple[I64, I64]:
    """``(distinct keys, rows per key)`` of a pair table (summing over sub-keys)."""
    k, _, c = table
    if k.size == 0:
        return k, c
    start = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
    return k[start], np.add.reduceat(c, start)


def lookup(table_keys: I64, table_codes: Codes, keys: NDArray[Any]) -> Codes:
    """Codes of ``keys`` from a sorted key table; every key must be in the table."""
    k = np.asarray(keys, dtype=np.int64)
    i = np.clip(np.searchsorted(table_keys, k), 0, max(table_keys.size - 1, 0))
    if k.size and (table_keys.size == 0 or np.any(table_keys[i] != k)):
        missing = k[table_keys[i] != k][0] if table_keys.size else k[0]
        raise SplitError(f"key {missing} is not in the split's table; the store changed "
                         "while the split was computed")
    return table_codes[i]


# ---------------------------------------------------------------------- grouped methods --

def assign_by_cumsum(sizes: I64, order: I64, fractions: Sequence[float]) -> Codes:
    """Lay units end to end in ``order`` by size; each gets the part where its middle falls.

    Each part's total is within the size of the unit straddling each of its edges, so within
    the largest unit of its target.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    total = int(sizes.sum())
    codes = np.zeros(sizes.size, dtype=np.int8)
    if total == 0:
        return codes
    s = sizes[order]
    mid = (np.cumsum(s) - s / 2.0) / total
    codes[order] = codes_of(mid, fractions)
    return codes


def assign_groups(groups: I64, sizes: I64, fractions: Sequence[float], seed: int) -> Codes:
    """``group``: groups in ``hash(seed, group)`` order, cut by rows at the fractions."""
    order = np.argsort(unit_uniform(as_keys(groups), seed), kind="stable")
    return assign_by_cumsum(sizes, order, fractions)


def assign_stratified_groups(table: PairCounts, n_classes: int, fractions: Sequence[float],
                             seed: int) -> tuple[I64, Codes]:
    """``stratified-group``: greedy assignment of groups with class counts.

    Parameters
    ----------
    table : ``(group, class, rows)`` pair counts of the whole store.
    n_classes : classes of the head.
    fractions, seed : target fractions per part; the seed orders groups of similar size.

    Returns
    -------
    (groups, codes): sorted distinct groups and the part of each.
    """
    g, cls, cnt = table
    groups, sizes = key_totals(table)
    ptr = np.r_[0, np.cumsum(np.bincount(np.searchsorted(groups, g), minlength=groups.size))]
    f = np.asarray(fractions, dtype=np.float64)
    totals = np.bincount(cls, weights=cnt, minlength=n_classes).astype(np.float64)
    n = float(totals.sum())
    weight = 1.0 / np.maximum(totals, 1.0)
    dev_c = -f[:, None] * totals[None, :]  # current minus target class counts, per part
    dev_r = -f * n  # current minus target rows, per part
    closed = np.where(f > 0, 0.0, np.inf)  # a part with fraction 0 never gets a group
    # Largest first (log2 size buckets), seeded order within a bucket: good balance, and the
    # seed still decides which of many similar groups go where.
    bucket = -np.floor(np.log2(np.maximum(sizes, 1)))
    order = np.lexsort((unit_uniform(as_keys(groups), seed), bucket))
    codes = np.zeros(groups.size, dtype=np.int8)
    v = cnt.astype(np.float64)
    vw = v * weight[cls]
    row_w = sizes / n
    for i in order:
        a, b = ptr[i], ptr[i + 1]
        c = cls[a:b]
        # Increase of sum_c w_c (dev_c + v_c)^2 + (dev_r + m)^2 / n if the group joins a part,
        # less the terms that are equal for every part (v_c^2 w_c, m^2 / n), halved.
        s = int(np.argmin(dev_c[:, c] @ vw[a:b] + dev_r * row_w[i] + closed))
        dev_c[s, c] += v[a:b]
        dev_r[s] += sizes[i]
        codes[i] = s
    return groups, codes


# ------------------------------------------------------------------- stratified by class --

def class_hash_hist(labels: NDArray[Any], keys: U64, seed: int, n_classes: int,
                    bins: int = HIST_BINS) -> I64:
    """``(n_classes, bins)`` counts of ``hash(seed, key)`` per class, for one block."""
    lab = np.asarray(labels, dtype=np.int64)
    check_labels(lab, n_classes)
    b = np.minimum((unit_uniform(keys, seed) * bins).astype(np.int64), bins - 1)
    return np.bincount(lab * bins + b, minlength=n_classes * bins).reshape(n_classes, bins)


def class_cuts(hist: I64, fractions: Sequence[float]) -> F64:
    """Per-class cut points in hash space: ``(n_classes, parts - 1)``.

    The cut for edge ``e`` of class ``c`` is where the class's empirical hash distribution
    reaches ``e * count_c``: the bin from the histogram, the place inside it by interpolation.
    """
    e = edges(fractions)[:-1]
    k, bins = hist.shape
    cuts = np.empty((k, e.size))
    cum = np.concatenate([np.zeros((k, 1), dtype=np.int64), np.cumsum(hist, axis=1)], axis=1)
    for c in range(k):
        target = e * cum[c, -1]
        b = np.clip(np.searchsorted(cum[c, 1:], target, side="left"), 0, bins - 1)
        inside = np.divide(target - cum[c, b], hist[c, b], out=np.zeros(e.size),
                           where=hist[c, b] > 0)
        cuts[c] = np.where(target <= 0, 0.0, (b + np.clip(inside, 0.0, 1.0)) / bins)
    return cuts


def assign_stratified(labels: NDArray[Any], keys: U64, seed: int, cuts: F64) -> Codes:
    """``stratified``: the part of each row from its class's cut points."""
    lab = np.asarray(labels, dtype=np.int64)
    check_labels(lab, cuts.shape[0])
    u = unit_uniform(keys, seed)
    return (u[:, None] >= cuts[lab]).sum(axis=1).astype(np.int8)


def check_labels(labels: I64, n_classes: int) -> None:
    bad = (labels < 0) | (labels >= n_classes)
    if bad.any():
        raise SplitError(f"label {labels[bad][0]} is outside [0, {n_classes}); the store has "
                         "unwritten or invalid rows")


# ------------------------------------------------------------------------ duplicates --

def merge_keys(a: NDArray[Any], b: NDArray[Any]) -> tuple[I64, I64]:
    """Connected components of the graph with edges ``(a[i], b[i])`` between integer keys.

    Returns ``(keys, component)``: the sorted keys that appear in an edge and, for each, the
    smallest key of its component (min-label propagation with pointer jumping).
    """
    a, b = np.asarray(a, dtype=np.int64).ravel(), np.asarray(b, dtype=np.int64).ravel()
    keys, inverse = np.unique(np.r_[a, b], return_inverse=True)
    ea, eb = inverse[:a.size], inverse[a.size:]
    label = np.arange(keys.size)
    while True:
        low = np.minimum(label[ea], label[eb])
        new = label.copy()
        np.minimum.at(new, ea, low)
        np.minimum.at(new, eb, low)
        new = new[new]
        if np.array_equal(new, label):
            return keys, keys[label]
        label = new


def remap_keys(values: NDArray[Any], keys: I64, to: I64) -> I64:
    """``values`` with each one found in the sorted ``keys`` replaced by its ``to``."""
    v = np.asarray(values, dtype=np.int64)
    if keys.size == 0:
        return v
    i = np.clip(np.searchsorted(keys, v), 0, keys.size - 1)
    return np.where(keys[i] == v, to[i], v)


def leakage(codes: NDArray[Any], rows: I64, roots: I64, n_parts: int) -> I64:
    """Rows of each part that have an exact duplicate in part 0 (the count for part 0 is 0).

    ``rows`` are the rows that repeat an earlier row, ``roots`` their first occurrences.
    """
    c = np.asarray(codes)
    first = np.unique(roots)
    members, of = np.r_[rows, first], np.r_[roots, first]
    _, group = np.unique(of, return_inverse=True)
    mc = c[members].astype(np.int64)
    in_first = np.bincount(group, weights=mc == 0, minlength=first.size) > 0
    leaked = np.bincount(mc[in_first[group]], minlength=n_parts)[:n_parts].astype(np.int64)
    leaked[0] = 0
    return leaked
