"""The sample schema, and the pydantic machinery every config section is validated with.

Pure: frozen value objects and pydantic v2 models, no I/O. Every YAML section is a
:class:`Section` (``extra="forbid"``, frozen); a failed check is one :class:`ConfigError` naming
the file and the dotted key path, e.g. ``config 'demo.yaml', key 'schema.heads.move': expected
an integer >= 1, found 0`` (see :func:`parse` and :class:`Where`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any, Literal, TypeVar

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    Tag,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic.dataclasses import dataclass as pydantic_dataclass
from pydantic_core import ErrorDetails, PydanticCustomError

from chunkstore.errors import ConfigError

FLOAT_FEATURE_DTYPES = ("float32", "float16", "float64")
INT_FEATURE_DTYPES = ("uint8", "uint16", "int32", "int64")  # token ids, categorical codes
FEATURE_DTYPES = FLOAT_FEATURE_DTYPES + INT_FEATURE_DTYPES
LABEL_DTYPES = ("int8", "int16", "int32", "int64")
MASK_DTYPES = ("int8", "uint8", "bool", "int16")
BLOSC_CNAMES = ("lz4", "lz4hc", "zstd", "zlib", "blosclz")
BLOSC_SHUFFLES = ("bitshuffle", "shuffle", "noshuffle")
NAN_POLICIES = ("allow", "error")
MAX_SHOWN = 200  # characters of a found value quoted in a message

FeatureDtype = Literal["float32", "float16", "float64", "uint8", "uint16", "int32", "int64"]
LabelDtype = Literal["int8", "int16", "int32", "int64"]
MaskDtype = Literal["int8", "uint8", "bool", "int16"]
PositiveInt = Annotated[StrictInt, Field(ge=1)]
NonNegativeInt = Annotated[StrictInt, Field(ge=0)]


class Where:
    """Names a place in a config for error messages: ``file 'demo.yaml', key 'schema.heads'``.

    Used for checks that run after pydantic parsing (cross-section checks, a source's options
    against the schema) so they read like the parser's own messages.
    """

    def __init__(self, file: str, path: str = "") -> None:
        self.file = file
        self.path = path

    def child(self, key: str | int) -> Where:
        sub = f"{self.path}[{key}]" if isinstance(key, int) else f"{self.path}.{key}"
        return Where(self.file, sub.lstrip("."))

    def error(self, message: str) -> ConfigError:
        return ConfigError(f"config {self.file!r}, key {self.path or '<top>'!r}: {message}")


# ---------------------------------------------------------------------------- pydantic glue

def shown(value: Any) -> str:
    """``type repr`` of a found value, cut to :data:`MAX_SHOWN` characters."""
    text = repr(value)
    if len(text) > MAX_SHOWN:
        text = text[:MAX_SHOWN - 3] + "..."
    return f"{type(value).__name__} {text}"


def invalid(message: str, *at: str | int) -> PydanticCustomError:
    """A validation error with our own wording; ``at`` extends the key path (cross-field)."""
    return PydanticCustomError("chunkstore", "{message}", {"message": message, "at": at})


def refuse_unknown_keys(data: Any, allowed: set[str]) -> None:
    """Raise for the first key not in ``allowed`` (sorted), listing the keys allowed there.

    pydantic's own ``extra_forbidden`` error does not say which keys *are* allowed.
    """
    if isinstance(data, Mapping):
        unknown = sorted(str(k) for k in set(data) - allowed)
        if unknown:
            raise invalid(f"unknown key {unknown[0]!r}; allowed keys here are {sorted(allowed)}",
                          unknown[0])


class Section(BaseModel):
    """Base of every YAML section: unknown keys refused, values frozen after parsing."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        refuse_unknown_keys(data, {f.alias or name for name, f in cls.model_fields.items()})
        return data


_INT_TYPES = {"int_type", "int_parsing", "int_from_float"}
_MAPPING_TYPES = {"dict_type", "model_type", "model_attributes_type", "dataclass_type",
                  "dataclass_args_type"}
_BOUNDS = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=",
           "less_than": "<"}


def describe_error(err: ErrorDetails) -> str:
    """One pydantic error as ``expected ..., found ...`` in our wording."""
    kind, value, ctx = err["type"], err.get("input"), err.get("ctx") or {}
    if kind == "chunkstore":
        return str(ctx["message"])
    if kind == "missing":
        return "missing required key"
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        return "unknown key"
    if kind in _INT_TYPES:
        return f"expected an integer, found {shown(value)}"
    if kind in ("bool_type", "bool_parsing"):
        return f"expected true or false, found {shown(value)}"
    if kind in ("string_type",):
        return f"expected a string, found {shown(value)}"
    if kind in ("float_type", "float_parsing", "finite_number"):
        return f"expected a number, found {shown(value)}"
    if kind in _MAPPING_TYPES:
        return f"expected a mapping, found {shown(value)}"
    if kind in ("list_type", "tuple_type"):
        return f"expected a list, found {shown(value)}"
    if kind == "literal_error":
        return f"expected one of {ctx.get('expected')}, found {shown(value)}"
    if kind in _BOUNDS:
        bound = next(iter(ctx.values()))
        noun = "an integer" if isinstance(value, int) else "a number"
        return f"expected {noun} {_BOUNDS[kind]} {bound}, found {value!r}"
    return f"{err['msg'][:1].lower()}{err['msg'][1:]}, found {shown(value)}"


def error_path(err: ErrorDetails) -> tuple[str | int, ...]:
    """The key path of an error: union tags (``~...``) and ``[key]`` markers dropped."""
    loc = [p for p in err["loc"] if not (isinstance(p, str) and (p.startswith("~")
                                                                    or p == "[key]"))]
    if err["type"] == "chunkstore":
        loc.extend((err.get("ctx") or {}).get("at", ()))
    return tuple(loc)


def config_error(exc: ValidationError, where: Where) -> ConfigError:
    """The first of pydantic's errors as one ConfigError at ``where`` + the error's key path."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    w = where
    for part in error_path(first):
        w = w.child(part)
    message = describe_error(first)
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return w.error(message)


T = TypeVar("T")


@cache
def adapter(kind: Any) -> TypeAdapter[Any]:
    """One TypeAdapter per validated type (building one compiles a validator)."""
    return TypeAdapter(kind)


def parse(kind: type[T], data: Any, where: Where, context: dict[str, Any] | None = None) -> T:
    """Validate ``data`` as ``kind`` (a Section or pydantic dataclass); ConfigError at ``where``.

    Examples
    --------
    >>> parse(HeadSection, {"classes": 0}, Where("demo.yaml", "schema.heads.move"))
    Traceback (most recent call last):
    chunkstore.errors.ConfigError: config 'demo.yaml', key 'schema.heads.move.classes': ...
    """
    key: Any = kind  # a class: hashable, so one cached adapter per class
    try:
        value: T = adapter(key).validate_python(data, context=context)
    except ValidationError as e:
        raise config_error(e, where) from None
    return value


def by_shape(value: Any) -> str:
    """Union tag for ``int | {mapping}`` config values, so errors name one form, not both."""
    return "~mapping" if isinstance(value, Mapping) else "~scalar"


# ---------------------------------------------------------------------------- the schema

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
    """What every sample holds: F features and one label + mask per head (zero heads is valid:
    a token corpus has features only).

    ``vocab_size`` (integer features only) declares that every feature value lies in
    ``[0, vocab_size)``: the size of ``stats/<scope>/value_counts``.
    """

    feature_names: tuple[str, ...]
    heads: tuple[HeadSpec, ...]
    feature_dtype: str = "float32"
    vocab_size: int | None = None

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    @property
    def integer_features(self) -> bool:
        """True for token ids / categorical codes: no NaN, correlation off by default."""
        return self.feature_dtype in INT_FEATURE_DTYPES

    def head(self, name: str) -> HeadSpec:
        for h in self.heads:
            if h.name == name:
                return h
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        features: dict[str, Any] = {"count": self.n_features, "names": list(self.feature_names),
                                    "dtype": self.feature_dtype}
        if self.vocab_size is not None:  # only when declared: older configs hash unchanged
            features["vocab_size"] = self.vocab_size
        return {"features": features, "heads": {h.name: h.to_dict() for h in self.heads}}

    @classmethod
    def from_dict(cls, d: Any, where: Where | None = None) -> Schema:
        """Parse a ``schema:`` section; ConfigError naming the key (``schema.heads.a``)."""
        return parse(SchemaSection, d, where or Where("<dict>", "schema")).to_schema()


def default_feature_names(count: int) -> tuple[str, ...]:
    width = len(str(count - 1))
    return tuple(f"f{i:0{width}d}" for i in range(count))


class FeaturesSection(Section):
    """``features: {count, names, dtype, vocab_size}`` (the long form of ``features: 893``)."""

    count: PositiveInt | None = None
    names: list[StrictStr] | None = None
    dtype: FeatureDtype = Field("float32", description="float32 | float16 | float64, or an "
                                "integer dtype for token ids / codes: uint8 | uint16 | int32 | "
                                "int64")
    vocab_size: PositiveInt | None = Field(None, description="integer features only: every "
                                           "value is in [0, vocab_size); sizes value_counts")

    @model_validator(mode="after")
    def _vocab_fits(self) -> FeaturesSection:
        if self.vocab_size is None:
            return self
        if self.dtype not in INT_FEATURE_DTYPES:
            raise invalid(f"vocab_size needs an integer dtype ({' | '.join(INT_FEATURE_DTYPES)}"
                          f"), found dtype {self.dtype}", "vocab_size")
        if self.vocab_size - 1 > np.iinfo(self.dtype).max:
            raise invalid(f"vocab_size {self.vocab_size} does not fit dtype {self.dtype} "
                          f"(values up to {np.iinfo(self.dtype).max})", "vocab_size")
        return self

    @model_validator(mode="after")
    def _names_agree(self) -> FeaturesSection:
        names = self.names
        if names is None:
            if self.count is None:
                raise invalid("give 'count' or 'names'")
            return self
        if not names:
            raise invalid("expected at least one feature name", "names")
        if self.count is not None and self.count != len(names):
            raise invalid(f"count is {self.count} but {len(names)} names are given")
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})[0]
            raise invalid(f"duplicate feature name {dup!r}", "names")
        return self

    def feature_names(self) -> tuple[str, ...]:
        if self.names is not None:
            return tuple(self.names)
        return default_feature_names(self.count or 0)  # _names_agree: count is set here


class HeadSection(Section):
    """``heads.<name>: {classes, label_dtype, mask_dtype}`` (the long form of ``move: 12``)."""

    classes: PositiveInt
    label_dtype: LabelDtype = "int16"
    mask_dtype: MaskDtype = "int8"


FeaturesValue = Annotated[
    Annotated[PositiveInt, Tag("~scalar")] | Annotated[FeaturesSection, Tag("~mapping")],
    Discriminator(by_shape)]
HeadValue = Annotated[
    Annotated[PositiveInt, Tag("~scalar")] | Annotated[HeadSection, Tag("~mapping")],
    Discriminator(by_shape)]


class SchemaSection(Section):
    """``schema:`` — ``features`` (a count or ``{count, names, dtype}``) and ``heads``."""

    features: FeaturesValue = Field(description="a feature count, or {count, names, dtype}")
    # Optional: no heads (``heads: {}`` or no key) is a features-only store, e.g. token
    # sequences for a language model; a misspelt key (``head:``) is still refused as unknown.
    heads: dict[str, HeadValue] = Field(default_factory=dict, description="head name -> classes "
                                        "or {classes, ...}; {} or omitted: features only")

    @model_validator(mode="after")
    def _heads_fit(self) -> SchemaSection:
        for name, spec in self.heads.items():
            if not name.isidentifier():
                raise invalid(f"head name must be an identifier-like string, found {name!r}",
                              "heads", name)
            head = _head(name, spec)
            if head.classes - 1 > np.iinfo(head.label_dtype).max:
                raise invalid(f"{head.classes} classes do not fit label_dtype "
                              f"{head.label_dtype}", "heads", name)
        return self

    def to_schema(self) -> Schema:
        f = self.features
        if isinstance(f, FeaturesSection):
            return Schema(f.feature_names(), self._heads(), f.dtype, f.vocab_size)
        return Schema(default_feature_names(f), self._heads())

    def _heads(self) -> tuple[HeadSpec, ...]:
        return tuple(_head(name, spec) for name, spec in self.heads.items())


def _head(name: str, spec: int | HeadSection) -> HeadSpec:
    if isinstance(spec, HeadSection):
        return HeadSpec(name, spec.classes, spec.label_dtype, spec.mask_dtype)
    return HeadSpec(name, spec)


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class Compression:
    """``compression:`` Blosc settings for every sample array, plus the crc32c checksum codec."""

    # A pydantic dataclass rather than a Section: Config holds it and code copies values with
    # dataclasses.replace, which BaseModel does not support.

    cname: Literal["lz4", "lz4hc", "zstd", "zlib", "blosclz"] = "lz4"
    clevel: Annotated[StrictInt, Field(ge=0, le=9)] = 5
    shuffle: Literal["bitshuffle", "shuffle", "noshuffle"] = "bitshuffle"
    checksum: StrictBool = True
    codec: Literal["blosc"] = "blosc"

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        refuse_unknown_keys(data, {"cname", "clevel", "shuffle", "checksum", "codec"})
        return data

    def to_dict(self) -> dict[str, Any]:
        return {"codec": "blosc", "cname": self.cname, "clevel": self.clevel,
                "shuffle": self.shuffle, "checksum": self.checksum}

    @classmethod
    def from_dict(cls, d: Any, where: Where) -> Compression:
        return parse(cls, d, where)
