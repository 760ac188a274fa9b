"""``hdf5``: one or more HDF5 files (h5py), one item per file, read in slices.

Each file holds a features dataset (n, F), a label dataset (n,) and a mask dataset (n, K) per
head and optionally a group dataset (n,), at configurable paths. The defaults are the layout
that ``chunkstore export`` writes, so an exported file ingests back unchanged. Row counts come
from dataset shapes; a task reads only the row slice it needs, so chunked, compressed datasets
are decompressed a few chunks at a time. Feature names come from the features dataset's
``feature_names`` attribute when it has one (see :meth:`Hdf5Options.resolve_schema`).
"""

from __future__ import annotations

import dataclasses
from functools import cached_property
from typing import Any

import h5py
import numpy as np
from pydantic import StrictStr

from chunkstore.core.schema import Schema, Where, default_feature_names
from chunkstore.errors import SourceError
from chunkstore.sources.base import Batch, Source, SourceOptions
from chunkstore.sources.files import Paths, PerHead, PerHeadNames, expand_paths

SUFFIXES = (".h5", ".hdf5", ".he5")


class Hdf5Options(SourceOptions):
    """``kind: hdf5``: dataset paths inside each file (the defaults are what export writes)."""

    paths: Paths
    features: StrictStr = "features"
    labels: PerHeadNames = PerHead("labels/{head}")
    masks: PerHeadNames = PerHead("masks/{head}")
    group: StrictStr | None = "meta/group"

    def to_dict(self) -> dict[str, Any]:
        return {"paths": list(self.paths), "features": self.features,
                "labels": self.labels.to_config(), "masks": self.masks.to_config(),
                "group": self.group}

    def resolve_schema(self, schema: Schema, where: Where) -> Schema:
        """Take feature names from the first file's ``feature_names`` attribute, if any.

        A schema that gives only a count gets the file's names; a schema that lists names must
        agree with the file.
        """
        path = expand_paths(self.paths, "hdf5", SUFFIXES)[0]
        with _open(path) as f:
            names = file_feature_names(_dataset(f, self.features, path, "features"))
        if names is None:
            return schema
        if schema.feature_names == default_feature_names(schema.n_features):
            if len(names) != schema.n_features:
                raise SourceError(f"hdf5 file {path!r}: {self.features!r} has {len(names)} "
                                  f"feature names; the schema has {schema.n_features} features")
            return dataclasses.replace(schema, feature_names=names)
        if names != schema.feature_names:
            raise SourceError(f"hdf5 file {path!r}: the feature_names attribute of "
                              f"{self.features!r} differs from schema.features.names; drop the "
                              "names from the config to use the file's, or fix them")
        return schema


def file_feature_names(ds: h5py.Dataset) -> tuple[str, ...] | None:
    """The ``feature_names`` attribute of a dataset as str, or None."""
    raw = ds.attrs.get("feature_names")
    if raw is None:
        return None
    return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in np.asarray(raw).ravel())


def _open(path: str) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except FileNotFoundError as e:
        raise SourceError(f"hdf5 file {path!r} not found; check source.paths") from e
    except OSError as e:
        raise SourceError(f"hdf5 file {path!r} is unreadable: {e}") from e


def _dataset(f: h5py.File, name: str, path: str, what: str) -> h5py.Dataset:
    node = f.get(name)
    if not isinstance(node, h5py.Dataset):
        found: list[str] = []
        f.visititems(lambda n, o: found.append(n) if isinstance(o, h5py.Dataset) else None)
        shown = found[:12] + (["..."] if len(found) > 12 else [])
        raise SourceError(f"hdf5 file {path!r}: no dataset {name!r} ({what}); the file has "
                          f"datasets {shown}; fix source.{what.split()[0]} in the config")
    return node


class Hdf5Source(Source):
    """One item per file, in sorted path order; each read opens the file and slices."""

    Options = Hdf5Options
    options: Hdf5Options

    @cached_property
    def files(self) -> list[str]:
        return expand_paths(self.options.paths, "hdf5", SUFFIXES)

    def describe(self, item: int) -> str:
        return f"hdf5 file {self.files[item]!r} (item {item})"

    @cached_property
    def has_group(self) -> bool:
        if self.options.group is None:
            return False
        with _open(self.files[0]) as f:
            return isinstance(f.get(self.options.group), h5py.Dataset)

    def _datasets(self, f: h5py.File, path: str) -> dict[str, h5py.Dataset]:
        """Every dataset the source reads, keyed ``features``, ``labels/h``, ``masks/h``."""
        o = self.options
        out = {"features": _dataset(f, o.features, path, "features")}
        for h in self.schema.heads:
            out[f"labels/{h.name}"] = _dataset(f, o.labels.get(h.name), path,
                                               f"labels of head {h.name!r}")
            out[f"masks/{h.name}"] = _dataset(f, o.masks.get(h.name), path,
                                              f"masks of head {h.name!r}")
        if self.has_group and o.group:
            out["group"] = _dataset(f, o.group, path, "group dataset")
        return out

    def _count(self, item: int) -> int:
        path = self.files[item]
        where = self.describe(item)
        with _open(path) as f:
            ds = self._datasets(f, path)
            shapes = {k: d.shape for k, d in ds.items()}
        n_rows, width = (shapes["features"] + (None, None))[:2]
        if len(shapes["features"]) != 2 or width != self.schema.n_features:
            raise SourceError(f"{where}: features {self.options.features!r} have shape "
                              f"{shapes['features']}; expected (rows, {self.schema.n_features})")
        for key, shape in shapes.items():
            if not shape or shape[0] != n_rows:
                raise SourceError(f"{where}: {key} has shape {shape} but the features have "
                                  f"{n_rows} rows; every dataset needs one row per sample "
                                  "(mismatched row counts)")
        for h in self.schema.heads:
            shape = shapes[f"masks/{h.name}"]
            if len(shape) != 2 or shape[1] != h.classes:
                raise SourceError(f"{where}: masks of head {h.name!r} have shape {shape}; "
                                  f"expected ({n_rows}, {h.classes})")
        return int(n_rows)

    def counts(self) -> list[int]:
        return [self._count(item) for item in range(len(self.files))]

    def read(self, item: int, start: int, stop: int) -> Batch:
        path = self.files[item]
        with _open(path) as f:
            arrays = {k: d[start:stop] for k, d in self._datasets(f, path).items()}
        heads = [h.name for h in self.schema.heads]
        return Batch(arrays["features"], {h: arrays[f"labels/{h}"] for h in heads},
                     {h: arrays[f"masks/{h}"] for h in heads}, arrays.get("group"))
