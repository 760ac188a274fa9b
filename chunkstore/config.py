"""Config: a YAML file parsed with ``yaml.safe_load`` into frozen dataclasses.

Everything is validated up front, before a store is touched: an unknown key, a wrong type, a
missing field or a bad value is one :class:`ConfigError` that names the file and the key path.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from chunkstore.core.schema import (
    NAN_POLICIES,
    Compression,
    Schema,
    Where,
    as_auto_int,
    as_bool,
    as_float,
    as_int,
    as_mapping,
    as_str,
    check_keys,
)
from chunkstore.core.splitspec import SplitSpec
from chunkstore.errors import ConfigError
from chunkstore.sources.registry import options_class, resolved_schema
from chunkstore.store.urls import is_local, normalize


@dataclass(frozen=True)
class IngestOptions:
    """How to run: worker count, chunking, scheduler. ``None`` means auto."""

    workers: int | None = None
    chunk_rows: int | None = None
    task_chunks: int | None = None
    scheduler: str | None = None
    nan_policy: str = "allow"
    blosc_threads: int = 1
    target_chunk_mib: float = 4.0

    def to_dict(self) -> dict[str, Any]:
        return {"workers": self.workers or "auto", "chunk_rows": self.chunk_rows or "auto",
                "task_chunks": self.task_chunks or "auto", "scheduler": self.scheduler,
                "nan_policy": self.nan_policy, "blosc_threads": self.blosc_threads,
                "target_chunk_mib": self.target_chunk_mib}

    @classmethod
    def from_dict(cls, d: Any, where: Where) -> IngestOptions:
        d = as_mapping(d, where)
        check_keys(d, {"workers", "chunk_rows", "task_chunks", "scheduler", "nan_policy",
                        "blosc_threads", "target_chunk_mib"}, where)
        sched = d.get("scheduler")
        if sched is not None:
            sched = as_str(sched, where.child("scheduler"))
        return cls(
            as_auto_int(d.get("workers"), where.child("workers")),
            as_auto_int(d.get("chunk_rows"), where.child("chunk_rows")),
            as_auto_int(d.get("task_chunks"), where.child("task_chunks")),
            sched,
            as_str(d.get("nan_policy", "allow"), where.child("nan_policy"), choices=NAN_POLICIES),
            as_int(d.get("blosc_threads", 1), where.child("blosc_threads")),
            as_float(d.get("target_chunk_mib", 4.0), where.child("target_chunk_mib"), lo=0.01),
        )


@dataclass(frozen=True)
class StatsOptions:
    """What ingest computes online (merged into ``stats/all``).

    ``online``: every write task records its partial statistics and ingest merges them into
    ``stats/all``. ``correlation``: include the (F, F) co-moment matrix (F^2 work per row).
    """

    correlation: bool = True
    online: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"correlation": self.correlation, "online": self.online}

    @classmethod
    def from_dict(cls, d: Any, where: Where) -> StatsOptions:
        d = as_mapping(d, where)
        check_keys(d, {"correlation", "online"}, where)
        return cls(as_bool(d.get("correlation", True), where.child("correlation")),
                   as_bool(d.get("online", True), where.child("online")))



@dataclass(frozen=True)
class SourceConfig:
    """``source:`` — the kind plus its options, validated by that kind's ``Options`` class."""

    kind: str
    options: Any  # the kind's frozen Options dataclass

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.options.to_dict()}


@dataclass(frozen=True)
class Config:
    """A whole ingest config. ``store`` and source paths are relative to the working directory."""

    store: str
    schema: Schema
    source: SourceConfig
    ingest: IngestOptions = field(default_factory=IngestOptions)
    compression: Compression = field(default_factory=Compression)
    stats: StatsOptions = field(default_factory=StatsOptions)
    file: str = "<dict>"
    # Written after ingest; not in content_sha256, so declaring a split never invalidates a store.
    splits: tuple[SplitSpec, ...] = ()
    # fsspec options for a URL store (s3://...): not in to_dict (they may hold credentials, and
    # to_dict is saved in the store's journal) nor in content_sha256. See chunkstore.storage.
    storage_options: dict[str, Any] = field(default_factory=dict, hash=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "store": self.store,
            "schema": self.schema.to_dict(),
            "source": self.source.to_dict(),
            "ingest": self.ingest.to_dict(),
            "compression": self.compression.to_dict(),
            "stats": self.stats.to_dict(),
            "splits": {s.name: s.to_dict() for s in self.splits},
        }

    def content_sha256(self, chunk_rows: int, task_chunks: int) -> str:
        """Hash of everything that decides the store's bytes and its task plan.

        Worker count, scheduler and Blosc threads are left out: they never change the result.
        """
        content = {
            "schema": self.schema.to_dict(),
            "source": self.source.to_dict(),
            "compression": self.compression.to_dict(),
            "stats": self.stats.to_dict(),
            "nan_policy": self.ingest.nan_policy,
            "chunk_rows": chunk_rows,
            "task_chunks": task_chunks,
        }
        blob = json.dumps(content, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    @classmethod
    def from_dict(cls, d: Any, file: str = "<dict>") -> Config:
        top = Where(file)
        d = as_mapping(d, top)
        check_keys(d, {"store", "schema", "source", "ingest", "compression", "stats", "splits",
                        "storage_options"}, top)
        for key in ("store", "schema", "source"):
            if key not in d:
                raise top.child(key).error("missing required key")
        store = normalize_store(as_str(d["store"], top.child("store")))
        storage_options = _storage_options(d.get("storage_options"), store,
                                           top.child("storage_options"))
        schema = Schema.from_dict(d["schema"], top.child("schema"))
        sw = top.child("source")
        sdef = dict(as_mapping(d["source"], sw))
        if "kind" not in sdef:
            raise sw.child("kind").error("missing required key (e.g. synthetic or npz)")
        kind = as_str(sdef.pop("kind"), sw.child("kind"))
        options = options_class(kind, sw.child("kind")).from_dict(sdef, sw, schema)
        schema = resolved_schema(options, schema, sw)  # e.g. names from Parquet columns
        return cls(
            store=store,
            schema=schema,
            source=SourceConfig(kind, options),
            ingest=IngestOptions.from_dict(d.get("ingest") or {}, top.child("ingest")),
            compression=Compression.from_dict(d.get("compression") or {},
                                              top.child("compression")),
            stats=StatsOptions.from_dict(d.get("stats") or {}, top.child("stats")),
            file=file,
            splits=_splits_from_dict(d.get("splits") or {}, top.child("splits"), schema),
            storage_options=storage_options,
        )


def normalize_store(store: str) -> str:
    """``file://`` URLs become local paths; see :func:`chunkstore.storage.normalize`."""
    return normalize(store)


def _storage_options(d: Any, store: str, where: Where) -> dict[str, Any]:
    """``storage_options:`` fsspec keyword arguments for a URL store (endpoint, credentials)."""
    if d is None:
        return {}
    options = dict(as_mapping(d, where))
    if options and is_local(store):
        raise where.error(f"storage_options apply to fsspec URLs (s3://bucket/x.zarr, ...), but "
                          f"store {store!r} is a local path; remove them or use a URL")
    return options


def _splits_from_dict(d: Any, where: Where, schema: Schema) -> tuple[SplitSpec, ...]:
    """``splits: {name: {method, fractions, seed, by, k, group}}``; ``by`` heads must exist."""
    specs = []
    for name, sd in as_mapping(d, where).items():
        spec = SplitSpec.from_dict(str(name), sd, where.child(str(name)))
        heads = [h.name for h in schema.heads]
        if spec.by is not None and spec.method != "ordered" and spec.by not in heads:
            raise where.child(str(name)).child("by").error(
                f"unknown head {spec.by!r}; the schema's heads are {heads}")
        specs.append(spec)
    return tuple(specs)


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses duplicate keys instead of keeping the last one."""

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a YAML config.

    Parameters
    ----------
    path : path of the YAML file.

    Raises
    ------
    ConfigError
        If the file is missing, is not YAML, or breaks the schema; the message names the key.

    Examples
    --------
    >>> cfg = load_config("configs/demo.yaml")  # doctest: +SKIP
    >>> cfg.schema.n_features
    893
    """
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read config {str(p)!r}: {e.strerror}") from e
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise ConfigError(f"config {str(p)!r} is not valid YAML: {e}") from e
    return Config.from_dict(data, file=str(p))
