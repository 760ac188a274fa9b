"""Source kinds by name -> ``"module:Class"``, imported lazily so optional backends cost nothing.

Modelled on fsspec's registry: an unknown kind lists the known ones; a kind whose optional
dependency is missing says which extra to install.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol

from chunkstore.core.schema import Schema, Where
from chunkstore.errors import ConfigError
from chunkstore.sources.base import Source, SourceOptions


class SourceSpec(Protocol):
    """A parsed ``source:`` section (:class:`chunkstore.config.SourceConfig`)."""

    @property
    def kind(self) -> str: ...

    @property
    def options(self) -> Any: ...

registry: dict[str, tuple[str, str | None]] = {
    # kind: ("module:Class", pip extra that provides its dependency)
    "synthetic": ("chunkstore.sources.synthetic:SyntheticSource", None),
    "npz": ("chunkstore.sources.npz:NpzSource", None),
    "parquet": ("chunkstore.sources.parquet:ParquetSource", "parquet"),
    "hdf5": ("chunkstore.sources.hdf5:Hdf5Source", "hdf5"),
    "npy": ("chunkstore.sources.npy:NpySource", None),
    "python": ("chunkstore.sources.python:PythonSource", None),
}


def source_class(kind: str, where: Where | None = None) -> type[Source]:
    """The class implementing ``kind``; raises ConfigError naming the known kinds."""
    if kind not in registry:
        msg = f"unknown source kind {kind!r}; known kinds are {sorted(registry)}"
        raise where.error(msg) if where is not None else ConfigError(msg)
    target, extra = registry[kind]
    module, _, name = target.partition(":")
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        hint = f"pip install 'chunkstore[{extra}]'" if extra else "reinstall chunkstore"
        raise ConfigError(f"source kind {kind!r} needs {e.name!r}, which is not installed: "
                          f"{hint}") from e
    cls: type[Source] = getattr(mod, name)
    return cls


def options_class(kind: str, where: Where) -> type[SourceOptions]:
    return source_class(kind, where).Options


def resolved_schema(options: SourceOptions, schema: Schema, where: Where) -> Schema:
    """The schema with what the source itself knows filled in, e.g. feature names.

    Kinds whose files name their columns (parquet column names, an HDF5 ``feature_names``
    attribute, an npy metadata JSON) implement ``resolve_schema``: a schema that gives only a
    feature count gets the names from the files, a schema that lists names must agree with them.
    Other kinds leave the schema unchanged.
    """
    resolve = getattr(options, "resolve_schema", None)
    return schema if resolve is None else resolve(schema, where)


def open_source(config: SourceSpec, schema: Schema) -> Source:
    """Build the source described by a parsed ``source:`` section."""
    return source_class(config.kind)(config.options, schema)
