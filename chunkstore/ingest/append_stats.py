"""Statistics after an append: stored scopes merged with the new rows' partials (Chan).

A stored scope (``stats/all``, ``stats/<split>``) holds count, NaN/inf counts, min, max, mean,
std, skew, kurtosis, correlation and class/mask counts: enough to rebuild its mergeable
:class:`~chunkstore.core.moments.Partial` (M2 = std^2 n, M3 and M4 from skew and kurtosis,
co-moments from the correlation when every row was finite). Merging it with the new rows'
partial gives the scope over all rows to within rounding of a full recompute. Histograms,
quantiles and mutual information need a second pass with fixed edges: they are dropped and the
scope's attrs say so (``chunkstore stats STORE`` recomputes them). A scope whose partial cannot
be rebuilt (pairwise correlation over rows with NaNs) is kept and marked ``stale``.

Every scope's partial before the append is kept in the append's journal until it commits
(:func:`save_old_partials`), so a rerun after the scopes were rewritten never merges the new
rows twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import zarr
from numpy.typing import NDArray

from chunkstore.core.moments import CoMoments, Moments, Partial
from chunkstore.store import journal, layout
from chunkstore.store.stats_io import (
    STATS,
    available_scopes,
    node_array,
    partial_arrays,
    write_scope,
)
from chunkstore.store.urls import open_group

PASS2_ATTRS = ("bins", "quantile_probs", "mutual_info")
OLD_PARTIAL = "before-"  # appends/before-<scope digest>.npz: a scope's partial before the append


def _arr(sub: zarr.Group, name: str) -> NDArray[Any]:
    return np.asarray(node_array(sub, name)[...])


def stored_partial(group: zarr.Group, scope: str, heads: Mapping[str, int]
                   ) -> Partial | None:
    """The mergeable partial of ``stats/<scope>``, rebuilt from its arrays; None if it
    cannot be (missing arrays, or pairwise correlation)."""
    path = f"{STATS}/{scope}"
    sub = group.get(path)
    if not isinstance(sub, zarr.Group) or "corr_count" in sub:
        return None
    try:
        n = _arr(sub, "count").astype(np.int64)
        nf = n.astype(np.float64)
        seen = n > 0
        m2 = np.where(seen, np.nan_to_num(_arr(sub, "std")) ** 2 * nf, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            m3 = np.nan_to_num(_arr(sub, "skew") * m2 ** 1.5 / np.sqrt(nf))
            m4 = np.nan_to_num((_arr(sub, "kurtosis") + 3.0) * m2 * m2 / nf)
        mom = Moments(n, _arr(sub, "nan_count").astype(np.int64),
                      _arr(sub, "inf_count").astype(np.int64),
                      np.where(seen, _arr(sub, "min"), np.inf),
                      np.where(seen, _arr(sub, "max"), -np.inf),
                      np.where(seen, _arr(sub, "mean"), 0.0), m2, m3, m4)
        com = None
        if "corr" in sub:
            corr = np.nan_to_num(_arr(sub, "corr"))
            c = corr * np.sqrt(np.outer(m2, m2))
            np.fill_diagonal(c, m2)
            rows = int(n.min()) if n.size else 0
            com = CoMoments(np.full((1, 1), rows, np.int64), mom.mean[:, None].copy(),
                            m2[:, None].copy(), c)
        cc = {h: _arr(sub, f"class_counts/{h}").astype(np.int64) for h in heads}
        mc = {h: _arr(sub, f"mask_counts/{h}").astype(np.int64) for h in heads}
    except KeyError:
        return None
    stored_rows = dict(sub.attrs).get("rows")
    return Partial(stored_rows if isinstance(stored_rows, int) else int(n.max(initial=0)), mom, com,
                   cc, mc)


def merge_aligned(old: Partial, new: Partial) -> Partial:
    """``old`` merged with ``new``; correlation kept only when both carry co-moments."""
    if (old.comoments is None) != (new.comoments is None):
        old = Partial(old.rows, old.moments, None, old.class_counts, old.mask_counts)
        new = Partial(new.rows, new.moments, None, new.class_counts, new.mask_counts)
    return old.merge(new)


def split_scopes(group: zarr.Group) -> dict[str, dict[str, Any]]:
    """Stored scopes of one split part: scope -> ``{"array", "name", "code"}``."""
    out = {}
    for scope in available_scopes(group):
        split = dict(group[f"{STATS}/{scope}"].attrs).get("split")
        if isinstance(split, dict) and "code" in split:
            out[scope] = split
    return out


def write_merged(group: zarr.Group, scope: str, total: Partial, n_after: int) -> None:
    """Replace ``stats/<scope>`` with the merged moments and counts."""
    attrs = {k: v for k, v in dict(group[f"{STATS}/{scope}"].attrs).items()
             if k not in PASS2_ATTRS}
    attrs.update({"computed_at": layout.now_iso(), "rows": total.rows, "method": "append",
                  "n_samples": n_after, "stale": False,
                  "correlation": total.comoments is not None,
                  "append_note": "moments merged with the appended rows' partials; "
                                 "histograms, quantiles and mutual information need "
                                 "`chunkstore stats STORE` again"})
    arrays = partial_arrays(total)
    if not _update_in_place(group, scope, arrays, attrs):
        write_scope(group, scope, arrays, attrs)


def _update_in_place(group: zarr.Group, scope: str, arrays: Mapping[str, NDArray[Any]],
                     attrs: Mapping[str, Any]) -> bool:
    """Overwrite the scope's arrays where they already exist with the same shape and dtype
    (all of them after an ingest or an earlier append), drop the second-pass ones; False
    (nothing changed) when any is missing or differs. Deleting and recreating the whole
    group instead costs a few tenths of a second on every append, whatever its size."""
    sub = group[f"{STATS}/{scope}"]
    if not isinstance(sub, zarr.Group):
        return False
    have = {name: a for name, a in sub.members(max_depth=None) if isinstance(a, zarr.Array)}
    for name, value in arrays.items():
        a = have.get(name)
        if a is None or a.shape != value.shape or a.dtype != value.dtype:
            return False
    for name, value in arrays.items():
        have[name][...] = value
    for name in sorted(set(have) - set(arrays), key=len, reverse=True):
        del sub[name]
    for name, node in list(sub.members(max_depth=None)):
        if isinstance(node, zarr.Group) and not any(k.startswith(f"{name}/") for k in arrays):
            if name in sub:  # e.g. mutual_info/, contingency/ left empty
                del sub[name]
    sub.attrs.put(dict(attrs))
    return True


def mark_stale(group: zarr.Group, scope: str, why: str) -> None:
    sub = group[f"{STATS}/{scope}"]
    sub.attrs.update({"stale": True, "stale_reason": why})


def block_partials(features: NDArray[Any], labels: Mapping[str, NDArray[Any]],
                   masks: Mapping[str, NDArray[Any]], heads: Mapping[str, int],
                   selections: Mapping[str, NDArray[np.bool_]], correlation: bool
                   ) -> dict[str, Partial]:
    """Per scope, the partial of the block's rows it selects."""
    return {scope: Partial.of_block(features[sel], {h: v[sel] for h, v in labels.items()},
                                    {h: v[sel] for h, v in masks.items()}, heads,
                                    correlation=correlation)
            for scope, sel in selections.items()}


def scope_block(store: str, start: int, stop: int, scopes: dict[str, tuple[str, int]],
                heads: dict[str, int], correlation: bool) -> dict[str, dict[str, Any]]:
    """Worker: partials of rows ``[start, stop)`` per split scope (array, code)."""
    g = open_group(store, mode="r")
    x = np.asarray(g[layout.FEATURES][start:stop])
    labels = {h: np.asarray(g[layout.label_path(h)][start:stop]) for h in heads}
    masks = {h: np.asarray(g[layout.mask_path(h)][start:stop]) for h in heads}
    codes = {a: np.asarray(g[layout.split_path(a)][start:stop]) for a, _ in scopes.values()}
    sel = {s: codes[a] == c for s, (a, c) in scopes.items()}
    parts = block_partials(x, labels, masks, heads, sel, correlation)
    return {s: p.to_arrays() for s, p in parts.items()}


def save_old_partials(store: str, group: zarr.Group, attrs: Mapping[str, Any]) -> None:
    """Every stored scope's partial before the append, kept in the append's journal until it
    commits (so a rerun after the scopes were rewritten never merges the new rows twice)."""
    heads = {h: int(d["classes"]) for h, d in attrs["heads"].items()}
    adir = journal.appends_dir(store)
    for scope in available_scopes(group):
        p = stored_partial(group, scope, heads)
        name = f"{OLD_PARTIAL}{hashlib.sha256(scope.encode()).hexdigest()[:16]}.npz"
        journal.write_npz(adir / name, {"scope": scope, "ok": p is not None},
                          p.to_arrays() if p is not None else {})


def old_partials(store: str) -> dict[str, Partial | None]:
    """The partials :func:`save_old_partials` kept: scope -> partial (None: not mergeable)."""
    out: dict[str, Partial | None] = {}
    for p in journal.appends_dir(store).iterdir():
        if p.name.startswith(OLD_PARTIAL) and p.name.endswith(".npz"):
            meta, arrays = journal.read_npz(p)
            out[meta["scope"]] = Partial.from_arrays(arrays) if meta["ok"] else None
    return out
