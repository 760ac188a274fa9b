"""The pure duplicate-grouping functions (chunkstore.dedup.groups)."""

from __future__ import annotations

import numpy as np

from chunkstore.dedup.groups import candidates, conflicts, duplicate_of, exact_groups, largest


def test_candidates_are_rows_whose_hash_repeats() -> None:
    h = np.array([7, 3, 7, 1, 3, 9], dtype=np.uint64)
    assert candidates(h).tolist() == [0, 1, 2, 4]
    assert candidates(np.array([1], dtype=np.uint64)).size == 0


def test_exact_groups_split_a_shared_hash_by_bytes() -> None:
    data = np.array([[1, 2], [3, 4], [1, 2], [3, 4], [5, 6]], dtype=np.uint8)
    rows = np.array([10, 11, 12, 13, 14])
    members, roots = exact_groups(rows, data)
    assert members.tolist() == [10, 11, 12, 13] and roots.tolist() == [10, 11, 10, 11]
    assert duplicate_of(15, members, roots)[10:].tolist() == [-1, -1, 10, 11, -1]
    assert largest(members, roots) == ((10, 2), (11, 2))


def test_conflicts_per_head() -> None:
    members, roots = np.array([0, 1, 2, 3, 4]), np.array([0, 0, 2, 2, 2])
    c = conflicts(members, roots, np.array([1, 1, 4, 5, 4]))
    assert (c.groups, c.rows, c.differing) == (1, 3, 1)
    assert c.examples == (((2, 4), (3, 5), (4, 4)),)


def test_exact_groups_with_hashes_matches_bytes_only() -> None:
    rng = np.random.default_rng(1)
    data = rng.integers(0, 3, size=(300, 2)).astype(np.uint8)  # many true duplicates
    rows = rng.permutation(1000)[:300]
    want = exact_groups(rows, data)
    for hashes in (np.zeros(300, np.uint64),  # every row collides
                   (data[:, 0] * 3 + data[:, 1]).astype(np.uint64),  # a perfect hash
                   (data[:, 0]).astype(np.uint64)):  # partial collisions
        got = exact_groups(rows, data, hashes)
        assert got[0].tolist() == want[0].tolist() and got[1].tolist() == want[1].tolist()
