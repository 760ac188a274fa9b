"""``parquet``: tables from Polars/pandas/Spark pipelines, one item per row group (pyarrow).

Row counts come from the files' footers, so counting reads no data; a task reads only the
columns it needs from the row groups it covers. Columns are chosen by the config:

- features: an explicit list, ``{prefix: ...}``, ``{regex: ...}`` or ``all_others`` (every
  column that is not a label, mask or group column, minus ``exclude``). With no ``features``
  key, the schema's feature names are the columns if the schema lists names, else
  ``all_others``. The store's feature names are the column names (see :meth:`resolve_schema`).
- labels: one integer column per head (``label_{head}`` by default).
- masks: per head, a list column of width K (``mask_{head}`` by default), or K scalar columns
  (a template with ``{k}``, an explicit list, ``{prefix: ...}`` or ``{regex: ...}``).
- group: an optional integer column -> ``meta/group``.

Nulls become NaN in features; a null label, mask or group is an error naming the row.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from functools import cached_property
from typing import Annotated, Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from numpy.typing import NDArray
from pydantic import PlainValidator, StrictStr, model_validator
from pydantic_core import PydanticCustomError

from chunkstore.core.schema import Schema, Where, invalid
from chunkstore.errors import SourceError
from chunkstore.sources.base import Batch, Source, SourceOptions
from chunkstore.sources.files import (
    Paths,
    PerHead,
    PerHeadNames,
    PerHeadSelectors,
    expand_paths,
    thaw,
)
from chunkstore.sources.parquet_columns import (
    ALL_OTHERS,
    Columns,
    difference,
    resolve_columns,
    selector,
)

SUFFIXES = (".parquet", ".parq", ".pq")
READ_BATCH = 8192  # rows decoded at a time when a task needs only a slice of a row group


FeatureSelector = Annotated[Any, PlainValidator(
    lambda v: None if v is None else selector(v, allow_all_others=True),
    json_schema_input_type=Literal["all_others"] | list[str] | dict[Literal["prefix", "regex"],
                                                                    str] | None)]


class ParquetOptions(SourceOptions):
    """``kind: parquet``: which columns hold features, labels, masks and group ids."""

    paths: Paths
    features: FeatureSelector = None  # None | "all_others" | names | (("prefix"|"regex", s),)
    exclude: tuple[StrictStr, ...] = ()
    labels: PerHeadNames = PerHead("label_{head}")
    masks: PerHeadSelectors = PerHead("mask_{head}")
    group: StrictStr | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ParquetOptions:
        if self.exclude and self.features not in (None, ALL_OTHERS):
            raise invalid("only used with features: all_others", "exclude")
        for head, spec in self.masks.mapping:
            if not isinstance(spec, str):
                try:
                    selector(thaw(spec), allow_all_others=False)
                except PydanticCustomError as e:
                    raise invalid(e.message(), "masks", head) from None
        return self

    def to_dict(self) -> dict[str, Any]:
        return {"paths": list(self.paths), "features": thaw(self.features),
                "exclude": list(self.exclude), "labels": self.labels.to_config(),
                "masks": thaw(self.masks.to_config()), "group": self.group}

    def resolve_schema(self, schema: Schema, where: Where) -> Schema:
        """The schema with feature names taken from the selected columns of the first file.

        If the schema gives only a count, the selected columns must number that many and the
        store's feature names become the column names. If it lists names, they must equal the
        selected columns (with no ``features`` key they *are* the selection).
        """
        files = expand_paths(self.paths, "parquet", SUFFIXES)
        cols = resolve_columns(self, schema, _read_schema(files[0]), files[0])
        return dataclasses.replace(schema, feature_names=cols.features)


def _read_schema(path: str) -> pa.Schema:
    try:
        return pq.read_schema(path)
    except FileNotFoundError as e:
        raise SourceError(f"parquet file {path!r} not found; check source.paths") from e
    except (OSError, pa.ArrowException) as e:
        raise SourceError(f"parquet file {path!r} is unreadable: {e}") from e


def _fill_features(table: pa.Table, cols: tuple[str, ...], out: NDArray[Any]) -> None:
    """Write the feature columns of ``table`` into the rows of ``out`` (F, n); nulls -> NaN."""
    for j, c in enumerate(cols):
        col = table.column(c)
        if not pa.types.is_floating(col.type):
            col = col.cast(pa.float64())
        if col.null_count:
            col = pc.fill_null(col, pa.scalar(float("nan"), col.type))
        out[j] = col.to_numpy()


def _slices(pf: pq.ParquetFile, rg: int, start: int, stop: int, columns: list[str]
            ) -> Iterator[tuple[int, pa.Table]]:
    """``(offset from start, rows)`` covering rows ``[start, stop)`` of row group ``rg``, batch
    by batch; decoding stops after the batch holding ``stop - 1``."""
    if stop <= start:
        return
    pos = 0
    for b in pf.iter_batches(batch_size=READ_BATCH, row_groups=[rg], columns=columns):
        lo, hi = max(start, pos), min(stop, pos + b.num_rows)
        if hi > lo:
            yield lo - start, pa.Table.from_batches([b.slice(lo - pos, hi - lo)])
        pos += b.num_rows
        if pos >= stop:
            break


class ParquetSource(Source):
    """One item per row group, files in sorted path order, row groups in file order."""

    Options = ParquetOptions
    options: ParquetOptions

    @cached_property
    def files(self) -> list[str]:
        return expand_paths(self.options.paths, "parquet", SUFFIXES)

    @cached_property
    def columns(self) -> Columns:
        return resolve_columns(self.options, self.schema, _read_schema(self.files[0]),
                               self.files[0])

    @cached_property
    def _items(self) -> list[tuple[int, int, int]]:
        """(file index, row group, rows) of every item; checks every file's columns."""
        items: list[tuple[int, int, int]] = []
        for f, path in enumerate(self.files):
            meta = self._file(path).metadata
            cols = resolve_columns(self.options, self.schema, meta.schema.to_arrow_schema(), path)
            if cols != self.columns:
                raise SourceError(f"parquet file {path!r} selects other columns than "
                                  f"{self.files[0]!r} ({difference(cols, self.columns)}); every "
                                  "file needs the same columns")
            self._check_null_stats(path, meta)
            items.extend((f, rg, meta.row_group(rg).num_rows) for rg in range(meta.num_row_groups))
        return items

    def _check_null_stats(self, path: str, meta: pq.FileMetaData) -> None:
        """Fail before anything is written when the footer already shows a null label."""
        c = self.columns
        required = [*c.labels.values(), *([c.group] if c.group else [])]
        index = {meta.schema.column(i).path: i for i in range(meta.num_columns)}
        for rg in range(meta.num_row_groups):
            for col in required:
                stats = meta.row_group(rg).column(index[col]).statistics
                if stats is not None and stats.has_null_count and stats.null_count:
                    raise SourceError(f"parquet file {path!r} row group {rg}: column {col!r} "
                                      f"has {stats.null_count} null values; labels and group ids "
                                      "must be set for every row (drop or fill those rows)")

    @cached_property
    def _open(self) -> dict[str, pq.ParquetFile]:
        return {}

    def _file(self, path: str) -> pq.ParquetFile:
        if path not in self._open:
            try:
                self._open[path] = pq.ParquetFile(path)
            except FileNotFoundError as e:
                raise SourceError(f"parquet file {path!r} not found; check source.paths") from e
            except (OSError, pa.ArrowException) as e:
                raise SourceError(f"parquet file {path!r} is unreadable: {e}") from e
        return self._open[path]

    @property
    def has_group(self) -> bool:
        return self.options.group is not None

    def describe(self, item: int) -> str:
        f, rg, _ = self._items[item]
        return f"parquet file {self.files[f]!r} row group {rg} (item {item})"

    def counts(self) -> list[int]:
        return [n for _, _, n in self._items]

    def read(self, item: int, start: int, stop: int) -> Batch:
        """Rows ``[start, stop)`` of a row group, decoded ``READ_BATCH`` rows at a time into
        the output arrays, so memory is the output plus one batch, not the whole row group."""
        f, rg, _ = self._items[item]
        c = self.columns
        pf = self._file(self.files[f])
        where = self.describe(item)
        types = {pf.schema_arrow.field(col).type for col in c.features}
        dtype = np.float32 if types <= {pa.float32()} else np.float64
        features = np.empty((len(c.features), stop - start), dtype=dtype)  # returned .T
        parts = []
        for pos, table in _slices(pf, rg, start, stop, c.all()):
            _fill_features(table, c.features, features[:, pos:pos + table.num_rows])
            parts.append(self._other_columns(table, where, start + pos))
        heads = {h.name: h.classes for h in self.schema.heads}

        def cat(key: str, tail: tuple[int, ...]) -> NDArray[Any]:
            return (np.concatenate([p[key] for p in parts]) if parts
                    else np.empty((0, *tail), dtype=np.int64))

        return Batch(features.T, {h: cat(f"labels/{h}", ()) for h in heads},
                     {h: cat(f"masks/{h}", (k,)) for h, k in heads.items()},
                     cat("group", ()) if c.group else None)

    def _other_columns(self, table: pa.Table, where: str, first_row: int
                       ) -> dict[str, NDArray[Any]]:
        """Labels, masks and group of one batch; a null names its row within the item."""
        c = self.columns

        def ints(col: str, what: str) -> NDArray[Any]:
            a = table.column(col)
            if a.null_count:
                row = int(pc.index(pc.is_null(a), True).as_py())
                raise SourceError(f"{where}, row {first_row + row} of the item: {what} (column "
                                  f"{col!r}) is null; it must be set for every row (drop or "
                                  "fill those rows)")
            return a.to_numpy()

        out = {f"labels/{h}": ints(col, f"the label of head {h!r}") for h, col in c.labels.items()}
        for h in self.schema.heads:
            kind, cols = c.masks[h.name]
            if kind == "scalars":
                what = f"the mask of head {h.name!r}"
                out[f"masks/{h.name}"] = np.stack([ints(col, what) for col in cols], axis=1)
            else:
                out[f"masks/{h.name}"] = self._list_mask(table, cols[0], h.name, h.classes,
                                                         where, first_row)
        if c.group:
            out["group"] = ints(c.group, "the group id")
        return out

    @staticmethod
    def _list_mask(table: pa.Table, col: str, head: str, classes: int, where: str,
                   start: int) -> NDArray[Any]:
        a = table.column(col).combine_chunks()
        n = len(a)
        if a.null_count:
            row = int(pc.index(pc.is_null(a), True).as_py())
            raise SourceError(f"{where}, row {start + row} of the item: the mask of head "
                              f"{head!r} (column {col!r}) is null; expected a list of {classes}")
        if not pa.types.is_fixed_size_list(a.type):
            lengths = pc.list_value_length(a).to_numpy(zero_copy_only=False)
            bad = np.flatnonzero(lengths != classes)
            if bad.size:
                raise SourceError(f"{where}, row {start + int(bad[0])} of the item: the mask of "
                                  f"head {head!r} (column {col!r}) has {lengths[bad[0]]} values; "
                                  f"expected {classes} (the head's classes)")
        values = a.flatten()
        if values.null_count:
            row = int(pc.index(pc.is_null(values), True).as_py()) // max(classes, 1)
            raise SourceError(f"{where}, row {start + row} of the item: the mask of head "
                              f"{head!r} (column {col!r}) holds a null value")
        return values.to_numpy(zero_copy_only=False).reshape(n, classes)
