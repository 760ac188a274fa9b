"""Config and schema: frozen dataclasses parsed from YAML with ``yaml.safe_load``.

Everything is validated up front, before a store is touched: an unknown key, a wrong type, a
missing field or a bad value is one :class:`ConfigError` that names the file and the key path.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .errors import ConfigError

FEATURE_DTYPES = ("float32", "float16", "float64")
LABEL_DTYPES = ("int8", "int16", "int32", "int64")
MASK_DTYPES = ("int8", "uint8", "bool", "int16")
BLOSC_CNAMES = ("lz4", "lz4hc", "zstd", "zlib", "blosclz")
BLOSC_SHUFFLES = ("bitshuffle", "shuffle", "noshuffle")
NAN_POLICIES = ("allow", "error")


class Where:
    """Names a place in a config for error messages: ``file 'demo.yaml', key 'schema.heads'``."""

    def __init__(self, file: str, path: str = "") -> None:
        self.file = file
        self.path = path

    def child(self, key: str | int) -> Where:
        sub = f"{self.path}[{key}]" if isinstance(key, int) else f"{self.path}.{key}"
        return Where(self.file, sub.lstrip("."))

    def error(self, message: str) -> ConfigError:
        return ConfigError(f"config {self.file!r}, key {self.path or '<top>'!r}: {message}")


def _mapping(value: Any, where: Where) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise where.error(f"expected a mapping, found {type(value).__name__} {value!r}")
    return value


def _check_keys(d: Mapping[str, Any], allowed: set[str], where: Where) -> None:
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise where.child(unknown[0]).error(
            f"unknown key {unknown[0]!r}; allowed keys here are {sorted(allowed)}"
        )


def _int(value: Any, where: Where, *, minimum: int | None = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise where.error(f"expected an integer, found {type(value).__name__} {value!r}")
    if minimum is not None and value < minimum:
        raise where.error(f"expected an integer >= {minimum}, found {value}")
    return value


def _float(value: Any, where: Where, *, lo: float | None = None, hi: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise where.error(f"expected a number, found {type(value).__name__} {value!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise where.error(f"expected a number in [{lo}, {hi}], found {value}")
    return float(value)


def _str(value: Any, where: Where, *, choices: tuple[str, ...] | None = None) -> str:
    if not isinstance(value, str):
        raise where.error(f"expected a string, found {type(value).__name__} {value!r}")
    if choices is not None and value not in choices:
        raise where.error(f"expected one of {list(choices)}, found {value!r}")
    return value


def _bool(value: Any, where: Where) -> bool:
    if not isinstance(value, bool):
        raise where.error(f"expected true or false, found {value!r}")
    return value


def _auto_int(value: Any, where: Where) -> int | None:
    """``auto`` (or null) -> None, else a positive integer."""
    if value is None or value == "auto":
        return None
    return _int(value, where)


@dataclass(frozen=True)
class HeadSpec:
    """One prediction head: ``labels/<name>`` (N,) and ``masks/<name>`` (N, classes)."""

    name: str
    classes: int
    label_dtype: str = "int16"
    mask_dtype: str = "int8"

    def to_dict(self) -> dict[str, Any]:
        return {"classes": self.classes, "label_dtype": self.label_dtype,
                "mask_dtype": self.mask_dtype}


@dataclass(frozen=True)
class Schema:
    """What every sample holds: F features and one label + mask per head."""

    feature_names: tuple[str, ...]
    heads: tuple[HeadSpec, ...]
    feature_dtype: str = "float32"

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    def head(self, name: str) -> HeadSpec:
        for h in self.heads:
            if h.name == name:
                return h
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "features": {"count": self.n_features, "names": list(self.feature_names),
                         "dtype": self.feature_dtype},
            "heads": {h.name: h.to_dict() for h in self.heads},
        }

    @classmethod
    def from_dict(cls, d: Any, where: Where | None = None) -> Schema:
        where = where or Where("<dict>", "schema")
        d = _mapping(d, where)
        _check_keys(d, {"features", "heads"}, where)
        if "features" not in d:
            raise where.error("missing required key 'features' (a count or {count, names, dtype})")
        if "heads" not in d:
            raise where.error("missing required key 'heads' (a mapping head -> classes)")
        fw = where.child("features")
        fdef = d["features"]
        names: tuple[str, ...]
        dtype = "float32"
        if isinstance(fdef, Mapping):
            _check_keys(fdef, {"count", "names", "dtype"}, fw)
            dtype = _str(fdef.get("dtype", "float32"), fw.child("dtype"), choices=FEATURE_DTYPES)
            raw_names = fdef.get("names")
            count = fdef.get("count")
            if raw_names is not None:
                if not isinstance(raw_names, list) or not all(isinstance(n, str) for n in raw_names):
                    raise fw.child("names").error("expected a list of strings")
                names = tuple(raw_names)
                if count is not None and _int(count, fw.child("count")) != len(names):
                    raise fw.error(f"count is {count} but {len(names)} names are given")
                if len(set(names)) != len(names):
                    dup = sorted({n for n in names if names.count(n) > 1})[0]
                    raise fw.child("names").error(f"duplicate feature name {dup!r}")
                if not names:
                    raise fw.child("names").error("expected at least one feature name")
            elif count is not None:
                names = default_feature_names(_int(count, fw.child("count")))
            else:
                raise fw.error("give 'count' or 'names'")
        else:
            names = default_feature_names(_int(fdef, fw))
        hw = where.child("heads")
        hdef = _mapping(d["heads"], hw)
        if not hdef:
            raise hw.error("expected at least one head, e.g. {action_type: 12}")
        heads = []
        for name, spec in hdef.items():
            w = hw.child(str(name))
            if not isinstance(name, str) or not name.isidentifier():
                raise w.error(f"head name must be an identifier-like string, found {name!r}")
            if isinstance(spec, Mapping):
                _check_keys(spec, {"classes", "label_dtype", "mask_dtype"}, w)
                if "classes" not in spec:
                    raise w.error("missing required key 'classes'")
                head = HeadSpec(
                    name,
                    _int(spec["classes"], w.child("classes")),
                    _str(spec.get("label_dtype", "int16"), w.child("label_dtype"),
                         choices=LABEL_DTYPES),
                    _str(spec.get("mask_dtype", "int8"), w.child("mask_dtype"),
                         choices=MASK_DTYPES),
                )
            else:
                head = HeadSpec(name, _int(spec, w))
            if head.classes - 1 > np.iinfo(head.label_dtype).max:
                raise w.error(f"{head.classes} classes do not fit label_dtype {head.label_dtype}")
            heads.append(head)
        return cls(names, tuple(heads), dtype)


def default_feature_names(count: int) -> tuple[str, ...]:
    width = len(str(count - 1))
    return tuple(f"f{i:0{width}d}" for i in range(count))


@dataclass(frozen=True)
class Compression:
    """Blosc settings for every sample array, plus the crc32c checksum codec."""

    cname: str = "lz4"
    clevel: int = 5
    shuffle: str = "bitshuffle"
    checksum: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"codec": "blosc", "cname": self.cname, "clevel": self.clevel,
                "shuffle": self.shuffle, "checksum": self.checksum}

    @classmethod
    def from_dict(cls, d: Any, where: Where) -> Compression:
        d = _mapping(d, where)
        _check_keys(d, {"codec", "cname", "clevel", "shuffle", "checksum"}, where)
        _str(d.get("codec", "blosc"), where.child("codec"), choices=("blosc",))
        clevel = _int(d.get("clevel", 5), where.child("clevel"), minimum=0)
        if clevel > 9:
            raise where.child("clevel").error(f"expected 0..9, found {clevel}")
        return cls(
            _str(d.get("cname", "lz4"), where.child("cname"), choices=BLOSC_CNAMES),
            clevel,
            _str(d.get("shuffle", "bitshuffle"), where.child("shuffle"), choices=BLOSC_SHUFFLES),
            _bool(d.get("checksum", True), where.child("checksum")),
        )


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
        d = _mapping(d, where)
        _check_keys(d, {"workers", "chunk_rows", "task_chunks", "scheduler", "nan_policy",
                        "blosc_threads", "target_chunk_mib"}, where)
        sched = d.get("scheduler")
        if sched is not None:
            sched = _str(sched, where.child("scheduler"))
        return cls(
            _auto_int(d.get("workers"), where.child("workers")),
            _auto_int(d.get("chunk_rows"), where.child("chunk_rows")),
            _auto_int(d.get("task_chunks"), where.child("task_chunks")),
            sched,
            _str(d.get("nan_policy", "allow"), where.child("nan_policy"), choices=NAN_POLICIES),
            _int(d.get("blosc_threads", 1), where.child("blosc_threads")),
            _float(d.get("target_chunk_mib", 4.0), where.child("target_chunk_mib"), lo=0.01),
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
        d = _mapping(d, where)
        _check_keys(d, {"correlation", "online"}, where)
        return cls(_bool(d.get("correlation", True), where.child("correlation")),
                   _bool(d.get("online", True), where.child("online")))


SPLIT_METHODS = ("random", "group", "stratified", "stratified-group", "kfold", "ordered")
DEFAULT_FRACTIONS = (("train", 0.8), ("val", 0.1), ("test", 0.1))


@dataclass(frozen=True)
class SplitSpec:
    """One split array ``splits/<name>``: how samples are assigned to named parts.

    ``fractions`` are ``(part, fraction)`` pairs in code order; for ``kfold`` they are the ``k``
    folds ``fold0..fold{k-1}``. ``by`` is a head (stratified methods, kfold) or a ``meta/<name>``
    order key (ordered). ``group`` keys kfold by ``meta/group``. See :mod:`chunkstore.splits`.
    """

    name: str = "default"
    method: str = "random"
    fractions: tuple[tuple[str, float], ...] = DEFAULT_FRACTIONS
    seed: int = 0
    by: str | None = None
    k: int | None = None
    group: bool = False

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(n for n, _ in self.fractions)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"method": self.method, "seed": self.seed, "by": self.by}
        if self.method == "kfold":
            return {**d, "k": self.k, "group": self.group}
        return {**d, "fractions": dict(self.fractions)}

    def problem(self) -> tuple[str, str] | None:
        """``(key, what is wrong)`` for the first invalid field, else None (a pure check)."""
        from .splits import spec_problem

        return spec_problem(self)

    @classmethod
    def from_dict(cls, name: str, d: Any, where: Where) -> SplitSpec:
        d = _mapping(d, where)
        _check_keys(d, {"method", "fractions", "seed", "by", "k", "group"}, where)
        method = _str(d.get("method", "random"), where.child("method"), choices=SPLIT_METHODS)
        k = None if d.get("k") is None else _int(d["k"], where.child("k"), minimum=None)
        fw = where.child("fractions")
        if method == "kfold":
            if "fractions" in d:
                raise fw.error("kfold takes 'k' (equal folds), not fractions")
            fractions = tuple((f"fold{i}", 1.0 / k) for i in range(k)) if k and k > 0 else ()
        else:
            fractions = tuple((str(n), _float(f, fw.child(str(n))))
                              for n, f in _mapping(d.get("fractions", dict(DEFAULT_FRACTIONS)),
                                                   fw).items())
        by = None if d.get("by") is None else _str(d["by"], where.child("by"))
        spec = cls(name, method, fractions, _int(d.get("seed", 0), where.child("seed"), minimum=0),
                   by, k, _bool(d.get("group", False), where.child("group")))
        bad = spec.problem()
        if bad:
            raise where.child(bad[0]).error(bad[1])
        return spec


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
        from .sources.registry import options_class, resolved_schema

        top = Where(file)
        d = _mapping(d, top)
        _check_keys(d, {"store", "schema", "source", "ingest", "compression", "stats", "splits",
                        "storage_options"}, top)
        for key in ("store", "schema", "source"):
            if key not in d:
                raise top.child(key).error("missing required key")
        store = normalize_store(_str(d["store"], top.child("store")))
        storage_options = _storage_options(d.get("storage_options"), store,
                                           top.child("storage_options"))
        schema = Schema.from_dict(d["schema"], top.child("schema"))
        sw = top.child("source")
        sdef = dict(_mapping(d["source"], sw))
        if "kind" not in sdef:
            raise sw.child("kind").error("missing required key (e.g. synthetic or npz)")
        kind = _str(sdef.pop("kind"), sw.child("kind"))
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
    from .storage import normalize

    return normalize(store)


def _storage_options(d: Any, store: str, where: Where) -> dict[str, Any]:
    """``storage_options:`` fsspec keyword arguments for a URL store (endpoint, credentials)."""
    from .storage import is_local

    if d is None:
        return {}
    options = dict(_mapping(d, where))
    if options and is_local(store):
        raise where.error(f"storage_options apply to fsspec URLs (s3://bucket/x.zarr, ...), but "
                          f"store {store!r} is a local path; remove them or use a URL")
    return options


def _splits_from_dict(d: Any, where: Where, schema: Schema) -> tuple[SplitSpec, ...]:
    """``splits: {name: {method, fractions, seed, by, k, group}}``; ``by`` heads must exist."""
    specs = []
    for name, sd in _mapping(d, where).items():
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
