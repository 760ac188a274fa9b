"""``python``: the user's own preprocessing code is the source.

``items`` lists raw items (replay files, genes, shards); ``process(item)`` turns one item into a
mapping ``{"features": (n, F), "labels": {head: (n,)}, "masks": {head: (n, K)}, "group": (n,)}``
with any ``n >= 0``; ``count(item)``, when given, says ``n`` without processing.

Provenance: by default a streaming store's ``meta/source`` holds ``(item, row within item)``.
With ``provenance: true`` in the config, ``process`` also returns ``"source"``: (n, 2) integers
of its own — e.g. (document, offset of the row's first token) for packed text, (replay, frame)
for game states — and ``meta/source`` holds those instead. chunkstore still keeps each chunk's
(item, row) runs in its journal, which is what resume and ``repair`` use, so user provenance
may be anything that fits int64 (streaming placement only; each row's pair should be unique,
as split keys are taken from it).

Placement: ``ordered`` (counts known, from ``count`` or an opt-in counting pass) uses the
chunk-aligned planner and is byte-deterministic; ``streaming`` (the default without ``count``)
lets workers claim chunks as they fill them (see :mod:`chunkstore.streaming`).

Callables are named ``"module:function"`` in YAML, or passed directly from Python
(``chunkstore.ingest(config, items=..., process=...)``); worker processes import them, so they
must be importable module-level functions, not lambdas.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from functools import cached_property
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BeforeValidator, PlainValidator, StrictBool, StrictStr, model_validator

from chunkstore.core.schema import Schema, invalid, shown
from chunkstore.errors import ConfigError, SourceError
from chunkstore.sources.base import Batch, Source, SourceOptions


def resolve(ref: Any, what: str) -> Any:
    """``"pkg.module:attr"`` -> the object; anything else is returned unchanged."""
    if not isinstance(ref, str):
        return ref
    module, sep, attr = ref.partition(":")
    if not sep or not module or not attr:
        raise ConfigError(f"source.{what} must look like 'package.module:function', found {ref!r}")
    try:
        obj: Any = importlib.import_module(module)
    except ImportError as e:
        raise ConfigError(f"source.{what}: cannot import module {module!r} ({e}); is it on "
                          f"sys.path? (source.path adds directories)") from e
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"source.{what}: module {module!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def ref_name(obj: Any) -> Any:
    """A stable name for a callable (for the config hash and messages)."""
    if obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, (list, tuple)):
        return [x if isinstance(x, (str, int, float)) else repr(x) for x in obj]
    return f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', repr(obj))}"


def _items_ref(value: Any) -> Any:
    """YAML gives ``"module:function"`` or a list; Python may pass any iterable or callable."""
    if isinstance(value, str | list) or value is None or callable(value):
        return value
    raise invalid(f"expected 'module:function' or a list of items, found {shown(value)}")


def _callable_ref(value: Any) -> Any:
    if isinstance(value, str) or value is None or callable(value):
        return value
    raise invalid(f"expected 'module:function', found {shown(value)}")


ItemsRef = Annotated[Any, PlainValidator(_items_ref, json_schema_input_type=str | list[Any]
                                         | None)]
CallableRef = Annotated[Any, PlainValidator(_callable_ref, json_schema_input_type=str | None)]


def _path_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class PythonOptions(SourceOptions):
    """``kind: python``: ``items`` and ``process`` (and optionally ``count``) from user code."""

    items: ItemsRef = None        # "mod:func" returning an iterable, a list (or from Python)
    process: CallableRef = None   # "mod:func" or a callable
    count: CallableRef = None     # optional "mod:func" or callable
    placement: Literal["auto", "ordered", "streaming"] = "auto"  # auto: ordered with counts
    counting_pass: StrictBool = False
    group: StrictBool = False     # process() returns "group" ids -> meta/group
    provenance: StrictBool = False  # process() returns "source" (n, 2) -> meta/source
    path: Annotated[tuple[StrictStr, ...], BeforeValidator(
        _path_list, json_schema_input_type=str | list[str])] = ()

    @model_validator(mode="after")
    def _ordered_needs_counts(self) -> PythonOptions:
        if self.placement == "ordered" and self.count is None and not self.counting_pass:
            raise invalid("ordered placement needs row counts: give source.count, or set "
                          "counting_pass: true (runs process twice), or use placement: "
                          "streaming", "placement")
        if self.provenance and self.resolved_placement != "streaming":
            raise invalid("provenance: true (process() returns 'source' for meta/source) needs "
                          "streaming placement; remove source.count/counting_pass or set "
                          "placement: streaming", "provenance")
        return self

    def to_dict(self) -> dict[str, Any]:
        d = {"items": ref_name(self.items), "process": ref_name(self.process),
             "count": ref_name(self.count), "placement": self.placement,
             "counting_pass": self.counting_pass, "group": self.group,
             "path": list(self.path)}
        if self.provenance:  # only when set: earlier configs keep their hash (resume works)
            d["provenance"] = True
        return d

    @property
    def resolved_placement(self) -> str:
        if self.placement != "auto":
            return self.placement
        return "ordered" if self.count is not None or self.counting_pass else "streaming"

    def with_callables(self, items: Any = None, process: Any = None, count: Any = None
                       ) -> PythonOptions:
        """Options with callables/lists given from Python replacing the config's names."""
        return self.model_copy(update={"items": self.items if items is None else items,
                                       "process": self.process if process is None else process,
                                       "count": self.count if count is None else count})


def as_batch(out: Any, where: str, provenance: bool = False) -> Batch:
    """Turn ``process(item)``'s mapping into a Batch, naming the item on a bad shape.

    ``provenance``: the config declares that ``process`` returns ``"source"`` (n, 2); it must
    then be there, and it must not be there otherwise (it would silently not be stored).
    """
    if not isinstance(out, Mapping) or "features" not in out:
        raise SourceError(f"{where}: process() returned {type(out).__name__}; expected a mapping "
                          "with 'features', 'labels' {head: ...}, 'masks' {head: ...}")
    labels, masks = out.get("labels", {}), out.get("masks", {})
    if not isinstance(labels, Mapping) or not isinstance(masks, Mapping):
        raise SourceError(f"{where}: process() 'labels' and 'masks' must be mappings head -> "
                          "array")
    if provenance != ("source" in out):
        raise SourceError(
            f"{where}: process() returned 'source' provenance, but source.provenance is not "
            "set; add 'provenance: true' to the source section to store it as meta/source"
            if not provenance else
            f"{where}: process() returned no 'source'; source.provenance: true says every "
            "item returns 'source', (n, 2) integers for meta/source")
    source = out.get("source")
    return Batch(np.asarray(out["features"]), labels, masks, out.get("group"),
                 None if source is None else np.asarray(source))


class PythonSource(Source):
    """Items and rows from the user's functions."""

    Options = PythonOptions
    options: PythonOptions

    def __init__(self, options: PythonOptions, schema: Schema) -> None:
        super().__init__(options, schema)
        for p in options.path:
            if p not in sys.path:
                sys.path.insert(0, p)

    @cached_property
    def items(self) -> list[Any]:
        ref = self.options.items
        if ref is None:
            raise ConfigError("python source: no items; set source.items or pass items= to "
                              "chunkstore.ingest")
        obj = resolve(ref, "items")
        try:
            return list(obj() if callable(obj) else obj)
        except Exception as e:
            raise SourceError(f"python source: listing items with {ref_name(ref)} failed: "
                              f"{type(e).__name__}: {e}") from e

    @cached_property
    def process(self) -> Callable[[Any], Any]:
        if self.options.process is None:
            raise ConfigError("python source: no process function; set source.process or pass "
                              "process= to chunkstore.ingest")
        fn: Callable[[Any], Any] = resolve(self.options.process, "process")
        return fn

    @property
    def has_group(self) -> bool:
        return self.options.group

    @property
    def has_source(self) -> bool:
        return self.options.provenance

    def describe(self, item: int) -> str:
        return f"item {item} ({self.items[item]!r})"

    def run(self, item: int) -> Batch:
        """``process(items[item])`` as a Batch (unchecked); errors name the item."""
        where = self.describe(item)
        try:
            out = self.process(self.items[item])
        except (SourceError, ConfigError):
            raise
        except Exception as e:
            raise SourceError(f"{where}: process() raised {type(e).__name__}: {e}") from e
        return as_batch(out, where, self.options.provenance)

    def count(self, item: int) -> int:
        """``count(items[item])``, checked."""
        fn = resolve(self.options.count, "count")
        try:
            n = fn(self.items[item])
        except Exception as e:
            raise SourceError(f"{self.describe(item)}: count() raised {type(e).__name__}: "
                              f"{e}") from e
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise SourceError(f"{self.describe(item)}: count() returned {n!r}; expected an "
                              "integer >= 0")
        return int(n)

    def counts(self) -> list[int]:
        if self.options.count is None:
            raise SourceError("python source: row counts are unknown without source.count "
                              "(streaming placement does not need them)")
        return [self.count(k) for k in range(len(self.items))]

    def read(self, item: int, start: int, stop: int) -> Batch:
        b = self.run(item)
        if self.options.count is not None:
            expected = self.count(item)
            if len(b) != expected:
                raise SourceError(f"{self.describe(item)}: process() returned {len(b)} rows; "
                                  f"count() said {expected}. count and process must agree")
        if start == 0 and stop == len(b):
            return b
        if len(b) < stop:
            raise SourceError(f"{self.describe(item)}: process() returned {len(b)} rows; the "
                              f"plan needs rows up to {stop}. process must be deterministic")
        return Batch(b.features[start:stop],
                     {k: np.asarray(v)[start:stop] for k, v in b.labels.items()},
                     {k: np.asarray(v)[start:stop] for k, v in b.masks.items()},
                     None if b.group is None else np.asarray(b.group)[start:stop],
                     None if b.source is None else b.source[start:stop])
