"""Mutual information of a head added after the statistics were computed (``add-head``).

``chunkstore add-head`` writes ``class_counts/<name>`` and ``mask_counts/<name>`` into every
stored scope; the feature-bin x class tables need the features again. :func:`add_head_info`
reads the features and the new head's labels once per scope that holds mutual information,
bins them with the scope's own stored edges, and adds ``contingency/<name>`` and
``mutual_info/<name>``: the arrays ``chunkstore stats`` writes for that head, bit for bit.
The scope's other arrays are left as they are. A scope whose stored edges no longer follow
from its stored min and max (it would need a full ``chunkstore stats``) is skipped and named.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from chunkstore.core.histograms import mi_bias, mutual_info
from chunkstore.stats.compute import BLOCK_MIB, stats_runner
from chunkstore.stats.graphs import (
    Selection,
    block_rows,
    histogram_graph,
    stored_binning,
)
from chunkstore.store import layout, versions
from chunkstore.store.stats_io import STATS, add_arrays, available_scopes, node_array, node_group
from chunkstore.store.urls import open_group


@dataclass(frozen=True)
class HeadInfo:
    """Scopes that got the head's mutual information, and those skipped (stale edges)."""

    written: tuple[str, ...]
    skipped: tuple[str, ...]

    def format(self) -> str:
        if self.written or self.skipped:
            out = f"mutual info      {', '.join(self.written) or '-'} (scopes)"
            if self.skipped:
                out += (f"\n                 skipped {', '.join(self.skipped)}: their edges are "
                        "stale; run `chunkstore stats` for them")
            return out
        return "mutual info      no stored scope has it (`chunkstore stats` computes it)"


def _selection(scope: str, attrs: dict[str, Any]) -> Selection:
    split = attrs.get("split")
    if not isinstance(split, dict):
        return Selection(scope, int(attrs["rows"]))
    array = str(split["array"]).removeprefix("splits/")
    return Selection(scope, int(attrs["rows"]), array, split.get("name"), int(split["code"]))


def add_head_info(store: str, name: str, *, scheduler: str | None = None,
                  progress: bool = True, block_mib: float = BLOCK_MIB) -> HeadInfo:
    """Add head ``name``'s ``contingency`` and ``mutual_info`` to every scope that has mutual
    information (computed by ``chunkstore stats``), and record a version if any was written.
    ``scheduler`` and ``progress`` as for :func:`chunkstore.stats.compute.compute_stats`."""
    group = open_group(store, mode="r+")
    attrs = layout.read_attrs(store)
    classes = int(attrs["heads"][name]["classes"])
    feats = node_array(group, layout.FEATURES)
    rows = block_rows(int(attrs["chunk_rows"]), int(feats.shape[1]), feats.dtype.itemsize,
                      block_mib)
    written, skipped = [], []
    with stats_runner(scheduler, progress, store) as compute:
        for scope in available_scopes(group):
            sub = node_group(group, f"{STATS}/{scope}")
            sattrs: dict[str, Any] = dict(sub.attrs)
            if not isinstance(sattrs.get("mutual_info"), dict) or "hist_edges" not in sub:
                continue
            sel = _selection(scope, sattrs)
            binning = stored_binning(group, sel, int(sattrs["bins"]))
            edges = node_array(sub, "hist_edges")[...]
            if binning is None or not np.array_equal(binning.edges(), edges, equal_nan=True):
                skipped.append(scope)
                continue
            second = compute(histogram_graph(group, sel, binning, rows=rows,
                                             heads={name: classes}),
                             f"mutual information of head {name!r} ({scope})")
            table = second.contingency(name)
            add_arrays(group, scope, {f"contingency/{name}": table,
                                      f"mutual_info/{name}": mutual_info(table)})
            labeled = int(np.asarray(node_array(sub, f"class_counts/{name}")[...]).sum())
            mi = dict(sattrs["mutual_info"])
            mi["bias"] = {**mi.get("bias", {}), name: mi_bias(binning.bins, classes, labeled)}
            sub.attrs["mutual_info"] = mi
            written.append(scope)
    if written:
        versions.commit_version(store, f"stats mutual_info/{name}")
    return HeadInfo(tuple(written), tuple(skipped))
