"""``npz``: batch files as written by the usual parallel preprocessing workers.

One file is one item. Defaults follow the batch-file convention: ``strategic_features`` (n, F),
``labels_<head>`` (n,), ``masks_<head>`` (n, K), optional ``group`` (n,). Row counts come from
the ``.npy`` headers inside the zip, so counting never loads data.

Pickled (object) arrays are refused unless the config sets ``allow_pickle: true``, because
unpickling runs whatever code the file contains. With the opt-in (a warning is logged), two
legacy shapes are accepted:

1. *Object columns*: the usual keys, where an array is an object array of per-sample values
   (feature vectors, label scalars, mask vectors); they are stacked row by row.
2. *A list of sample dicts*: the file has no features array but one object array of dicts
   under ``samples_key`` (default ``samples``; or the file's only array, e.g. ``arr_0`` from
   ``np.savez(path, samples)``), 1-D or a 0-d array holding the list. Each dict holds the
   sample's feature vector under ``features_key``, its label under ``label_key`` (or
   ``labels[head]``), its mask under ``mask_key`` (or ``masks[head]``) and optionally its group
   id under ``group_key``.
"""

from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import Annotated, Any

import numpy as np
from numpy.typing import NDArray
from pydantic import AfterValidator, StrictBool, StrictStr, model_validator

from chunkstore.core.schema import Schema, invalid
from chunkstore.errors import SourceError
from chunkstore.sources.base import Batch, Source, SourceOptions
from chunkstore.sources.files import (
    Paths,
    expand_paths,
    npz_headers,
    npz_member_header,
    npz_member_index,
    read_member_rows,
)

log = logging.getLogger(__name__)

def _has_head(value: str) -> str:
    if "{head}" not in value:
        raise invalid(f"must contain '{{head}}', found {value!r}")
    return value


PICKLE_HINT = ("chunkstore never loads pickled data unless told to, because unpickling runs "
               "arbitrary code: re-save the batch with numeric arrays, or set "
               "source.allow_pickle: true if you trust these files")


HeadTemplate = Annotated[StrictStr, AfterValidator(_has_head)]


class NpzOptions(SourceOptions):
    """``kind: npz``: which arrays of each batch file hold features, labels, masks, groups."""

    paths: Paths
    features_key: StrictStr = "strategic_features"
    label_key: HeadTemplate = "labels_{head}"
    mask_key: HeadTemplate = "masks_{head}"
    group_key: StrictStr | None = "group"
    allow_pickle: StrictBool = False
    samples_key: StrictStr = "samples"

    @model_validator(mode="after")
    def _samples_key_needs_pickle(self) -> NpzOptions:
        if "samples_key" in self.model_fields_set and not self.allow_pickle:
            raise invalid("only used with allow_pickle: true", "samples_key")
        return self

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"paths": list(self.paths), "features_key": self.features_key,
                             "label_key": self.label_key, "mask_key": self.mask_key,
                             "group_key": self.group_key}
        if self.allow_pickle:  # only when set, so existing stores keep their config hash
            d.update(allow_pickle=True, samples_key=self.samples_key)
        return d


def npz_member_shape(path: str, key: str) -> tuple[int, ...] | None:
    """Shape of array ``key`` in an ``.npz`` from its header alone; None if absent."""
    header = npz_member_header(path, key)
    return None if header is None else header[0]


def _stack(values: Sequence[Any], name: str, where: str) -> NDArray[Any]:
    """Per-sample values of a legacy object column -> one numeric array."""
    try:
        out = np.stack([np.asarray(v) for v in values]) if len(values) else np.empty(0)
    except ValueError as e:
        raise SourceError(f"{where}: the per-sample values of {name} have different shapes "
                          f"({e}); expected one fixed-shape value per sample") from e
    if out.dtype.hasobject:
        raise SourceError(f"{where}: {name} holds non-numeric per-sample values")
    return out


def _from_samples(samples: Sequence[Any], o: NpzOptions, schema: Schema, has_group: bool,
                  where: str, first_row: int) -> Batch:
    """A list of sample dicts -> a Batch (legacy layout 2)."""
    def field(i: int, s: Any, key: str, nested: str | None = None, head: str = "") -> Any:
        if not isinstance(s, Mapping):
            raise SourceError(f"{where}, row {first_row + i} of the item: sample is a "
                              f"{type(s).__name__}; expected a dict")
        if key in s:
            return s[key]
        if nested and isinstance(s.get(nested), Mapping) and head in s[nested]:
            return s[nested][head]
        raise SourceError(f"{where}, row {first_row + i} of the item: sample has no {key!r}"
                          f"{f' (nor {nested}[{head!r}])' if nested else ''}; its keys are "
                          f"{sorted(map(str, s))}")

    rows = list(samples)
    features = _stack([field(i, s, o.features_key) for i, s in enumerate(rows)],
                      repr(o.features_key), where)
    if not rows:
        features = np.empty((0, schema.n_features), dtype=np.float32)
    labels, masks = {}, {}
    for h in schema.heads:
        lk, mk = o.label_key.format(head=h.name), o.mask_key.format(head=h.name)
        labels[h.name] = _stack([field(i, s, lk, "labels", h.name) for i, s in enumerate(rows)],
                                repr(lk), where)
        masks[h.name] = _stack([field(i, s, mk, "masks", h.name) for i, s in enumerate(rows)],
                               repr(mk), where)
        if not rows:
            labels[h.name] = np.empty(0, dtype=np.int64)
            masks[h.name] = np.empty((0, h.classes), dtype=np.int8)
    group = None
    if has_group and o.group_key:
        group = _stack([field(i, s, o.group_key) for i, s in enumerate(rows)],
                       repr(o.group_key), where) if rows else np.empty(0, dtype=np.int64)
    return Batch(features, labels, masks, group)


class NpzSource(Source):
    """One item per ``.npz`` file, in sorted path order."""

    Options = NpzOptions
    options: NpzOptions

    @cached_property
    def files(self) -> list[str]:
        return expand_paths(self.options.paths, "npz", (".npz",))

    def describe(self, item: int) -> str:
        return f"file {self.files[item]!r} (item {item})"

    def _headers(self, item: int) -> dict[str, tuple[tuple[int, ...], np.dtype[Any]]]:
        try:
            return npz_headers(self.files[item])
        except FileNotFoundError as e:
            raise SourceError(f"{self.describe(item)}: file not found; check source.paths") from e
        except (OSError, zipfile.BadZipFile, ValueError) as e:
            raise SourceError(f"{self.describe(item)}: unreadable npz file ({e})") from e

    def _samples_key(self, headers: Mapping[str, Any]) -> str | None:
        """The key of the list-of-dicts array of a legacy file without a features array."""
        if self.options.samples_key in headers:
            return self.options.samples_key
        return next(iter(headers)) if len(headers) == 1 else None

    def _load_samples(self, item: int, key: str) -> list[Any]:
        with np.load(self.files[item], allow_pickle=True) as z:
            arr = z[key]
        samples = arr.item() if arr.ndim == 0 else arr
        if not isinstance(samples, (list, tuple, np.ndarray)):
            raise SourceError(f"{self.describe(item)}: {key!r} holds a "
                              f"{type(samples).__name__}; expected a list of sample dicts")
        return list(samples)

    @cached_property
    def has_group(self) -> bool:
        key = self.options.group_key
        if key is None:
            return False
        headers = self._headers(0)
        if self.options.features_key not in headers and self.options.allow_pickle:
            skey = self._samples_key(headers)
            samples = self._load_samples(0, skey) if skey else []
            return bool(samples) and isinstance(samples[0], Mapping) and key in samples[0]
        return key in headers

    def counts(self) -> list[int]:
        if self.options.allow_pickle:
            log.warning("npz source: allow_pickle is true, so pickled arrays in %d files will be "
                        "unpickled, which runs any code they contain; only use it on files "
                        "you trust", len(self.files))
        return [self._count(item) for item in range(len(self.files))]

    def _count(self, item: int) -> int:
        o, where = self.options, self.describe(item)
        headers = self._headers(item)
        pickled = sorted(k for k, (_, dtype) in headers.items() if dtype.hasobject)
        if pickled and not o.allow_pickle:
            raise SourceError(f"{where}: {pickled} are pickled (object) arrays; {PICKLE_HINT}")
        if o.features_key not in headers:
            key = self._samples_key(headers) if o.allow_pickle else None
            if key is None:
                raise SourceError(f"{where}: no array {o.features_key!r}; expected the features "
                                  f"under source.features_key; the file has {sorted(headers)}")
            shape, dtype = headers[key]
            if not dtype.hasobject:
                raise SourceError(f"{where}: no array {o.features_key!r}, and {key!r} has dtype "
                                  f"{dtype}; expected a list of sample dicts")
            return int(shape[0]) if len(shape) == 1 else len(self._load_samples(item, key))
        shape, dtype = headers[o.features_key]
        if dtype.hasobject and len(shape) != 1:
            raise SourceError(f"{where}: {o.features_key!r} is an object array of shape {shape}; "
                              "expected one feature vector per sample")
        if not dtype.hasobject and len(shape) != 2:
            raise SourceError(f"{where}: {o.features_key!r} has shape {shape}; expected "
                              f"(rows, {self.schema.n_features})")
        return int(shape[0])

    def read(self, item: int, start: int, stop: int) -> Batch:
        where = self.describe(item)
        try:
            fast = self._read_stored(item, start, stop)
            if fast is not None:
                return fast
            return self._read_loaded(item, start, stop)
        except SourceError:
            raise
        except FileNotFoundError as e:
            raise SourceError(f"{where}: file not found; check source.paths") from e
        except ValueError as e:
            if "allow_pickle" in str(e):
                raise SourceError(f"{where}: holds pickled (object) arrays; {PICKLE_HINT}") from e
            raise SourceError(f"{where}: unreadable npz file ({e})") from e
        except (OSError, zipfile.BadZipFile, EOFError) as e:
            raise SourceError(f"{where}: unreadable npz file ({e})") from e

    def _keys(self) -> list[str]:
        o = self.options
        keys = [o.features_key, *(o.label_key.format(head=h.name) for h in self.schema.heads),
                *(o.mask_key.format(head=h.name) for h in self.schema.heads)]
        return keys + [o.group_key] if self.has_group and o.group_key else keys

    def _read_stored(self, item: int, start: int, stop: int) -> Batch | None:
        """The common case, fast: every needed member stored uncompressed (``np.savez``), so
        each is one ``pread`` of just rows ``[start, stop)`` -- no zip stream, no header
        parsing per read, no decoding a whole member to keep a slice (an item cut by a task
        edge is read once in all). None when a member needs ``np.load`` (compressed,
        pickled, Fortran-ordered or missing): :meth:`_read_loaded` then reads (or explains)."""
        path = self.files[item]
        index = npz_member_index(path)
        keys = self._keys()
        if not all(k in index for k in keys):
            return None
        fd = os.open(path, os.O_RDONLY)
        try:
            got = {k: read_member_rows(fd, path, k, index[k], start, stop) for k in keys}
        finally:
            os.close(fd)
        o, heads = self.options, self.schema.heads
        return Batch(got[o.features_key],
                     {h.name: got[o.label_key.format(head=h.name)] for h in heads},
                     {h.name: got[o.mask_key.format(head=h.name)] for h in heads},
                     got[o.group_key] if self.has_group and o.group_key else None)

    def _read_loaded(self, item: int, start: int, stop: int) -> Batch:
        """Any npz, through ``np.load`` (compressed members, legacy pickled layouts)."""
        o = self.options
        where = self.describe(item)
        with np.load(self.files[item], allow_pickle=o.allow_pickle) as z:
            if o.allow_pickle and o.features_key not in z.files:
                key = self._samples_key(self._headers(item))
                samples = self._load_samples(item, key) if key else []
                return _from_samples(samples[start:stop], o, self.schema, self.has_group,
                                     where, start)

            def get(key: str) -> Any:
                if key not in z.files:
                    raise SourceError(f"{where}: no array {key!r}; the file has "
                                      f"{sorted(z.files)}")
                a = z[key][start:stop]
                return _stack(list(a), repr(key), where) if a.dtype.hasobject else a

            features = get(o.features_key)
            labels = {h.name: get(o.label_key.format(head=h.name)) for h in self.schema.heads}
            masks = {h.name: get(o.mask_key.format(head=h.name)) for h in self.schema.heads}
            group = get(o.group_key) if self.has_group and o.group_key else None
        return Batch(features, labels, masks, group)
