"""The sample schema: what every row holds, and the value checks configs are built from.

Pure: frozen dataclasses and validators, no I/O. A failed check is one :class:`ConfigError`
naming the file and the key path (see :class:`Where`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from chunkstore.errors import ConfigError

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


def as_mapping(value: Any, where: Where) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise where.error(f"expected a mapping, found {type(value).__name__} {value!r}")
    return value


def check_keys(d: Mapping[str, Any], allowed: set[str], where: Where) -> None:
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise where.child(unknown[0]).error(
            f"unknown key {unknown[0]!r}; allowed keys here are {sorted(allowed)}"
        )


def as_int(value: Any, where: Where, *, minimum: int | None = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise where.error(f"expected an integer, found {type(value).__name__} {value!r}")
    if minimum is not None and value < minimum:
        raise where.error(f"expected an integer >= {minimum}, found {value}")
    return value


def as_float(value: Any, where: Where, *, lo: float | None = None,
             hi: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise where.error(f"expected a number, found {type(value).__name__} {value!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise where.error(f"expected a number in [{lo}, {hi}], found {value}")
    return float(value)


def as_str(value: Any, where: Where, *, choices: tuple[str, ...] | None = None) -> str:
    if not isinstance(value, str):
        raise where.error(f"expected a string, found {type(value).__name__} {value!r}")
    if choices is not None and value not in choices:
        raise where.error(f"expected one of {list(choices)}, found {value!r}")
    return value


def as_bool(value: Any, where: Where) -> bool:
    if not isinstance(value, bool):
        raise where.error(f"expected true or false, found {value!r}")
    return value


def as_auto_int(value: Any, where: Where) -> int | None:
    """``auto`` (or null) -> None, else a positive integer."""
    if value is None or value == "auto":
        return None
    return as_int(value, where)


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
        d = as_mapping(d, where)
        check_keys(d, {"features", "heads"}, where)
        if "features" not in d:
            raise where.error("missing required key 'features' (a count or {count, names, dtype})")
        if "heads" not in d:
            raise where.error("missing required key 'heads' (a mapping head -> classes)")
        fw = where.child("features")
        fdef = d["features"]
        names: tuple[str, ...]
        dtype = "float32"
        if isinstance(fdef, Mapping):
            check_keys(fdef, {"count", "names", "dtype"}, fw)
            dtype = as_str(fdef.get("dtype", "float32"), fw.child("dtype"), choices=FEATURE_DTYPES)
            raw_names = fdef.get("names")
            count = fdef.get("count")
            if raw_names is not None:
                if not isinstance(raw_names, list) or not all(
                        isinstance(n, str) for n in raw_names):
                    raise fw.child("names").error("expected a list of strings")
                names = tuple(raw_names)
                if count is not None and as_int(count, fw.child("count")) != len(names):
                    raise fw.error(f"count is {count} but {len(names)} names are given")
                if len(set(names)) != len(names):
                    dup = sorted({n for n in names if names.count(n) > 1})[0]
                    raise fw.child("names").error(f"duplicate feature name {dup!r}")
                if not names:
                    raise fw.child("names").error("expected at least one feature name")
            elif count is not None:
                names = default_feature_names(as_int(count, fw.child("count")))
            else:
                raise fw.error("give 'count' or 'names'")
        else:
            names = default_feature_names(as_int(fdef, fw))
        hw = where.child("heads")
        hdef = as_mapping(d["heads"], hw)
        if not hdef:
            raise hw.error("expected at least one head, e.g. {action_type: 12}")
        heads = []
        for name, spec in hdef.items():
            w = hw.child(str(name))
            if not isinstance(name, str) or not name.isidentifier():
                raise w.error(f"head name must be an identifier-like string, found {name!r}")
            if isinstance(spec, Mapping):
                check_keys(spec, {"classes", "label_dtype", "mask_dtype"}, w)
                if "classes" not in spec:
                    raise w.error("missing required key 'classes'")
                head = HeadSpec(
                    name,
                    as_int(spec["classes"], w.child("classes")),
                    as_str(spec.get("label_dtype", "int16"), w.child("label_dtype"),
                         choices=LABEL_DTYPES),
                    as_str(spec.get("mask_dtype", "int8"), w.child("mask_dtype"),
                         choices=MASK_DTYPES),
                )
            else:
                head = HeadSpec(name, as_int(spec, w))
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
        d = as_mapping(d, where)
        check_keys(d, {"codec", "cname", "clevel", "shuffle", "checksum"}, where)
        as_str(d.get("codec", "blosc"), where.child("codec"), choices=("blosc",))
        clevel = as_int(d.get("clevel", 5), where.child("clevel"), minimum=0)
        if clevel > 9:
            raise where.child("clevel").error(f"expected 0..9, found {clevel}")
        return cls(
            as_str(d.get("cname", "lz4"), where.child("cname"), choices=BLOSC_CNAMES),
            clevel,
            as_str(d.get("shuffle", "bitshuffle"), where.child("shuffle"), choices=BLOSC_SHUFFLES),
            as_bool(d.get("checksum", True), where.child("checksum")),
        )

