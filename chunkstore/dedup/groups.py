"""Exact duplicate groups from row hashes and row bytes: pure functions on in-memory arrays.

A hash only nominates candidates (rows whose hash occurs more than once); rows are grouped by
their canonical bytes (:func:`chunkstore.core.rowhash.canonical`), so two different rows that
share a hash are never merged. The root of a group is its first (lowest) row; ``duplicate_of``
holds -1 for a first occurrence and the root's row for every other member.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from chunkstore.core.assign import mix64

I64 = NDArray[np.int64]
U64 = NDArray[np.uint64]

_LABEL_SALT = np.uint64(0xA0761D6478BD642F)



def with_labels(hashes: U64, labels: Sequence[NDArray[np.integer]]) -> U64:
    """Row hashes that also depend on each head's label (``--by features+labels``)."""
    h = np.asarray(hashes, dtype=np.uint64).copy()
    with np.errstate(over="ignore"):
        for i, lab in enumerate(labels):
            v = np.asarray(lab, dtype=np.int64).view(np.uint64)
            h = mix64(h + mix64(v + _LABEL_SALT * np.uint64(i + 1)))
    return h


def candidates(hashes: U64) -> I64:
    """Sorted rows whose hash occurs at least twice: the only rows that can be duplicates."""
    h = np.asarray(hashes, dtype=np.uint64)
    order = np.argsort(h, kind="stable")
    s = h[order]
    if s.size < 2:
        return np.zeros(0, dtype=np.int64)
    same = s[1:] == s[:-1]
    keep = np.r_[same, False] | np.r_[False, same]
    return np.sort(order[keep]).astype(np.int64)


def exact_groups(rows: I64, data: NDArray[np.uint8], hashes: U64 | None = None
                 ) -> tuple[I64, I64]:
    """Group ``rows`` by their bytes ``data`` (one row of canonical bytes each).

    With ``hashes``, rows are sorted by hash and each compared byte for byte with the first row
    of its hash (one vectorised comparison); only hashes shared by different rows (collisions)
    are grouped by sorting their bytes.

    Returns
    -------
    (members, roots): every row that belongs to a group of two or more identical rows, sorted,
    and the group's first row for each (a root is its own root).
    """
    r = np.asarray(rows, dtype=np.int64)
    d = np.ascontiguousarray(data, dtype=np.uint8).reshape(r.size, -1)
    if r.size < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if hashes is None:
        return _by_bytes(r, d)
    h = np.asarray(hashes, dtype=np.uint64)
    order = np.lexsort((r, h))
    r, h = r[order], h[order]
    start = np.flatnonzero(np.r_[True, h[1:] != h[:-1]])
    size = np.diff(np.r_[start, h.size])
    head = np.repeat(start, size)
    same = np.ones(r.size, dtype=bool)
    other = np.flatnonzero(head != np.arange(r.size))  # compare only these with their head
    same[other] = (d[order[other]] == d[order[head[other]]]).all(axis=1)
    clean = np.repeat(np.logical_and.reduceat(same, start), size)
    keep = clean & (np.repeat(size, size) > 1)
    members, roots = [r[keep]], [r[head[keep]]]
    if not clean.all():  # a collision: these hashes are grouped by their bytes
        m, o = _by_bytes(r[~clean], d[order[~clean]])
        members.append(m)
        roots.append(o)
    mm, rr = np.concatenate(members), np.concatenate(roots)
    by_row = np.argsort(mm, kind="stable")
    return mm[by_row], rr[by_row]


def _by_bytes(r: I64, d: NDArray[np.uint8]) -> tuple[I64, I64]:
    if r.size < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    keys = (d.view(np.dtype((np.void, d.shape[1]))).ravel() if d.shape[1]
            else np.zeros(r.size, dtype=np.uint8))
    _, inverse = np.unique(keys, return_inverse=True)
    inverse = inverse.ravel()
    order = np.lexsort((r, inverse))
    g, rr = inverse[order], r[order]
    start = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    size = np.diff(np.r_[start, g.size])
    root = np.repeat(rr[start], size)
    keep = np.repeat(size > 1, size)
    members, roots = rr[keep], root[keep]
    by_row = np.argsort(members, kind="stable")
    return members[by_row], roots[by_row]


def duplicate_of(n: int, members: I64, roots: I64) -> I64:
    """(n,) int64: -1 for a first occurrence, else the row of the first occurrence."""
    out = np.full(n, -1, dtype=np.int64)
    dup = members != roots
    out[members[dup]] = roots[dup]
    return out


def largest(members: I64, roots: I64, top: int = 5) -> tuple[tuple[int, int], ...]:
    """The ``top`` largest groups as ``(first row, rows)``, largest first (ties: lower row)."""
    if members.size == 0:
        return ()
    u, size = np.unique(roots, return_counts=True)
    order = np.lexsort((u, -size))[:top]
    return tuple((int(u[i]), int(size[i])) for i in order)


@dataclass(frozen=True)
class Conflicts:
    """Groups of identical features whose rows disagree on one head's label.

    ``groups`` such groups, ``rows`` rows in them, ``differing`` rows whose label differs from
    their group's first row, ``examples`` a few groups as ``((row, label), ...)``.
    """

    groups: int
    rows: int
    differing: int
    examples: tuple[tuple[tuple[int, int], ...], ...]

    def to_dict(self) -> dict[str, object]:
        return {"groups": self.groups, "rows": self.rows, "differing": self.differing,
                "examples": [[list(p) for p in e] for e in self.examples]}


def conflicts(members: I64, roots: I64, labels: NDArray[np.integer], show: int = 3,
              per_group: int = 4) -> Conflicts:
    """Conflicting labels of one head, from the members of every group (``labels`` aligned
    with ``members``)."""
    lab = np.asarray(labels, dtype=np.int64)
    if members.size == 0:
        return Conflicts(0, 0, 0, ())
    order = np.lexsort((members, roots))
    m, r, v = members[order], roots[order], lab[order]
    start = np.flatnonzero(np.r_[True, r[1:] != r[:-1]])
    size = np.diff(np.r_[start, r.size])
    root_label = np.repeat(v[start], size)  # the root sorts first in its group
    differs = v != root_label
    bad_group = np.add.reduceat(differs.astype(np.int64), start) > 0
    examples = []
    for g in np.flatnonzero(bad_group)[:show]:
        a, b = start[g], start[g] + size[g]
        examples.append(tuple((int(m[i]), int(v[i])) for i in range(a, min(b, a + per_group))))
    return Conflicts(int(bad_group.sum()), int(size[bad_group].sum()), int(differs.sum()),
                     tuple(examples))
