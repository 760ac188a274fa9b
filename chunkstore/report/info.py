"""What a store holds, at a glance: ``chunkstore info STORE [--json]``.

:func:`store_info` reads only metadata, attrs, the journal and the small statistics arrays (never
the sample chunks), so it is fast on any store, complete or not. :meth:`StoreInfo.to_dict` is
the ``--json`` output; its keys are listed in :data:`JSON_KEYS` and documented in the README.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import zarr

from chunkstore.errors import IncompleteStoreWarning
from chunkstore.report.state import Missing, bytes_by_node, missing_of
from chunkstore.store import layout
from chunkstore.store.stats_io import available_scopes, load_stats, node_group
from chunkstore.store.version_view import VersionView
from chunkstore.store.view import StoreView

INFO_VERSION = 1
JSON_KEYS = ("info_version", "path", "format_version", "status", "missing", "n_samples",
             "chunk_rows", "shard_rows", "features", "heads", "codec", "bytes", "splits", "stats",
             "duplicates", "created", "config_sha256", "version")

@dataclass(frozen=True)
class SplitInfo:
    name: str
    method: str | None
    seed: int | None
    by: str | None
    rows: Mapping[str, int]
    leaked: Mapping[str, int] | None = None  # rows with an exact duplicate in the first part


@dataclass(frozen=True)
class DuplicateInfo:
    """``meta/duplicate_of``'s attrs (written by ``chunkstore dedup``); ``current`` is False
    when rows were appended after it."""

    rows: int
    groups: int
    duplicate_rows: int
    by: str | None
    current: bool

    @property
    def share(self) -> float:
        return self.duplicate_rows / self.rows if self.rows else 0.0


@dataclass(frozen=True)
class ScopeInfo:
    scope: str
    rows: int
    method: str | None
    computed_at: str | None
    holds: tuple[str, ...]  # optional statistics present: corr, hist, quantiles, mutual_info
    top_mutual_info: Mapping[str, tuple[tuple[str, float], ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class StoreInfo:
    """The summary :func:`store_info` returns; ``to_dict()`` is the ``--json`` form."""

    path: str
    format_version: int
    status: str
    missing: Missing
    n_samples: int
    chunk_rows: int
    shard_rows: int | None
    n_features: int
    feature_dtype: str
    feature_names: tuple[str, ...]  # the first few
    heads: Mapping[str, int]
    codec: tuple[Mapping[str, Any], ...]
    bytes_by_node: Mapping[str, tuple[int, int]]  # top-level node -> (raw, stored)
    splits: tuple[SplitInfo, ...]
    stats: tuple[ScopeInfo, ...]
    duplicates: DuplicateInfo | None
    created: str | None
    config_sha256: str | None
    version: Mapping[str, Any] | None = None  # id, time, command of ``--version``; else None

    @property
    def bytes_raw(self) -> int:
        return sum(r for r, _ in self.bytes_by_node.values())

    @property
    def bytes_stored(self) -> int:
        return sum(s for _, s in self.bytes_by_node.values())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, keys :data:`JSON_KEYS` (see the README, "chunkstore info")."""
        raw, stored = self.bytes_raw, self.bytes_stored
        return {
            "info_version": INFO_VERSION,
            "path": self.path,
            "format_version": self.format_version,
            "status": self.status,
            "missing": {"rows": self.missing.rows,
                        "ranges": [list(r) for r in self.missing.ranges],
                        "tasks": list(self.missing.tasks),
                        "tasks_total": self.missing.tasks_total,
                        "locked": self.missing.locked},
            "n_samples": self.n_samples,
            "chunk_rows": self.chunk_rows,
            "shard_rows": self.shard_rows,
            "features": {"count": self.n_features, "dtype": self.feature_dtype,
                         "names_head": list(self.feature_names)},
            "heads": {h: {"classes": k} for h, k in self.heads.items()},
            "codec": [dict(c) for c in self.codec],
            "bytes": {"raw": raw, "stored": stored,
                      "ratio": raw / stored if stored else None,
                      "by_node": {n: {"raw": r, "stored": s}
                                  for n, (r, s) in self.bytes_by_node.items()}},
            "splits": {s.name: {"method": s.method, "seed": s.seed, "by": s.by,
                                "rows": dict(s.rows),
                                "leaked": None if s.leaked is None else dict(s.leaked)}
                       for s in self.splits},
            "stats": {s.scope: {"rows": s.rows, "method": s.method,
                                "computed_at": s.computed_at, "holds": list(s.holds),
                                "top_mutual_info": {h: [[n, v] for n, v in top]
                                                    for h, top in s.top_mutual_info.items()}}
                      for s in self.stats},
            "duplicates": None if self.duplicates is None else {
                **asdict(self.duplicates), "share": self.duplicates.share},
            "created": self.created,
            "config_sha256": self.config_sha256,
            "version": None if self.version is None else dict(self.version),
        }

    def format(self) -> str:
        """The human-readable summary printed by ``chunkstore info``."""
        return format_info(self)


def _split_rows(arr: zarr.Array, names: list[str]) -> dict[str, int]:
    rows = arr.attrs.get("rows")
    if isinstance(rows, dict):
        return {str(k): int(v) for k, v in rows.items()}
    codes = np.asarray(arr[...])  # an int8 code per row: small even for millions of rows
    counts = np.bincount(codes[codes >= 0].astype(np.int64), minlength=len(names))
    return {n: int(counts[i]) for i, n in enumerate(names)}


def _splits(group: zarr.Group) -> tuple[SplitInfo, ...]:
    if "splits" not in group:
        return ()
    out = []
    for name, arr in sorted(node_group(group, "splits").arrays(), key=lambda m: m[0]):
        a: dict[str, Any] = dict(arr.attrs)
        names = [str(n) for n in a.get("names", [])]
        leaked = a.get("leaked")
        out.append(SplitInfo(name, a.get("method"), a.get("seed"), a.get("by"),
                             _split_rows(arr, names),
                             dict(leaked) if isinstance(leaked, dict) else None))
    return tuple(out)


def _duplicates(ds: StoreView) -> DuplicateInfo | None:
    """From ``meta/duplicate_of``'s attrs only (no read of the array)."""
    arr = ds.meta.get("duplicate_of")
    if arr is None:
        return None
    a: dict[str, Any] = dict(arr.attrs)
    rows = int(a.get("rows", arr.shape[0]))
    return DuplicateInfo(rows, int(a.get("groups", 0)), int(a.get("duplicate_rows", 0)),
                         a.get("by"), rows == ds.n_samples and arr.shape[0] == ds.n_samples)


def _scopes(ds: StoreView, top: int) -> tuple[ScopeInfo, ...]:
    out = []
    for scope in available_scopes(ds.group):
        g = node_group(ds.group, f"stats/{scope}")
        holds = tuple(k for k in ("corr", "hist", "quantiles", "mutual_info") if k in g)
        mi: dict[str, tuple[tuple[str, float], ...]] = {}
        if "mutual_info" in g:
            st = load_stats(ds, scope)
            mi = {h: tuple(st.top_mutual_info(h, top)) for h in st.mutual_info}
        a: dict[str, Any] = dict(g.attrs)
        out.append(ScopeInfo(scope, int(a.get("rows", 0)), a.get("method"),
                             a.get("computed_at"), holds, mi))
    return tuple(out)


def store_info(path: str, *, names: int = 5, top: int = 5,
               version: str | int | None = None) -> StoreInfo:
    """Summarize a store: format, status, shape, heads, codec, bytes, splits, statistics.

    Parameters
    ----------
    path : a store (local directory or fsspec URL), complete or not.
    names : how many feature names to include.
    top : how many features to list per head by mutual information (scopes computed by
        ``chunkstore stats``).
    version : summarize the store as it was at this version id or tag: its rows, heads,
        splits and statistics (bytes are the whole store's, which every version shares).

    Returns
    -------
    StoreInfo; ``.format()`` is the printed summary, ``.to_dict()`` the ``--json`` form.

    Raises
    ------
    NotAStoreError
        If ``path`` holds no chunkstore store.
    VersionError
        If ``version`` names no version of the store.

    Examples
    --------
    >>> print(store_info("data/demo.zarr").format())  # doctest: +SKIP
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IncompleteStoreWarning)  # reported as status instead
        ds = StoreView(path) if version is None else VersionView(path, version)
    live = ds.live_group if isinstance(ds, VersionView) else ds.group
    v = ds.version if isinstance(ds, VersionView) else None
    attrs = ds.attrs
    codecs: Any = ds.features.metadata.to_dict().get("codecs", ())
    codec = tuple(codecs)
    shards = ds.features.shards
    return StoreInfo(
        path=path,
        format_version=int(attrs["format_version"]),
        status=ds.status,
        missing=missing_of(path, ds.status, attrs.get("placement")),
        n_samples=ds.n_samples,
        chunk_rows=ds.chunk_rows,
        shard_rows=int(shards[0]) if shards else None,
        n_features=len(ds.feature_names),
        feature_dtype=str(ds.features.dtype),
        feature_names=tuple(ds.feature_names[:names]),
        heads=dict(ds.heads),
        codec=codec,
        bytes_by_node=bytes_by_node(path, live, ds.n_samples),
        splits=_splits(ds.group),
        stats=_scopes(ds, top),
        duplicates=_duplicates(ds),
        created=attrs.get("created"),
        config_sha256=attrs.get("config_sha256"),
        version=None if v is None else {"id": v.id, "time": v.time, "command": v.command},
    )


def format_codec(codecs: tuple[Mapping[str, Any], ...]) -> str:
    """``bytes -> blosc(lz4, clevel 5, bitshuffle) -> crc32c`` from Zarr v3 codec metadata."""
    parts = []
    for c in codecs:
        conf = c.get("configuration") or {}
        if c.get("name") == "blosc":
            parts.append(f"blosc({conf.get('cname')}, clevel {conf.get('clevel')}, "
                         f"{conf.get('shuffle')})")
        elif c.get("name") == "sharding_indexed":
            inner = format_codec(tuple(conf.get("codecs", ())))
            parts.append(f"sharding[{inner}]")
        elif c.get("name") == "bytes":
            parts.append("bytes")
        else:
            parts.append(str(c.get("name")))
    return " -> ".join(parts)


def _size(n: int) -> str:
    if n < 1024:
        return f"{n:,} B"
    value, unit = n / 1024, "KiB"
    for bigger in ("MiB", "GiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{value:,.1f} {unit}"


def _ranges(ranges: tuple[tuple[int, int], ...], show: int = 5) -> str:
    text = ", ".join(f"[{a:,}, {b:,})" for a, b in ranges[:show])
    return text + (f", ... (+{len(ranges) - show} more)" if len(ranges) > show else "")


def _wrap(items: list[str], width: int = 83, indent: int = 17) -> str:
    """Comma-separated items, wrapped between items (never inside one)."""
    lines = [""]
    for item in items:
        if lines[-1] and len(lines[-1]) + len(item) + 2 > width:
            lines[-1] += ","
            lines.append("")
        lines[-1] += (", " if lines[-1] else "") + item
    return f"\n{' ' * indent}".join(lines) or "none"


def format_info(info: StoreInfo) -> str:
    """The printed summary of :class:`StoreInfo`."""
    m = info.missing
    if info.status == layout.COMPLETE:
        status = "complete"
    elif m.streaming_chunks is not None:
        status = (f"INCOMPLETE: streaming ingest, {m.streaming_chunks:,} chunks committed in "
                  "the journal; rows are placed at the end; rerun the ingest to finish it")
    else:
        status = (f"INCOMPLETE: {m.rows:,} of {info.n_samples:,} rows not written "
                  f"({_ranges(m.ranges)}); {len(m.tasks):,} of {m.tasks_total:,} tasks missing; "
                  f"rerun the ingest to finish it")
    if m.locked:
        status += "  [an ingest lock is present]"
    names = ", ".join(info.feature_names)
    more = ", ..." if info.n_features > len(info.feature_names) else ""
    raw, stored = info.bytes_raw, info.bytes_stored
    ratio = f"{raw / stored:.2f}x" if stored else "n/a"
    lines = [
        f"store            {info.path}  (format version {info.format_version})",
        f"status           {status}",
        f"samples          {info.n_samples:,}",
        *([f"version          {info.version['id']} of {info.version['time']} "
           f"({info.version['command']}); bytes below are the whole store's"]
          if info.version else []),
        f"features         {info.n_features:,} x {info.feature_dtype}: {names}{more}",
        "heads            " + _wrap([f"{h} ({k} classes)" for h, k in info.heads.items()]),
        f"chunking         {info.chunk_rows:,} rows per chunk"
        + (f", {info.shard_rows:,} rows per shard" if info.shard_rows else ", no sharding"),
        f"codec            {format_codec(info.codec)}",
        f"bytes            {_size(raw)} raw, {_size(stored)} stored, ratio {ratio}",
    ]
    for node, (r, s) in info.bytes_by_node.items():
        lines.append(f"  {node:14} {_size(r):>12} raw {_size(s):>12} stored")
    if info.splits:
        lines.append("splits")
        for sp in info.splits:
            parts = ", ".join(f"{n} {r:,}" for n, r in sp.rows.items())
            by = f", by {sp.by}" if sp.by else ""
            lines.append(f"  {sp.name:14} {sp.method}, seed {sp.seed}{by}: {parts}")
            if sp.leaked is not None and len(sp.leaked) > 1:
                first, *rest = sp.leaked
                lines.append(f"  {'':14} rows with a duplicate in {first}: "
                             + ", ".join(f"{n} {sp.leaked[n]:,}" for n in rest))
    else:
        lines.append("splits           none (chunkstore split STORE)")
    lines.append(_format_duplicates(info.duplicates))
    if info.stats:
        lines.append("statistics")
        for sc in info.stats:
            holds = ", ".join(sc.holds) or "moments and counts only"
            lines.append(f"  {sc.scope:14} {sc.rows:,} rows, {sc.method}, {sc.computed_at}: "
                         f"{holds}")
            w = max((len(h) for h in sc.top_mutual_info), default=0)
            for h, best in sc.top_mutual_info.items():
                text = ", ".join(f"{n} {v:.4f}" for n, v in best)
                lines.append(f"    top MI {h:{w}}  {text}")
    else:
        lines.append("statistics       none (chunkstore stats STORE)")
    return "\n".join(lines)


def _format_duplicates(d: DuplicateInfo | None) -> str:
    if d is None:
        return "duplicates       not checked (chunkstore dedup STORE)"
    stale = "" if d.current else f" (of the first {d.rows:,} rows: rerun chunkstore dedup)"
    return (f"duplicates       {d.duplicate_rows:,} rows ({d.share:.2%}) repeat an earlier row, "
            f"in {d.groups:,} groups (by {d.by}){stale}")


__all__ = ["INFO_VERSION", "JSON_KEYS", "DuplicateInfo", "StoreInfo", "format_info", "store_info"]
