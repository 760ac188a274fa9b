"""Helpers shared by the file-based source kinds (npz, parquet, hdf5, npy).

- :data:`Paths` / :func:`expand_paths`: the ``paths:`` option (a glob, a directory or a
  list of them) and the sorted file list it names.
- :class:`PerHead`: an option that names one thing per head, as a ``{head}`` template or an
  explicit mapping.
- :func:`npy_header` / :func:`npz_member_memmap`: ``.npy`` headers and memory maps of members
  stored uncompressed inside an ``.npz``, so counting and slicing never load whole arrays.
- :func:`npz_member_index` / :func:`read_member_rows`: where each uncompressed member's data
  starts, and one ``pread`` of just the rows a task needs (zip CRC checked on whole members).
"""

from __future__ import annotations

import functools
import glob
import math
import os
import re
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO, Annotated, Any, cast

import numpy as np
from pydantic import PlainSerializer, PlainValidator, ValidationInfo

from chunkstore.core.schema import Schema, invalid, shown
from chunkstore.errors import SourceError


def _paths(value: Any) -> tuple[str, ...]:
    raw = [value] if isinstance(value, str) else value
    if not isinstance(raw, list | tuple) or not raw or not all(isinstance(p, str) for p in raw):
        raise invalid("expected a glob string (e.g. 'data/*.npz'), a directory or a non-empty "
                      f"list of them, found {shown(value)}")
    return tuple(raw)


Paths = Annotated[tuple[str, ...], PlainValidator(_paths, json_schema_input_type=str | list[str]),
                  PlainSerializer(list)]
"""The ``paths:`` option: a glob/directory/file string or a non-empty list of them."""


def expand_paths(patterns: tuple[str, ...], kind: str,
                 suffixes: tuple[str, ...] = ()) -> list[str]:
    """Files named by ``patterns``, in order; each glob and directory is sorted.

    A directory stands for every file under it (recursively) whose name ends with one of
    ``suffixes``, sorted by relative path (so ``part-00010`` follows ``part-00009``).

    Raises
    ------
    SourceError
        When nothing matches at all.
    """
    files: list[str] = []
    for pattern in patterns:
        if glob.has_magic(pattern):
            files.extend(sorted(glob.glob(pattern, recursive=True)))
        elif suffixes and os.path.isdir(pattern):
            found = [os.path.join(root, n) for root, _, names in os.walk(pattern)
                     for n in names if n.endswith(suffixes)]
            files.extend(sorted(found, key=lambda p: os.path.relpath(p, pattern)))
        else:
            files.append(pattern)
    if not files:
        raise SourceError(f"{kind} source: no files match {list(patterns)} (relative to "
                          f"{os.getcwd()!r}); check source.paths")
    return files


@dataclass(frozen=True)
class PerHead:
    """One value per head: a string template containing ``{head}``, or a mapping head -> value.

    Config forms: ``"labels_{head}"`` or ``{move: lab_move, target: lab_target}``. Mapping
    values are strings unless the kind allows more (lists, ``{prefix: ...}``).
    """

    template: str | None = None
    mapping: tuple[tuple[str, Any], ...] = ()

    def get(self, head: str) -> Any:
        if self.template is not None:
            return self.template.replace("{head}", head)
        return dict(self.mapping)[head]

    def to_config(self) -> Any:
        return self.template if self.template is not None else dict(self.mapping)

    @classmethod
    def parse(cls, value: Any, schema: Schema | None, *, template_without_head: bool = False,
              strings_only: bool = True) -> PerHead:
        """Validate a template or a mapping that covers exactly the schema's heads.

        Raises a pydantic error (our wording) for the field being validated; with no
        ``schema`` (options built in code) the head coverage is not checked.
        """
        if isinstance(value, PerHead):
            return value
        heads = [h.name for h in schema.heads] if schema is not None else None
        if isinstance(value, str):
            if "{head}" not in value and not template_without_head:
                raise invalid(f"a template must contain '{{head}}', found {value!r}; or give a "
                              f"mapping with one entry per head {heads}")
            return cls(template=value)
        if isinstance(value, Mapping):
            keys = heads if heads is not None else [str(k) for k in value]
            missing = [h for h in keys if h not in value]
            extra = sorted(str(k) for k in value if k not in keys)
            if missing or extra:
                raise invalid(f"expected one entry per head {heads}; missing {missing}, "
                              f"unknown {extra}")
            for h in keys:
                if strings_only and not isinstance(value[h], str):
                    raise invalid(f"expected a string, found {shown(value[h])}", h)
            return cls(mapping=tuple((h, _freeze(value[h])) for h in keys))
        raise invalid(f"expected a template string with '{{head}}' or a mapping head -> value, "
                      f"found {shown(value)}")


def _per_head(*, template_without_head: bool = False, strings_only: bool = True
              ) -> PlainValidator:
    def check(value: Any, info: ValidationInfo) -> PerHead:
        schema = (info.context or {}).get("schema")  # set by SourceOptions.from_dict
        return PerHead.parse(value, schema, template_without_head=template_without_head,
                             strings_only=strings_only)

    return PlainValidator(check, json_schema_input_type=str | dict[str, Any])


_AS_CONFIG = PlainSerializer(lambda v: thaw(v.to_config()))
PerHeadNames = Annotated[PerHead, _per_head(), _AS_CONFIG]
"""A :class:`PerHead` option naming one column/dataset per head: a template or head -> str."""
PerHeadSelectors = Annotated[PerHead, _per_head(strings_only=False), _AS_CONFIG]
"""A :class:`PerHead` option whose mapping values may be column selectors (lists, prefix)."""
PerHeadFiles = Annotated[PerHead, _per_head(template_without_head=True), _AS_CONFIG]
"""A :class:`PerHead` option naming files; a template without ``{head}`` names one file."""


def _freeze(value: Any) -> Any:
    """Lists -> tuples and mappings -> sorted pair tuples, so frozen options stay hashable."""
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _freeze(v)) for k, v in value.items()))
    return value


def thaw(value: Any) -> Any:
    """Inverse of the freezing done by :meth:`PerHead.parse`, for ``to_dict``."""
    if isinstance(value, tuple) and value and all(
            isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str) for p in value):
        return {k: thaw(v) for k, v in value}
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value


def _read_header(fh: IO[bytes]) -> tuple[tuple[int, ...], np.dtype[Any], bool]:
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
    else:
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
    return tuple(shape), dtype, fortran


def npz_member_header(path: str, key: str) -> tuple[tuple[int, ...], np.dtype[Any]] | None:
    """(shape, dtype) of array ``key`` in an ``.npz`` from its header alone; None if absent."""
    with zipfile.ZipFile(path) as zf:
        name = f"{key}.npy"
        if name not in zf.namelist():
            return None
        with zf.open(name) as fh:
            shape, dtype, _ = _read_header(fh)
    return shape, dtype


def npz_headers(path: str) -> dict[str, tuple[tuple[int, ...], np.dtype[Any]]]:
    """(shape, dtype) of every array in an ``.npz``, in file order, from the headers alone."""
    out = {}
    with zipfile.ZipFile(path) as zf:
        for name in zf.namelist():
            if name.endswith(".npy"):
                with zf.open(name) as fh:
                    shape, dtype, _ = _read_header(fh)
                out[name.removesuffix(".npy")] = (shape, dtype)
    return out


def npy_header(path: str) -> tuple[tuple[int, ...], np.dtype[Any]]:
    """(shape, dtype) of a ``.npy`` file from its header alone."""
    with open(path, "rb") as fh:
        shape, dtype, _ = _read_header(fh)
    return shape, dtype


def npz_member_memmap(path: str, key: str) -> np.memmap[Any, Any]:
    """A read-only memory map of member ``key`` of an ``.npz`` written by ``np.savez``.

    ``np.load`` ignores ``mmap_mode`` for ``.npz`` files; a member stored without compression
    is a plain ``.npy`` at a known offset inside the zip, so it can be mapped directly.

    Raises
    ------
    SourceError
        When the member is missing, compressed (``np.savez_compressed``) or not a plain array.
    """
    with zipfile.ZipFile(path) as zf:
        try:
            info = zf.getinfo(f"{key}.npy")
        except KeyError:
            names = sorted(n.removesuffix(".npy") for n in zf.namelist())
            raise SourceError(f"{path!r}: no array {key!r}; the file has {names}") from None
        if info.compress_type != zipfile.ZIP_STORED:
            raise SourceError(f"{path!r}: array {key!r} is compressed (np.savez_compressed), so "
                              "it cannot be memory-mapped; re-save it with np.savez or as .npy")
        with open(path, "rb") as raw:
            raw.seek(info.header_offset)
            local = raw.read(30)
            name_len = int.from_bytes(local[26:28], "little")
            extra_len = int.from_bytes(local[28:30], "little")
            start = info.header_offset + 30 + name_len + extra_len
            raw.seek(start)
            shape, dtype, fortran = _read_header(raw)
            data_offset = raw.tell()
    if dtype.hasobject:
        raise SourceError(f"{path!r}: array {key!r} holds pickled objects; expected a numeric "
                          "array")
    return np.memmap(path, dtype=dtype, mode="r", offset=data_offset, shape=shape,
                     order="F" if fortran else "C")


@dataclass(frozen=True)
class NpzMember:
    """An array stored uncompressed (``np.savez``) inside an ``.npz``: where its data starts.

    ``head`` is the member's ``.npy`` header bytes and ``crc`` the zip's CRC-32 of the whole
    member (header + data), so a whole-member read is checked as ``np.load`` checks it.
    """

    offset: int
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    crc: int
    head: bytes


def npz_member_index(path: str) -> dict[str, NpzMember]:
    """The uncompressed, numeric, C-ordered members of an ``.npz`` by key (cached per file
    version: an item cut by a task edge is indexed once per worker)."""
    st = os.stat(path)
    return _member_index(path, st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=16)
def _member_index(path: str, mtime_ns: int, size: int) -> dict[str, NpzMember]:
    out = {}
    with zipfile.ZipFile(path) as zf, open(path, "rb") as raw:
        for info in zf.infolist():
            if not info.filename.endswith(".npy") or info.compress_type != zipfile.ZIP_STORED:
                continue
            raw.seek(info.header_offset)
            local = raw.read(30)
            start = (info.header_offset + 30 + int.from_bytes(local[26:28], "little")
                     + int.from_bytes(local[28:30], "little"))
            raw.seek(start)
            shape, dtype, fortran = _read_header_fast(raw)
            offset = raw.tell()
            if fortran or dtype.hasobject or not shape or offset - start + _nbytes(shape, dtype) \
                    != info.file_size:
                continue  # np.load's path handles (and explains) anything unusual
            raw.seek(start)
            out[info.filename.removesuffix(".npy")] = NpzMember(
                offset, shape, dtype, info.CRC, raw.read(offset - start))
    return out


def _nbytes(shape: tuple[int, ...], dtype: np.dtype[Any]) -> int:
    return math.prod(shape) * dtype.itemsize


_HEADER = re.compile(r"\{'descr': '([^']+)', 'fortran_order': (True|False), "
                     r"'shape': \(((?:\d+, )*\d*,?)\), \}\s*")


def _read_header_fast(fh: IO[bytes]) -> tuple[tuple[int, ...], np.dtype[Any], bool]:
    """:func:`_read_header` for the header ``np.save`` writes, parsed with one regex instead of
    ``ast.literal_eval`` (10x faster; an npz of 16 members has 16); anything else goes to
    numpy's parser."""
    start = fh.tell()
    pre = fh.read(12)
    if pre[:6] == b"\x93NUMPY" and pre[6] in (1, 2, 3):
        size, skip = (int.from_bytes(pre[8:10], "little"), 10) if pre[6] == 1 else (
            int.from_bytes(pre[8:12], "little"), 12)
        fh.seek(start + skip)
        text = fh.read(size).decode("utf8" if pre[6] == 3 else "latin1")
        m = _HEADER.fullmatch(text)
        if m:
            shape = tuple(int(d) for d in m.group(3).replace(",", " ").split())
            return shape, np.dtype(m.group(1)), m.group(2) == "True"
    fh.seek(start)
    return _read_header(fh)


def read_member_rows(fd: int, path: str, key: str, m: NpzMember, start: int, stop: int
                     ) -> np.ndarray:
    """Rows ``[start, stop)`` (clipped to the member's rows) of member ``m``, read with one
    ``pread`` into a new array: no zip stream, no decoding of rows outside the slice.

    Raises
    ------
    SourceError
        When the file is shorter than its header says, or a whole-member read does not match
        the zip's CRC-32 (a corrupt file).
    """
    n = m.shape[0]
    stop = min(stop, n)
    start = min(start, stop)
    tail = m.shape[1:]
    out = np.empty((stop - start, *tail), dtype=m.dtype)
    flat = out.reshape(-1).view(np.uint8)
    got = _pread_into(fd, flat, m.offset + start * _nbytes(tail, m.dtype)) if out.nbytes else 0
    if got != out.nbytes:
        raise SourceError(f"{path!r}: array {key!r} is truncated: expected {out.nbytes} bytes of "
                          f"rows [{start}, {stop}), found {got}")
    if (start, stop) == (0, n) and zlib.crc32(cast(Any, flat), zlib.crc32(m.head)) != m.crc:
        raise SourceError(f"{path!r}: array {key!r} is corrupt: its bytes do not match the zip "
                          "file's CRC-32; re-create the file")
    return out


def _pread_into(fd: int, buf: np.ndarray, offset: int) -> int:
    if hasattr(os, "preadv"):  # no intermediate bytes object
        return os.preadv(fd, [cast(Any, buf)], offset)
    data = os.pread(fd, len(buf), offset)
    buf[:len(data)] = np.frombuffer(data, np.uint8)
    return len(data)
