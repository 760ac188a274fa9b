"""``npz``: batch files as written by the usual parallel preprocessing workers.

One file is one item. Defaults follow the batch-file convention: ``strategic_features`` (n, F),
``labels_<head>`` (n,), ``masks_<head>`` (n, K), optional ``group`` (n,). Row counts come from
the ``.npy`` headers inside the zip, so counting never loads data. Pickled (object) arrays are
always refused: ``allow_pickle`` is never passed to numpy.
"""

from __future__ import annotations

import glob
import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from ..errors import SourceError
from ..schema import Schema, Where, _check_keys, _str
from .base import Batch, Source, SourceOptions


@dataclass(frozen=True)
class NpzOptions(SourceOptions):
    paths: tuple[str, ...]
    features_key: str = "strategic_features"
    label_key: str = "labels_{head}"
    mask_key: str = "masks_{head}"
    group_key: str | None = "group"

    def to_dict(self) -> dict[str, Any]:
        return {"paths": list(self.paths), "features_key": self.features_key,
                "label_key": self.label_key, "mask_key": self.mask_key,
                "group_key": self.group_key}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: Where, schema: Schema) -> NpzOptions:
        _check_keys(d, {"paths", "features_key", "label_key", "mask_key", "group_key"}, where)
        pw = where.child("paths")
        if "paths" not in d:
            raise pw.error("missing required key (a glob such as 'batches/*.npz' or a list)")
        raw = d["paths"]
        if isinstance(raw, str):
            raw = [raw]
        if not isinstance(raw, list) or not all(isinstance(p, str) for p in raw) or not raw:
            raise pw.error(f"expected a glob string or a list of paths, found {raw!r}")
        for key in ("label_key", "mask_key"):
            if key in d and "{head}" not in _str(d[key], where.child(key)):
                raise where.child(key).error(f"must contain '{{head}}', found {d[key]!r}")
        group_key = d.get("group_key", "group")
        if group_key is not None:
            group_key = _str(group_key, where.child("group_key"))
        return cls(
            tuple(raw),
            _str(d.get("features_key", "strategic_features"), where.child("features_key")),
            d.get("label_key", "labels_{head}"),
            d.get("mask_key", "masks_{head}"),
            group_key,
        )


def npz_member_shape(path: str, key: str) -> tuple[int, ...] | None:
    """Shape of array ``key`` in an ``.npz`` from its header alone; None if absent."""
    with zipfile.ZipFile(path) as zf:
        name = f"{key}.npy"
        if name not in zf.namelist():
            return None
        with zf.open(name) as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
    return tuple(shape)


class NpzSource(Source):
    """One item per ``.npz`` file, in sorted path order."""

    Options = NpzOptions
    options: NpzOptions

    @cached_property
    def files(self) -> list[str]:
        files: list[str] = []
        for pattern in self.options.paths:
            if glob.has_magic(pattern):
                files.extend(sorted(glob.glob(pattern)))
            else:
                files.append(pattern)
        if not files:
            raise SourceError(f"npz source: no files match {list(self.options.paths)} "
                              f"(relative to {os.getcwd()!r}); check source.paths")
        return files

    def describe(self, item: int) -> str:
        return f"file {self.files[item]!r} (item {item})"

    def _shape(self, item: int, key: str) -> tuple[int, ...] | None:
        try:
            return npz_member_shape(self.files[item], key)
        except FileNotFoundError as e:
            raise SourceError(f"{self.describe(item)}: file not found; check source.paths") from e
        except (OSError, zipfile.BadZipFile, ValueError) as e:
            raise SourceError(f"{self.describe(item)}: unreadable npz file ({e})") from e

    @cached_property
    def has_group(self) -> bool:
        key = self.options.group_key
        return key is not None and self._shape(0, key) is not None

    def counts(self) -> list[int]:
        counts = []
        key = self.options.features_key
        for item in range(len(self.files)):
            shape = self._shape(item, key)
            if shape is None:
                raise SourceError(f"{self.describe(item)}: no array {key!r}; expected the "
                                  "features under source.features_key")
            if len(shape) != 2:
                raise SourceError(f"{self.describe(item)}: {key!r} has shape {shape}; expected "
                                  f"(rows, {self.schema.n_features})")
            counts.append(int(shape[0]))
        return counts

    def read(self, item: int, start: int, stop: int) -> Batch:
        o = self.options
        try:
            with np.load(self.files[item], allow_pickle=False) as z:
                def get(key: str) -> Any:
                    if key not in z.files:
                        raise SourceError(f"{self.describe(item)}: no array {key!r}; the file "
                                          f"has {sorted(z.files)}")
                    return z[key][start:stop]

                features = get(o.features_key)
                labels = {h.name: get(o.label_key.format(head=h.name)) for h in self.schema.heads}
                masks = {h.name: get(o.mask_key.format(head=h.name)) for h in self.schema.heads}
                group = get(o.group_key) if self.has_group and o.group_key else None
        except SourceError:
            raise
        except FileNotFoundError as e:
            raise SourceError(f"{self.describe(item)}: file not found; check source.paths") from e
        except ValueError as e:
            if "allow_pickle" in str(e):
                raise SourceError(f"{self.describe(item)}: holds pickled (object) arrays, which "
                                  "chunkstore never loads because unpickling runs arbitrary "
                                  "code; re-save the batch with numeric arrays") from e
            raise SourceError(f"{self.describe(item)}: unreadable npz file ({e})") from e
        except (OSError, zipfile.BadZipFile, EOFError) as e:
            raise SourceError(f"{self.describe(item)}: unreadable npz file ({e})") from e
        return Batch(features, labels, masks, group)
