"""``npy``: memory-mapped arrays, as ``.npy`` files or as raw binary files plus a metadata JSON.

Two layouts, read with ``np.load(mmap_mode="r")`` / ``np.memmap`` so nothing is loaded until a
task slices its rows:

1. ``.npy`` files, one per array: ``features: X.npy``, ``labels: "y_{head}.npy"``,
   ``masks: "m_{head}.npy"``, optional ``group: g.npy``. ``labels``/``masks`` may also name one
   ``.npz`` written by ``np.savez`` holding one array per head (``chunkstore export --format
   npy`` writes that), mapped in place.
2. One flat binary file (or several) described by ``metadata: meta.json``::

       {"file": "data.bin",
        "arrays": {"features":    {"dtype": "float32", "shape": [N, F], "offset": 0},
                   "labels/move": {"dtype": "int16", "shape": [N], "offset": 8192},
                   "masks/move":  {"dtype": "int8", "shape": [N, 5], "offset": 12288,
                                   "file": "masks.bin"},
                   "group":       {"file": "group.npy"}},
        "feature_names": ["a", "b", ...],
        "entities": [[0, 120], [120, 400]]   or  [{"id": 7, "start": 0, "stop": 120}, ...]}

   Files are relative to the JSON; ``offset`` is in bytes (default 0); an entry whose file
   ends in ``.npy`` needs no dtype or shape. ``feature_names`` and ``entities`` are optional.

Items are the entities (in the given order; rows outside every entity are not ingested), else
blocks of ``item_rows`` rows. With entities and no ``group`` array, a row's group id is its
entity's ``id`` (or the entity's index).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import StrictStr, model_validator

from chunkstore.core.schema import PositiveInt, Schema, Where, default_feature_names, invalid
from chunkstore.errors import SourceError
from chunkstore.sources.base import Batch, Source, SourceOptions
from chunkstore.sources.files import PerHead, PerHeadFiles, npz_member_memmap


@dataclass(frozen=True)
class ArrayRef:
    """Where one array lives: a ``.npy``, a member of a stored ``.npz``, or raw bytes."""

    path: str
    member: str | None = None
    dtype: str | None = None
    shape: tuple[int, ...] | None = None
    offset: int = 0

    def open(self) -> NDArray[Any]:
        """A read-only memory map; SourceError naming the file when that is impossible."""
        try:
            if self.member is not None:
                return npz_member_memmap(self.path, self.member)
            if self.dtype is None:
                return np.load(self.path, mmap_mode="r", allow_pickle=False)
            return _raw_memmap(self.path, np.dtype(self.dtype), self.shape or (), self.offset)
        except SourceError:
            raise
        except FileNotFoundError as e:
            raise SourceError(f"npy source: file {self.path!r} not found") from e
        except (OSError, ValueError) as e:
            raise SourceError(f"npy source: cannot map {self.path!r}: {e}") from e


def _raw_memmap(path: str, dtype: np.dtype[Any], shape: tuple[int, ...], offset: int
                ) -> NDArray[Any]:
    need = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    size = os.path.getsize(path)
    if size < need:
        raise SourceError(f"npy source: {path!r} has {size:,} bytes; dtype {dtype} shape "
                          f"{list(shape)} at offset {offset} needs {need:,}; check the metadata "
                          "JSON")
    if 0 in shape:
        return np.empty(shape, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)


class NpyOptions(SourceOptions):
    """``kind: npy``: ``features``/``labels``/``masks`` (.npy files) or one ``metadata`` JSON."""

    features: StrictStr | None = None
    labels: PerHeadFiles | None = None
    masks: PerHeadFiles | None = None
    group: StrictStr | None = None
    metadata: StrictStr | None = None
    item_rows: PositiveInt = 65536

    @model_validator(mode="after")
    def _one_layout(self) -> NpyOptions:
        given = self.model_fields_set
        if self.metadata is not None:
            extra = sorted({"features", "labels", "masks", "group"} & given)
            if extra:
                raise invalid("give either metadata (the flat-file layout) or "
                              "features/labels/masks (.npy files)", extra[0])
            return self
        for key in ("features", "labels", "masks"):
            if getattr(self, key) is None:
                raise invalid("missing required key (or give metadata: a JSON describing a "
                              "flat binary file)", key)
        for key in ("labels", "masks"):
            template = getattr(self, key).template
            if template is not None and "{head}" not in template \
                    and not template.endswith(".npz"):
                raise invalid(f"expected a template with '{{head}}' (one .npy per head) or an "
                              f".npz with one array per head, found {template!r}", key)
        return self

    def to_dict(self) -> dict[str, Any]:
        if self.metadata is not None:
            return {"metadata": self.metadata, "item_rows": self.item_rows}
        labels, masks = self._files()
        return {"features": self.features, "labels": labels.to_config(),
                "masks": masks.to_config(), "group": self.group, "item_rows": self.item_rows}

    def _files(self) -> tuple[PerHead, PerHead]:
        """labels and masks of the .npy layout (set whenever metadata is not: _one_layout)."""
        if self.labels is None or self.masks is None:
            raise SourceError("npy source: labels and masks are required without metadata")
        return self.labels, self.masks

    def resolve_schema(self, schema: Schema, where: Where) -> Schema:
        """Take feature names from the metadata JSON's ``feature_names``, if it has them."""
        if self.metadata is None:
            return schema
        names = parse_metadata(self.metadata, schema).feature_names
        if names is None:
            return schema
        if schema.feature_names == default_feature_names(schema.n_features):
            return dataclasses.replace(schema, feature_names=names)
        if names != schema.feature_names:
            raise SourceError(f"npy metadata {self.metadata!r}: feature_names differ from "
                              "schema.features.names; drop the names from the config to use "
                              "the file's, or fix them")
        return schema


@dataclass(frozen=True)
class Layout:
    """Every array of the source plus optional names and entity row ranges."""

    arrays: dict[str, ArrayRef]  # features, labels/<h>, masks/<h>, group (optional)
    feature_names: tuple[str, ...] | None = None
    entities: tuple[tuple[int, int, int], ...] | None = None  # (start, stop, id)


def npy_layout(o: NpyOptions, schema: Schema) -> Layout:
    """The arrays named by the options (either layout)."""
    if o.metadata is not None:
        return parse_metadata(o.metadata, schema)
    labels, masks = o._files()
    arrays = {"features": ArrayRef(o.features or "")}
    for key, spec in (("labels", labels), ("masks", masks)):
        for h in schema.heads:
            path = spec.get(h.name)
            arrays[f"{key}/{h.name}"] = (ArrayRef(path, member=h.name) if path.endswith(".npz")
                                         else ArrayRef(path))
    if o.group:
        arrays["group"] = ArrayRef(o.group)
    return Layout(arrays)


def parse_metadata(path: str, schema: Schema) -> Layout:
    """Read and validate a flat-layout metadata JSON (see the module docstring)."""
    def fail(key: str, msg: str) -> SourceError:
        return SourceError(f"npy metadata {path!r}, key {key!r}: {msg}")

    try:
        with open(path) as fh:
            meta = json.load(fh)
    except FileNotFoundError as e:
        raise SourceError(f"npy metadata {path!r} not found; check source.metadata") from e
    except (OSError, ValueError) as e:
        raise SourceError(f"npy metadata {path!r} is not readable JSON: {e}") from e
    if not isinstance(meta, dict) or not isinstance(meta.get("arrays"), dict):
        raise fail("arrays", "expected an object mapping array names to {file, dtype, shape, "
                   "offset}")
    unknown = sorted(set(meta) - {"file", "arrays", "feature_names", "entities"})
    if unknown:
        raise fail(unknown[0], "unknown key; allowed: file, arrays, feature_names, entities")
    base = os.path.dirname(path)
    required = ["features", *(f"{k}/{h.name}" for k in ("labels", "masks") for h in schema.heads)]
    allowed = {*required, "group"}
    arrays = {}
    for name, spec in meta["arrays"].items():
        key = f"arrays.{name}"
        if name not in allowed:
            raise fail(key, f"unknown array; expected {sorted(allowed)}")
        if not isinstance(spec, dict) or not set(spec) <= {"file", "dtype", "shape", "offset"}:
            raise fail(key, f"expected {{file, dtype, shape, offset}}, found {spec!r}")
        file = spec.get("file", meta.get("file"))
        if not isinstance(file, str):
            raise fail(key, "no file: give arrays.<name>.file or a top-level file")
        file = os.path.join(base, file)
        if file.endswith(".npy") and "dtype" not in spec:
            arrays[name] = ArrayRef(file)
            continue
        try:
            dtype = np.dtype(spec["dtype"]).str
            shape = tuple(int(s) for s in spec["shape"])
            offset = int(spec.get("offset", 0))
        except (KeyError, TypeError, ValueError) as e:
            raise fail(key, f"expected dtype, shape and optional offset, found {spec!r} ({e})") \
                from e
        if np.dtype(dtype).hasobject or offset < 0 or any(s < 0 for s in shape):
            raise fail(key, f"invalid dtype/shape/offset {spec!r}")
        arrays[name] = ArrayRef(file, dtype=dtype, shape=shape, offset=offset)
    missing = [n for n in required if n not in arrays]
    if missing:
        raise fail("arrays", f"missing {missing}")
    names = meta.get("feature_names")
    if names is not None and (not isinstance(names, list)
                              or not all(isinstance(n, str) for n in names)):
        raise fail("feature_names", "expected a list of strings")
    return Layout(arrays, None if names is None else tuple(names),
                  _entities(meta.get("entities"), lambda m: fail("entities", m)))


def _entities(raw: Any, fail: Any) -> tuple[tuple[int, int, int], ...] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise fail("expected a list of [start, stop] or {id, start, stop}")
    out = []
    for i, e in enumerate(raw):
        if isinstance(e, list) and len(e) == 2:
            start, stop, ident = e[0], e[1], i
        elif isinstance(e, dict) and {"start", "stop"} <= set(e) <= {"start", "stop", "id"}:
            start, stop, ident = e["start"], e["stop"], e.get("id", i)
        else:
            raise fail(f"entity {i} is {e!r}; expected [start, stop] or {{id, start, stop}}")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (start, stop, ident)):
            raise fail(f"entity {i} is {e!r}; start, stop and id must be integers")
        if not 0 <= start <= stop:
            raise fail(f"entity {i} has start {start}, stop {stop}; expected 0 <= start <= stop")
        out.append((start, stop, ident))
    spans = sorted(out)
    for (_, a1, ia), (b0, _, ib) in zip(spans, spans[1:], strict=False):
        if b0 < a1:
            raise fail(f"entities {ia} and {ib} overlap (rows {b0}..{a1 - 1}); each row may "
                       "belong to one entity")
    return tuple(out)


class NpySource(Source):
    """Items are entities or fixed row blocks of memory-mapped arrays."""

    Options = NpyOptions
    options: NpyOptions

    @cached_property
    def layout(self) -> Layout:
        return npy_layout(self.options, self.schema)

    @cached_property
    def arrays(self) -> dict[str, NDArray[Any]]:
        """Every array, memory-mapped and checked against the schema and each other."""
        arrays = {name: ref.open() for name, ref in self.layout.arrays.items()}
        refs = self.layout.arrays
        f = arrays["features"]
        if f.ndim != 2 or f.shape[1] != self.schema.n_features:
            raise SourceError(f"npy source: features {refs['features'].path!r} have shape "
                              f"{f.shape}; expected (rows, {self.schema.n_features})")
        for name, a in arrays.items():
            if a.dtype.kind not in "biuf":
                raise SourceError(f"npy source: {name} {refs[name].path!r} has dtype {a.dtype}; "
                                  "expected a numeric array")
            if a.ndim == 0 or a.shape[0] != f.shape[0]:
                raise SourceError(f"npy source: {name} {refs[name].path!r} has shape {a.shape} "
                                  f"but the features have {f.shape[0]} rows (mismatched row "
                                  "counts); every array needs one row per sample")
        for h in self.schema.heads:
            m = arrays[f"masks/{h.name}"]
            if m.ndim != 2 or m.shape[1] != h.classes:
                raise SourceError(f"npy source: masks/{h.name} {refs[f'masks/{h.name}'].path!r} "
                                  f"have shape {m.shape}; expected ({f.shape[0]}, {h.classes})")
        return arrays

    @cached_property
    def _items(self) -> list[tuple[int, int, int]]:
        """(start row, stop row, entity id) of every item."""
        n = int(self.arrays["features"].shape[0])
        entities = self.layout.entities
        if entities is None:
            step = self.options.item_rows
            return [(s, min(s + step, n), -1) for s in range(0, n, step)] or [(0, 0, -1)]
        for i, (_, stop, _) in enumerate(entities):
            if stop > n:
                raise SourceError(f"npy metadata {self.options.metadata!r}: entity {i} ends at "
                                  f"row {stop} but the arrays have {n} rows")
        return list(entities)

    @property
    def has_group(self) -> bool:
        return "group" in self.layout.arrays or self.layout.entities is not None

    def describe(self, item: int) -> str:
        start, stop, ident = self._items[item]
        what = f"entity {ident}" if self.layout.entities is not None else "block"
        return f"npy {what} rows [{start}, {stop}) of {self.layout.arrays['features'].path!r} " \
               f"(item {item})"

    def counts(self) -> list[int]:
        return [stop - start for start, stop, _ in self._items]

    def read(self, item: int, start: int, stop: int) -> Batch:
        first, _, ident = self._items[item]
        rows = slice(first + start, first + stop)
        a = self.arrays
        heads = [h.name for h in self.schema.heads]
        group = None
        if "group" in a:
            group = a["group"][rows]
        elif self.has_group:
            group = np.full(stop - start, ident, dtype=np.int64)
        return Batch(a["features"][rows], {h: a[f"labels/{h}"][rows] for h in heads},
                     {h: a[f"masks/{h}"][rows] for h in heads}, group)
