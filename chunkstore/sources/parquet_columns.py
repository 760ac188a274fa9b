"""Which columns of a Parquet file a ``parquet`` source reads (see :mod:`.parquet`).

Pure selection logic over a file's Arrow schema: the config's selectors (an explicit list,
``{prefix: ...}``, ``{regex: ...}``, ``all_others``) resolved to column names, checked against
the store's schema, with messages that name the file and the option to fix.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import pyarrow as pa

from chunkstore.core.schema import HeadSpec, Schema, default_feature_names, invalid, shown
from chunkstore.errors import SourceError
from chunkstore.sources.files import PerHead, thaw

ALL_OTHERS = "all_others"


class ColumnChoice(Protocol):
    """The options that choose columns (:class:`chunkstore.sources.parquet.ParquetOptions`)."""

    @property
    def features(self) -> Any: ...
    @property
    def exclude(self) -> tuple[str, ...]: ...
    @property
    def labels(self) -> PerHead: ...
    @property
    def masks(self) -> PerHead: ...
    @property
    def group(self) -> str | None: ...


def selector(value: Any, *, allow_all_others: bool) -> Any:
    """Validate a column selector: a list of names, {prefix: s}, {regex: s} or all_others."""
    if value == ALL_OTHERS and allow_all_others:
        return ALL_OTHERS
    if isinstance(value, list | tuple) and value and all(isinstance(c, str) for c in value):
        return tuple(value)
    if isinstance(value, Mapping) and len(value) == 1:
        (key, pattern), = value.items()
        if key in ("prefix", "regex") and isinstance(pattern, str):
            if key == "regex":
                try:
                    re.compile(pattern)
                except re.error as e:
                    raise invalid(f"invalid regex {pattern!r}: {e}") from e
            return ((key, pattern),)
    others = ", 'all_others'" if allow_all_others else ""
    raise invalid(f"expected a list of column names, {{prefix: ...}}, {{regex: ...}}{others}; "
                  f"found {shown(value)}")


@dataclass(frozen=True)
class Columns:
    """The column names a source reads, resolved against a file's schema."""

    features: tuple[str, ...]
    labels: dict[str, str]
    masks: dict[str, tuple[str, tuple[str, ...]]]  # head -> ("list"|"scalars", columns)
    group: str | None

    def all(self) -> list[str]:
        names = [*self.features, *self.labels.values(),
                 *(c for _, cols in self.masks.values() for c in cols)]
        return names + ([self.group] if self.group else [])


def _select(spec: Any, names: list[str]) -> list[str]:
    if isinstance(spec, tuple) and len(spec) == 1 and isinstance(spec[0], tuple):
        (key, pattern), = spec
        if key == "prefix":
            return [n for n in names if n.startswith(pattern)]
        rx = re.compile(pattern)
        return [n for n in names if rx.fullmatch(n)]
    return list(spec)


def _has_default_names(schema: Schema) -> bool:
    return schema.feature_names == default_feature_names(schema.n_features)


def resolve_columns(o: ColumnChoice, schema: Schema, arrow: pa.Schema, path: str) -> Columns:
    """Resolve the options' selectors against one file's schema; SourceError if they do not fit.

    Raises
    ------
    SourceError
        For a missing column, a selector that matches the wrong number of columns, feature
        names that differ from the columns, or a column of the wrong type.
    """
    r = _FileColumns(arrow, path)
    labels = {h.name: r.need(o.labels.get(h.name), f"labels of head {h.name!r}")
              for h in schema.heads}
    masks = {h.name: r.mask(o.masks.get(h.name), h) for h in schema.heads}
    group = r.need(o.group, "group column") if o.group else None
    used = {*labels.values(), *(c for _, cs in masks.values() for c in cs), group}
    return Columns(r.features(o, schema, used), labels, masks, group)


@dataclass(frozen=True)
class _FileColumns:
    """The steps of :func:`resolve_columns` against one file's columns."""

    arrow: pa.Schema
    path: str

    def need(self, col: str, what: str) -> str:
        names = list(self.arrow.names)
        if col not in names:
            shown_names = names[:12] + (["..."] if len(names) > 12 else [])
            raise SourceError(f"parquet file {self.path!r}: no column {col!r} ({what}); the file "
                              f"has columns {shown_names}; fix source.{what.split()[0]} in the "
                              "config")
        return col

    def mask(self, spec: Any, h: HeadSpec) -> tuple[str, tuple[str, ...]]:
        """``("list", (col,))`` for one list column of width K, else ``("scalars", K cols)``."""
        what, path = f"masks of head {h.name!r}", self.path
        if isinstance(spec, str) and "{k}" not in spec:
            col = self.need(spec, what)
            t = self.arrow.field(col).type
            if not (pa.types.is_list(t) or pa.types.is_large_list(t)
                    or pa.types.is_fixed_size_list(t)):
                raise SourceError(f"parquet file {path!r}: mask column {col!r} of head {h.name!r} "
                                  f"has type {t}; expected a list column of width {h.classes}, "
                                  "or K scalar columns (e.g. masks: 'mask_{head}_{k}')")
            if pa.types.is_fixed_size_list(t) and t.list_size != h.classes:
                raise SourceError(f"parquet file {path!r}: mask column {col!r} of head {h.name!r} "
                                  f"is a list of width {t.list_size}; expected width {h.classes} "
                                  "(the head's classes)")
            return "list", (col,)
        if isinstance(spec, str):
            cols = [spec.replace("{k}", str(k)) for k in range(h.classes)]
        else:
            cols = _select(spec, list(self.arrow.names))
        if len(cols) != h.classes:
            raise SourceError(f"parquet file {path!r}: the mask columns of head {h.name!r} "
                              f"({cols[:6]}{'...' if len(cols) > 6 else ''}) are {len(cols)}; "
                              f"expected {h.classes} (the head's classes)")
        return "scalars", tuple(self.need(c, what) for c in cols)

    def features(self, o: ColumnChoice, schema: Schema, used: set[str | None]
                 ) -> tuple[str, ...]:
        """The feature columns: numeric, as many as the schema's features, named alike."""
        path, spec = self.path, o.features
        if spec is None:
            spec = ALL_OTHERS if _has_default_names(schema) else schema.feature_names
        if spec == ALL_OTHERS:
            how = "features: all_others"
            features = [n for n in self.arrow.names if n not in used and n not in o.exclude]
        else:
            how = f"features: {thaw(spec)!r}" if o.features is not None else "schema.features.names"
            features = _select(spec, list(self.arrow.names))
        for c in features:
            t = self.arrow.field(self.need(c, "features")).type
            if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)
                    or pa.types.is_null(t)):
                raise SourceError(f"parquet file {path!r}: feature column {c!r} has type {t}; "
                                  "expected a numeric or boolean column (leave it out with "
                                  "source.exclude or an explicit source.features list)")
        if len(features) != schema.n_features:
            shown_cols = features[:6] + (["..."] if len(features) > 6 else [])
            raise SourceError(f"parquet file {path!r}: {how} selects {len(features)} columns "
                              f"{shown_cols}; the schema has {schema.n_features} features; make "
                              "schema.features match the columns or change source.features")
        if not _has_default_names(schema) and tuple(features) != schema.feature_names:
            diff = next(i for i, (a, b) in enumerate(zip(features, schema.feature_names,
                                                         strict=True)) if a != b)
            raise SourceError(f"parquet file {path!r}: feature column {diff} is "
                              f"{features[diff]!r} but schema.features.names[{diff}] is "
                              f"{schema.feature_names[diff]!r}; the store's feature names are "
                              "the column names: drop names from the schema or fix them")
        return tuple(features)


def difference(a: Columns, b: Columns) -> str:
    for name in ("features", "labels", "masks", "group"):
        x, y = getattr(a, name), getattr(b, name)
        if x != y:
            if name == "features":
                extra, missing = sorted(set(x) - set(y))[:5], sorted(set(y) - set(x))[:5]
                return (f"feature columns: extra {extra}, missing {missing}" if extra or missing
                        else "the same feature columns in another order")
            return f"{name}: {x} instead of {y}"
    return "same"
