"""Statistics in the store: ``stats/<scope>/`` arrays, loading them, normalization, summary.

``scope`` is ``all`` or a split name such as ``train`` (``<array>/<name>`` for a split array
other than ``splits/default``). Every statistic is a plain Zarr array, so ``zarr.open()`` users
read them with no chunkstore import; the group attrs say when, how and over how many rows they
were computed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr
from numpy.typing import NDArray

from chunkstore.core.moments import F64, I64, Partial
from chunkstore.errors import ReadError
from chunkstore.store.layout import DEFAULT_SPLITS

if TYPE_CHECKING:
    from chunkstore.store.view import StoreView

STATS = "stats"
CHUNK_BYTES = 4 * 2**20  # stored statistics are chunked along their first axis to ~4 MiB


def scope_name(split: str | None, splits: str = DEFAULT_SPLITS) -> str:
    """The scope of a split's statistics: ``all`` (no split), ``<split>`` (a split of
    ``splits/default``) or ``<splits>/<split>`` (of another split array)."""
    if split is None:
        return "all"
    return split if splits == DEFAULT_SPLITS else f"{splits}/{split}"


def partial_arrays(p: Partial) -> dict[str, NDArray[Any]]:
    """The stored form of merged partial statistics (no histograms: those need a 2nd pass)."""
    m = p.moments
    seen = m.count > 0
    out: dict[str, NDArray[Any]] = {
        "count": m.count, "nan_count": m.nan_count, "inf_count": m.inf_count,
        "min": np.where(seen, m.min, np.nan), "max": np.where(seen, m.max, np.nan),
        "mean": np.where(seen, m.mean, np.nan), "std": m.std, "skew": m.skew,
        "kurtosis": m.kurtosis,
    }
    if p.comoments is not None:
        out["corr"] = p.comoments.correlation()
        if p.comoments.pairwise:
            out["corr_count"] = p.comoments.pair_counts()
    out.update({f"class_counts/{h}": c for h, c in p.class_counts.items()})
    out.update({f"mask_counts/{h}": c for h, c in p.mask_counts.items()})
    return out


def _chunks(a: NDArray[Any]) -> tuple[int, ...]:
    if a.ndim == 0:
        return (1,)
    row = max(1, int(np.prod(a.shape[1:], dtype=np.int64)) * a.dtype.itemsize)
    return (max(1, min(a.shape[0], CHUNK_BYTES // row)), *a.shape[1:])


def write_scope(group: zarr.Group, scope: str, arrays: Mapping[str, NDArray[Any]],
                attrs: Mapping[str, Any]) -> None:
    """Replace ``stats/<scope>`` with ``arrays`` and ``attrs`` (nothing of an older run stays)."""
    path = f"{STATS}/{scope}"
    if path in group:
        del group[path]
    sub = group.require_group(path)
    sub.attrs.update(dict(attrs))
    add_arrays(group, scope, arrays)


def add_arrays(group: zarr.Group, scope: str, arrays: Mapping[str, NDArray[Any]]) -> None:
    """Write ``arrays`` into ``stats/<scope>``, replacing arrays of the same name only."""
    sub = node_group(group, f"{STATS}/{scope}")
    for name, value in arrays.items():
        a = np.ascontiguousarray(value)
        fill = np.nan if a.dtype.kind == "f" else 0
        sub.create_array(name, shape=a.shape, dtype=a.dtype, chunks=_chunks(a),
                         fill_value=fill, overwrite=True)[...] = a


@dataclass(frozen=True)
class Normalization:
    """Per-feature ``(x - mean) / std`` parameters, float32, safe to apply to any feature.

    ``guarded`` marks features whose std was zero, tiny or undefined (constant, all-NaN): their
    std is 1, and an all-NaN feature's mean is 0, so normalizing never divides by zero.
    """

    mean: NDArray[np.float32]
    std: NDArray[np.float32]
    guarded: NDArray[np.bool_]

    def apply(self, x: NDArray[Any]) -> NDArray[np.float32]:
        """``(x - mean) / std`` as float32 for a (rows, F) block."""
        return ((np.asarray(x, np.float32) - self.mean) / self.std).astype(np.float32)


def normalization(mean: F64, std: F64, *, min_std: float = 1e-8) -> Normalization:
    """Normalization parameters from mean and std, with std <= ``min_std`` or NaN set to 1."""
    bad = ~(np.isfinite(std) & (std > min_std))
    return Normalization(np.where(np.isfinite(mean), mean, 0.0).astype(np.float32),
                         np.where(bad, 1.0, std).astype(np.float32), bad)


@dataclass(frozen=True)
class Stats:
    """The statistics of one scope, as numpy arrays, with the feature names they belong to.

    Arrays a scope does not hold are None: ``corr`` when correlation was off; ``hist``,
    ``hist_edges``, ``quantiles`` and ``mutual_info`` until ``chunkstore stats`` has run (ingest
    computes moments, correlation and counts only). Contingency tables are left in the store:
    ``zarr.open(path)[f"stats/{scope}/contingency/{head}"]`` (F, bins, K).
    """

    scope: str
    feature_names: tuple[str, ...]
    attrs: Mapping[str, Any]
    count: I64
    nan_count: I64
    inf_count: I64
    min: F64
    max: F64
    mean: F64
    std: F64
    skew: F64 | None = None
    kurtosis: F64 | None = None
    corr: F64 | None = None
    corr_count: I64 | None = None
    hist: I64 | None = None
    hist_edges: F64 | None = None
    quantiles: F64 | None = None
    class_counts: Mapping[str, I64] = field(default_factory=dict)
    mask_counts: Mapping[str, I64] = field(default_factory=dict)
    mutual_info: Mapping[str, F64] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return int(self.attrs.get("rows", 0))

    @property
    def quantile_probs(self) -> tuple[float, ...]:
        return tuple(self.attrs.get("quantile_probs", ()))

    def normalization(self, *, min_std: float = 1e-8) -> Normalization:
        """Parameters for ``(x - mean) / std`` with zero, tiny or NaN std guarded (set to 1)."""
        return normalization(self.mean, self.std, min_std=min_std)

    def mask_coverage(self) -> dict[str, F64]:
        """Per head, the share of rows whose mask allows each class, (K,)."""
        return {h: c / self.rows if self.rows else np.full(c.shape, np.nan)
                for h, c in self.mask_counts.items()}

    def constant_features(self) -> list[str]:
        """Features whose finite values are all equal (min == max)."""
        return [self.feature_names[i] for i in np.flatnonzero(self.max == self.min)]

    def nan_features(self) -> list[str]:
        """Features with at least one NaN."""
        return [self.feature_names[i] for i in np.flatnonzero(self.nan_count > 0)]

    def top_mutual_info(self, head: str, k: int = 5) -> list[tuple[str, float]]:
        """The ``k`` features with the largest mutual information with ``head``, in nats."""
        mi = self.mutual_info[head]
        order = np.argsort(np.where(np.isnan(mi), -np.inf, -mi), kind="stable")[:k]
        return [(self.feature_names[i], float(mi[i])) for i in order if np.isfinite(mi[i])]

    def format(self, top: int = 5) -> str:
        """A short report: constant / NaN features, top features by MI, class balance."""
        return format_summary(self, top)


def _names(names: list[str], limit: int = 8) -> str:
    more = f", ... (+{len(names) - limit})" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more if names else "none"


def format_summary(s: Stats, top: int = 5) -> str:
    """The printed summary of :class:`Stats` (see ``chunkstore stats``)."""
    n_all_nan = int(((s.count == 0) & (s.nan_count > 0)).sum())
    infs = [s.feature_names[i] for i in np.flatnonzero(s.inf_count > 0)]
    lines = [
        f"stats/{s.scope}    {s.rows:,} rows x {len(s.feature_names):,} features  "
        f"(method {s.attrs.get('method')}, computed {s.attrs.get('computed_at')})",
        f"constant features   {len(s.constant_features())}: {_names(s.constant_features())}",
        f"features with NaN   {len(s.nan_features())} ({n_all_nan} all NaN): "
        f"{_names(s.nan_features())}",
        f"features with inf   {len(infs)}: {_names(infs)}",
    ]
    if s.mutual_info:
        bias = s.attrs.get("mutual_info", {}).get("bias", {})
        lines.append(f"top mutual information (nats, plug-in, {s.attrs.get('bins')} bins):")
        for h in s.mutual_info:
            best = ", ".join(f"{n} {v:.4f}" for n, v in s.top_mutual_info(h, top))
            lines.append(f"  {h:18} {best}   [bias ~{bias.get(h, float('nan')):.2g}]")
    lines.append("class balance (share of rows; smallest, largest, missing classes):")
    for h, c in s.class_counts.items():
        total = int(c.sum())
        if total == 0:
            lines.append(f"  {h:18} no labelled rows")
            continue
        share = c / total
        lo, hi = int(np.argmin(c)), int(np.argmax(c))
        missing = np.flatnonzero(c == 0).tolist()
        lines.append(f"  {h:18} {len(c)} classes: class {lo} {share[lo]:.2%}, class {hi} "
                     f"{share[hi]:.2%}, missing {missing if missing else 'none'}")
    return "\n".join(lines)


def stats_path(scope: str) -> str:
    return f"{STATS}/{scope}"


def node_array(group: zarr.Group, path: str) -> zarr.Array:
    """The array at ``path``; ReadError if it is a group."""
    node = group[path]
    if not isinstance(node, zarr.Array):
        raise ReadError(f"expected a Zarr array at {path!r}, found a group")
    return node


def node_group(group: zarr.Group, path: str) -> zarr.Group:
    """The group at ``path``; ReadError if it is an array."""
    node = group[path]
    if not isinstance(node, zarr.Group):
        raise ReadError(f"expected a Zarr group at {path!r}, found an array")
    return node


def available_scopes(group: zarr.Group) -> list[str]:
    """Scopes with statistics in the store, e.g. ``["all", "train"]``."""
    if STATS not in group:
        return []
    found = []

    def walk(g: zarr.Group, prefix: str) -> None:
        for name, sub in g.groups():
            if "mean" in sub:
                found.append(prefix + name)
            elif name not in ("class_counts", "mask_counts", "mutual_info", "contingency"):
                walk(sub, f"{prefix}{name}/")

    walk(node_group(group, STATS), "")
    return sorted(found)


def load_stats(dataset: StoreView, scope: str = "all") -> Stats:
    """The stored statistics of ``scope`` as numpy arrays.

    Parameters
    ----------
    dataset : an open :class:`chunkstore.Dataset`.
    scope : "all" (written by ingest, or by ``chunkstore stats STORE``) or a split name
        ("train", written by ``chunkstore stats STORE --split train``).

    Raises
    ------
    ReadError
        If the store holds no statistics for ``scope``; the message lists those it holds.

    Examples
    --------
    >>> st = chunkstore.open("data/demo.zarr").stats("train")  # doctest: +SKIP
    >>> norm = st.normalization()  # float32 mean and std, zero std guarded
    """
    group = dataset.group
    path = stats_path(scope)
    if path not in group or "mean" not in node_group(group, path):
        have = available_scopes(group)
        array, _, name = scope.rpartition("/")
        split = "" if scope == "all" else f" --split {name}" + (f" --split-set {array}" if array
                                                                 else "")
        raise ReadError(f"store {dataset.path!r} has no statistics for scope {scope!r} (no "
                        f"{path}/ group; scopes present: {have or 'none'}); compute them with "
                        f"`chunkstore stats {dataset.path}{split}`")
    g = node_group(group, path)

    def read(name: str) -> Any:
        return node_array(g, name)[...] if name in g else None

    def per_head(prefix: str) -> dict[str, Any]:
        return {h: read(f"{prefix}/{h}") for h in dataset.heads if f"{prefix}/{h}" in g}

    return Stats(
        scope=scope, feature_names=tuple(dataset.feature_names), attrs=dict(g.attrs),
        count=read("count"), nan_count=read("nan_count"),
        inf_count=read("inf_count") if "inf_count" in g else np.zeros_like(read("count")),
        min=read("min"), max=read("max"), mean=read("mean"), std=read("std"),
        skew=read("skew"), kurtosis=read("kurtosis"), corr=read("corr"),
        corr_count=read("corr_count"), hist=read("hist"), hist_edges=read("hist_edges"),
        quantiles=read("quantiles"), class_counts=per_head("class_counts"),
        mask_counts=per_head("mask_counts"), mutual_info=per_head("mutual_info"),
    )
