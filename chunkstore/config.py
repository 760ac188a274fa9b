"""Config: a YAML file parsed with a strict ``yaml.SafeLoader`` and validated by pydantic v2.

Everything is validated up front, before a store is touched: an unknown key, a wrong type, a
missing field or a bad value is one :class:`ConfigError` that names the file and the key path.
:class:`ConfigFile` is the YAML as written (and :func:`config_json_schema` publishes it);
:class:`Config` is the resolved, frozen result the rest of the package uses.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    Tag,
    create_model,
    model_validator,
)
from pydantic.dataclasses import dataclass as pydantic_dataclass

from chunkstore.core.schema import (
    Compression,
    PositiveInt,
    Schema,
    SchemaSection,
    Section,
    Where,
    parse,
    refuse_unknown_keys,
    shown,
)
from chunkstore.core.splitspec import SplitSection, SplitSpec
from chunkstore.errors import ConfigError
from chunkstore.runtime.budget import check_declared
from chunkstore.runtime.yaml_loader import MAX_MESSAGE, BoundedLoader
from chunkstore.sources.base import SourceOptions
from chunkstore.sources.registry import options_class, registry, resolved_schema, source_class
from chunkstore.store.urls import is_local, normalize


def _auto_is_none(value: Any) -> Any:
    """``auto`` (or null) means "chunkstore decides": stored as None."""
    return None if value == "auto" else value


AutoInt = Annotated[PositiveInt | None, BeforeValidator(
    _auto_is_none, json_schema_input_type=Literal["auto"] | PositiveInt | None)]


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class IngestOptions:
    """``ingest:`` how to run: worker count, chunking, scheduler. ``None`` means auto."""

    workers: AutoInt = None
    chunk_rows: AutoInt = None
    task_chunks: AutoInt = None
    scheduler: StrictStr | None = None
    nan_policy: Literal["allow", "error"] = "allow"
    blosc_threads: PositiveInt = 1
    target_chunk_mib: Annotated[StrictFloat | StrictInt, Field(ge=0.01)] = 4.0

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        refuse_unknown_keys(data, {"workers", "chunk_rows", "task_chunks", "scheduler",
                                   "nan_policy", "blosc_threads", "target_chunk_mib"})
        return data

    def to_dict(self) -> dict[str, Any]:
        return {"workers": self.workers or "auto", "chunk_rows": self.chunk_rows or "auto",
                "task_chunks": self.task_chunks or "auto", "scheduler": self.scheduler,
                "nan_policy": self.nan_policy, "blosc_threads": self.blosc_threads,
                "target_chunk_mib": float(self.target_chunk_mib)}

    @classmethod
    def from_dict(cls, d: Any, where: Where) -> IngestOptions:
        return parse(cls, d, where)


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class StatsOptions:
    """``stats:`` what ingest computes online (merged into ``stats/all``).

    ``online``: every write task records its partial statistics and ingest merges them into
    ``stats/all``. ``correlation``: also accumulate the (F, F) co-moment matrix at ingest.
    Off by default: it is F^2 work per row, about 85% of the online statistics' CPU at
    F = 893 (0.22 of 0.26 s per 9,216-row task); ``chunkstore stats`` computes the same exact
    correlation lazily in one pass over the store when it is needed.
    """

    correlation: StrictBool = False
    online: StrictBool = True

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        refuse_unknown_keys(data, {"correlation", "online"})
        return data

    def to_dict(self) -> dict[str, Any]:
        return {"correlation": self.correlation, "online": self.online}

    @classmethod
    def from_dict(cls, d: Any, where: Where) -> StatsOptions:
        return parse(cls, d, where)


class ConfigFile(Section):
    """A config file as written. ``source`` is checked by its kind's ``Options`` model."""

    store: StrictStr = Field(description="local path or fsspec URL of the Zarr store")
    schema_: SchemaSection = Field(alias="schema")
    source: dict[str, Any] = Field(description="kind plus that kind's options")
    ingest: IngestOptions = Field(default_factory=IngestOptions)
    compression: Compression = Field(default_factory=Compression)
    stats: StatsOptions = Field(default_factory=StatsOptions)
    splits: dict[str, SplitSection] = Field(default_factory=dict,
                                            description="split array name -> spec")
    storage_options: dict[str, Any] | None = Field(
        default=None, description="fsspec options for a URL store (never saved in the store)")

    @model_validator(mode="before")
    @classmethod
    def _null_is_default(cls, data: Any) -> Any:
        """``ingest:`` with nothing under it (null in YAML) means the defaults."""
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None or k not in _OPTIONAL}
        return data


_OPTIONAL = ("ingest", "compression", "stats", "splits", "storage_options")


@dataclass(frozen=True)
class SourceConfig:
    """``source:`` — the kind plus its options, validated by that kind's ``Options`` class."""

    kind: str
    options: Any  # the kind's frozen Options model (a SourceOptions)

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
        """Validate a config mapping (as read from YAML); ``file`` names it in messages.

        Raises
        ------
        ConfigError
            ``config 'demo.yaml', key 'schema.heads.move': expected an integer >= 1, found 0``.
        """
        try:
            return cls._from_dict(d, file)
        except ConfigError as e:
            text = str(e)
            if len(text) <= MAX_MESSAGE:
                raise
            raise ConfigError(f"{text[:MAX_MESSAGE]}... (message cut: {len(text):,} "
                              "characters)") from None

    @classmethod
    def _from_dict(cls, d: Any, file: str) -> Config:
        check_declared_sizes(d, file)  # before anything is built from the declared sizes
        top = Where(file)
        f = parse(ConfigFile, d, top)
        store = normalize_store(f.store)
        storage_options = _storage_options(f.storage_options, store,
                                           top.child("storage_options"))
        schema = f.schema_.to_schema()
        sw = top.child("source")
        kind, options = parse_source(f.source, sw, schema)
        schema = resolved_schema(options, schema, sw)  # e.g. names from Parquet columns
        return cls(store=store, schema=schema, source=SourceConfig(kind, options),
                   ingest=f.ingest, compression=f.compression, stats=f.stats, file=file,
                   splits=_splits(f.splits, top.child("splits"), schema),
                   storage_options=storage_options)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def check_declared_sizes(d: Any, file: str) -> None:
    """Features, classes, rows and the co-moment matrix, checked on the raw mapping (see
    :func:`chunkstore.runtime.budget.check_declared`); malformed values are left to the
    schema's own messages."""
    if not isinstance(d, dict):
        return
    def section(value: Any) -> dict[Any, Any]:
        return value if isinstance(value, dict) else {}

    schema = section(d.get("schema"))
    features = schema.get("features")
    count = _int(features.get("count") if isinstance(features, dict) else features)
    classes = {str(h): k for h, v in section(schema.get("heads")).items()
               if (k := _int(v.get("classes") if isinstance(v, dict) else v)) is not None}
    stats, source = section(d.get("stats")), section(d.get("source"))
    check_declared(repr(file), features=count, classes=classes,
                   correlation=stats.get("correlation") is True,
                   rows=_int(source.get("n_samples")))


def parse_source(d: dict[str, Any], where: Where, schema: Schema) -> tuple[str, SourceOptions]:
    """``source: {kind, ...}`` -> the kind and its validated ``Options`` model."""
    options = dict(d)
    if "kind" not in options:
        raise where.child("kind").error("missing required key (e.g. synthetic or npz)")
    kind = options.pop("kind")
    if not isinstance(kind, str):
        raise where.child("kind").error(f"expected a string, found {shown(kind)}")
    return kind, options_class(kind, where.child("kind")).from_dict(options, where, schema)


def normalize_store(store: str) -> str:
    """``file://`` URLs become local paths; see :func:`chunkstore.storage.normalize`."""
    return normalize(store)


def _storage_options(d: dict[str, Any] | None, store: str, where: Where) -> dict[str, Any]:
    """``storage_options:`` fsspec keyword arguments for a URL store (endpoint, credentials)."""
    options = dict(d or {})
    if options and is_local(store):
        raise where.error(f"storage_options apply to fsspec URLs (s3://bucket/x.zarr, ...), but "
                          f"store {store!r} is a local path; remove them or use a URL")
    return options


def _splits(d: dict[str, SplitSection], where: Where, schema: Schema) -> tuple[SplitSpec, ...]:
    """``splits: {name: {method, fractions, seed, by, k, group}}``; ``by`` heads must exist."""
    specs = []
    heads = [h.name for h in schema.heads]
    for name, section in d.items():
        spec = section.to_spec(name)
        bad = spec.problem()
        if bad:
            raise where.child(name).child(bad[0]).error(bad[1])
        if spec.by is not None and spec.method != "ordered" and spec.by not in heads:
            raise where.child(name).child("by").error(
                f"unknown head {spec.by!r}; the schema's heads are {heads}")
        specs.append(spec)
    return tuple(specs)


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
        data = yaml.load(text, Loader=BoundedLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise ConfigError(f"config {str(p)!r} is not valid YAML: {e}") from e
    return Config.from_dict(data, file=str(p))


def config_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a whole config file, for editors and CI.

    ``source`` is a union over the registered kinds, discriminated by ``kind``; a kind whose
    optional dependency is not installed is left out. Checks that need files or the schema
    (columns exist, one entry per head) are beyond JSON Schema and run at load time.

    Returns
    -------
    dict: the schema, ready for ``json.dumps``.

    Examples
    --------
    >>> schema = config_json_schema()
    >>> schema["properties"]["source"]["discriminator"]["propertyName"]
    'kind'
    """
    variants: list[Any] = []
    for kind in sorted(registry):
        try:
            options = source_class(kind).Options
        except ConfigError:  # optional dependency missing: that kind cannot be used here
            continue
        fields: dict[str, Any] = {"kind": (Literal[kind], Field(description="source kind"))}
        model = create_model(f"{options.__name__}_{kind}", __base__=options,
                             __doc__=options.__doc__ or f"source kind {kind!r}", **fields)
        variants.append(Annotated[model, Tag(kind)])
    union: Any = Annotated[Union[tuple(variants)], Field(discriminator="kind")]  # noqa: UP007
    fields = {"source": (union, Field(description="kind plus that kind's options"))}
    full = create_model("ChunkstoreConfig", __base__=ConfigFile, __doc__=ConfigFile.__doc__,
                        **fields)
    schema = full.model_json_schema(by_alias=True)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
