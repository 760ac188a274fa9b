"""Decoded row-chunks: read whole chunks of a store's sample arrays fast, and cache a few.

Every sample array is chunked along rows only (``(R, *tail)``), so "chunk ``c``" means rows
``[c * R, (c + 1) * R)`` of every array. Training reads whole chunks and gathers rows from them.

zarr-python's codec pipeline costs ~2x the codec itself per chunk (asyncio, buffer prototypes),
so for the layouts chunkstore writes -- a local store, codecs ``bytes`` -> ``blosc`` -> optional
``crc32c``, either one file per chunk or (format 2) those same chunks packed into Zarr v3 shards
of whole chunks along rows with the index at the end -- :func:`read_chunk` reads the chunk's
bytes (through the shard index, itself crc32c-checked) and decodes them with Blosc directly into
the caller's buffer. Blosc releases the GIL, so a few threads decode in parallel. The crc32c
checksums are verified as zarr does. Any other layout (other codecs or shard shapes, remote
stores) falls back to zarr's own ``array[a:b]``, so results never depend on the path taken.

:class:`ChunkCache` keeps a few decoded chunks for map-style reads.
"""

from __future__ import annotations

import functools
import mmap
import os
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import google_crc32c
import numpy as np
import zarr
from numcodecs import blosc
from numpy.typing import NDArray
from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, ShardingCodec
from zarr.codecs.sharding import ShardingCodecIndexLocation
from zarr.core.metadata import ArrayV3Metadata
from zarr.storage import LocalStore

from chunkstore.errors import ReadError

DECODERS = ("numcodecs", "blosc2")
_blosc2: Any = None


@functools.cache
def default_decoder() -> str:
    """``$CHUNKSTORE_DECODER`` if set, else "blosc2" when installed, else "numcodecs".

    python-blosc2 decodes the same Blosc frames as numcodecs, with AVX2 bitshuffle (~25% less
    CPU for float32 features here); it is imported on first use, not with chunkstore.
    """
    global _blosc2
    name = os.environ.get("CHUNKSTORE_DECODER", "")
    if name and name not in DECODERS:
        raise ReadError(f"CHUNKSTORE_DECODER must be one of {DECODERS}, found {name!r}")
    if name != "numcodecs":
        try:
            import blosc2
        except ImportError:
            if name == "blosc2":
                raise ReadError("CHUNKSTORE_DECODER=blosc2 but blosc2 is not installed: pip "
                                "install 'chunkstore[fast]'") from None
            return "numcodecs"
        blosc2.set_releasegil(True)  # let the loader's threads decode in parallel
        _blosc2 = blosc2
        return "blosc2"
    return "numcodecs"


@dataclass(frozen=True, eq=False)
class ChunkSource:
    """How to read row-chunk ``c`` of one array.

    Attributes
    ----------
    name : the array's path in the store, e.g. ``"labels/move"``.
    array : the zarr array (used by the fallback path and for chunk keys).
    shape, dtype : the array's shape and numpy dtype.
    chunk_rows : R, rows per chunk.
    fill : the fill value unwritten chunks read as.
    root : directory of the array's chunk files when the fast path applies, else None.
    checksum : whether the chunk bytes end with a crc32c checksum.
    paths : the chunk files, one per row-chunk, or one per shard when sharded (fast path only).
    decoder : "numcodecs" or "blosc2" (see :func:`default_decoder`).
    shard_chunks : row-chunks per shard file (0: not sharded, one file per chunk).
    """

    name: str
    array: zarr.Array
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    chunk_rows: int
    fill: Any
    root: str | None
    checksum: bool
    paths: tuple[str, ...] = ()
    decoder: str = "numcodecs"
    shard_chunks: int = 0

    @property
    def n_chunks(self) -> int:
        return -(-self.shape[0] // self.chunk_rows)

    @property
    def chunk_shape(self) -> tuple[int, ...]:
        return (self.chunk_rows, *self.shape[1:])

    def rows_in(self, c: int) -> int:
        """Valid rows of chunk ``c`` (the last chunk may be short)."""
        return min(self.chunk_rows, self.shape[0] - c * self.chunk_rows)


def _fast_root(array: zarr.Array) -> tuple[str | None, bool, int]:
    """(chunk-file root, has crc32c, chunks per shard or 0) when the direct Blosc path applies,
    else (None, False, 0)."""
    meta = array.metadata
    store = array.store
    if not isinstance(meta, ArrayV3Metadata) or not isinstance(store, LocalStore):
        return None, False, 0
    grid = getattr(meta.chunk_grid, "chunk_shape", None)
    if grid is None or tuple(grid[1:]) != tuple(array.shape[1:]):
        return None, False, 0
    codecs = list(meta.codecs)
    per_shard = 0
    if len(codecs) == 1 and isinstance(codecs[0], ShardingCodec):
        sharding = codecs[0]
        inner = tuple(sharding.chunk_shape)
        index = list(sharding.index_codecs)
        if (inner[1:] != tuple(grid[1:]) or grid[0] % inner[0]
                or sharding.index_location != ShardingCodecIndexLocation.end
                or len(index) != 2 or not isinstance(index[0], BytesCodec)
                or index[0].endian is None or index[0].endian.value != "little"
                or not isinstance(index[1], Crc32cCodec)):
            return None, False, 0
        per_shard = grid[0] // inner[0]
        codecs = list(sharding.codecs)
    checksum = bool(codecs) and isinstance(codecs[-1], Crc32cCodec)
    if checksum:
        codecs = codecs[:-1]
    if len(codecs) != 2 or not isinstance(codecs[0], BytesCodec) \
            or not isinstance(codecs[1], BloscCodec):
        return None, False, 0
    endian = codecs[0].endian
    if array.dtype.itemsize > 1 and (endian is None or endian.value != sys.byteorder):
        return None, False, 0
    return os.path.join(str(store.root), array.path), checksum, per_shard


def chunk_source(name: str, array: zarr.Array, n_rows: int | None = None) -> ChunkSource:
    """Describe how to read ``array``'s row-chunks (see the module docstring): its first
    ``n_rows`` rows when given (the committed rows: an unfinished streaming store's arrays are
    preallocated far beyond them), else all of them."""
    root, checksum, per_shard = _fast_root(array)
    rows = int(array.chunks[0])  # the inner chunks of a sharded array
    tail = (0,) * (array.ndim - 1)
    n = int(array.shape[0]) if n_rows is None else min(int(n_rows), int(array.shape[0]))
    files = -(-n // (rows * max(1, per_shard)))
    paths = () if root is None else tuple(
        os.path.join(root, array.metadata.encode_chunk_key((f, *tail))) for f in range(files))
    return ChunkSource(name=name, array=array, shape=(n, *array.shape[1:]),
                       dtype=np.dtype(array.dtype), chunk_rows=rows,
                       fill=array.metadata.fill_value, root=root, checksum=checksum,
                       paths=paths, decoder=default_decoder(), shard_chunks=per_shard)


_scratch = threading.local()
MMAP_MIN_BYTES = 1 << 16  # map files at least this big; read smaller ones


def _small_buffer() -> NDArray[np.uint8]:
    buf: NDArray[np.uint8] | None = getattr(_scratch, "buf", None)
    if buf is None:
        buf = _scratch.buf = np.empty(MMAP_MIN_BYTES, np.uint8)
    return buf


def _readinto(fd: int, buf: NDArray[np.uint8]) -> int:
    if hasattr(os, "readv"):  # POSIX: no intermediate bytes object
        return os.readv(fd, [cast(Any, buf)])
    data = os.read(fd, len(buf))
    buf[:len(data)] = np.frombuffer(data, np.uint8)
    return len(data)


def _with_file(path: str, use: Callable[[NDArray[np.uint8]], Any]) -> Any:
    """``use(bytes of the file)``: mapped for big files, read into a reused buffer otherwise.

    Mapping a big chunk file lets the decoder read the page cache directly (no 1.4 MB copy per
    feature chunk, ~20% of its decode cost here). Small label/mask chunks are read with plain
    ``os`` calls into this thread's buffer, which avoids a file object and an allocation per
    file. The bytes are valid only during ``use``. Chunk files are replaced by rename, never
    rewritten in place, so a mapped file cannot change underneath.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if size >= MMAP_MIN_BYTES:
            mm = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        else:
            mm = None
            buf = _small_buffer()
            got = _readinto(fd, buf)
    finally:
        os.close(fd)
    if mm is None:
        return use(buf[:got])
    try:
        return use(np.frombuffer(mm, np.uint8))
    finally:
        try:
            mm.close()
        except BufferError:  # a view outlived `use`: a traceback, or the stack sampler of a
            pass  # Dask worker holding the frame; the map closes when the view is collected


EMPTY = 2**64 - 1  # a shard index entry of a chunk that was never written (all fill)


def _decode(src: ChunkSource, c: int, out: NDArray[Any], data: NDArray[np.uint8]) -> bool:
    """Decode chunk ``c`` from its file's bytes ``data`` (a chunk file, or a shard holding it)
    into ``out``; False when a shard holds no bytes for it (it reads as fill)."""
    if src.shard_chunks:
        path = src.paths[c // src.shard_chunks]
        k = src.shard_chunks
        size = k * 16
        index = data[len(data) - size - 4:]
        if len(data) < size + 4 or google_crc32c.value(index[:size]) != int.from_bytes(
                index[size:].tobytes(), "little"):
            lo = (c - c % k) * src.chunk_rows
            hi = min(lo + k * src.chunk_rows, src.shape[0])
            raise ReadError(f"shard file {path!r} of array {src.name!r} (rows [{lo}, {hi})) is "
                            "corrupt: its index does not match its checksum; re-ingest those "
                            "rows (`chunkstore repair CONFIG`) or restore the file")
        offset, nbytes = (int(v) for v in index[:size].view("<u8")[2 * (c % k):2 * (c % k) + 2])
        if offset == EMPTY and nbytes == EMPTY:
            return False
        data = data[offset:offset + nbytes]
    else:
        path = src.paths[c]
    _decode_blosc(src, c, out, data, path)
    return True


def _decode_blosc(src: ChunkSource, c: int, out: NDArray[Any], data: NDArray[np.uint8],
                  path: str) -> None:
    lo, n = c * src.chunk_rows, src.rows_in(c)
    inner = data
    if src.checksum:
        inner = data[:-4]
        stored = int.from_bytes(data[-4:].tobytes(), "little")
        if len(data) < 4 or google_crc32c.value(inner) != stored:
            raise ReadError(f"chunk {c} in {path!r} of array {src.name!r} is corrupt: stored and "
                            f"computed checksum do not match; re-ingest the rows [{lo}, "
                            f"{lo + n}) (`chunkstore repair CONFIG`) or restore the file")
    # Blosc header: bytes 4..8 hold the uncompressed size (little-endian uint32).
    nbytes = int.from_bytes(data[4:8].tobytes(), "little") if len(inner) >= 16 else -1
    if nbytes != out.nbytes:
        raise ReadError(f"chunk {c} in {path!r} of array {src.name!r} decodes to {nbytes} "
                        f"bytes, expected {out.nbytes} for a {src.chunk_shape} {src.dtype} chunk")
    try:
        if src.decoder == "blosc2":
            _blosc2.decompress2(inner, dst=out, nthreads=1)
        else:
            blosc.decompress(inner, out)
    except (RuntimeError, ValueError) as e:
        raise ReadError(f"chunk {c} in {path!r} of array {src.name!r} does not decode as "
                        f"Blosc: {e}") from e


def read_chunk(src: ChunkSource, c: int, out: NDArray[Any] | None = None) -> NDArray[Any]:
    """Decode row-chunk ``c`` of ``src``; returns its valid rows ``(rows_in(c), *tail)``.

    Parameters
    ----------
    src : from :func:`chunk_source`.
    c : chunk index along rows.
    out : optional C-contiguous buffer of shape ``src.chunk_shape`` and ``src.dtype`` to
        decode into (no allocation); the result is then a view of it.

    Raises
    ------
    ReadError
        If the chunk's (or its shard index's) stored crc32c checksum does not match its bytes.
    """
    if out is None:
        out = np.empty(src.chunk_shape, dtype=src.dtype)
    n = src.rows_in(c)
    if src.root is None:
        lo = c * src.chunk_rows
        out[:n] = src.array[lo:lo + n]
        return out[:n]
    try:
        written = _with_file(src.paths[c // max(1, src.shard_chunks)],
                             lambda data: _decode(src, c, out, data))
    except FileNotFoundError:
        written = False
    if not written:
        out[:n] = src.fill
    return out[:n]


class ChunkCache:
    """A small thread-safe LRU of decoded row-chunks, keyed by (array name, chunk).

    Parameters
    ----------
    sources : array name -> :class:`ChunkSource`.
    max_chunks : chunks kept per array; memory is about ``max_chunks`` x one chunk of every
        array.
    """

    def __init__(self, sources: Mapping[str, ChunkSource], max_chunks: int = 8) -> None:
        if max_chunks < 1:
            raise ReadError(f"cache size must be at least 1 chunk, found {max_chunks}")
        self.sources = dict(sources)
        self.max_items = max_chunks * max(1, len(self.sources))
        self._items: OrderedDict[tuple[str, int], NDArray[Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, name: str, c: int) -> NDArray[Any]:
        """The valid rows of chunk ``c`` of array ``name`` (read-only; do not modify)."""
        key = (name, c)
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
                return hit
        rows = read_chunk(self.sources[name], c)
        rows.flags.writeable = False
        with self._lock:
            self._items[key] = rows
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)
        return rows

    def gather(self, names: list[str] | tuple[str, ...], rows: NDArray[np.int64]
               ) -> dict[str, NDArray[Any]]:
        """Rows ``rows`` (any order, repeats allowed, in range) of each named array."""
        rows = np.asarray(rows, dtype=np.int64).ravel()
        out = {n: np.empty((len(rows), *self.sources[n].shape[1:]), self.sources[n].dtype)
               for n in names}
        if not len(rows) or not names:
            return out
        r = self.sources[names[0]].chunk_rows
        chunk_of = rows // r
        order = np.argsort(chunk_of, kind="stable")
        sorted_chunks = chunk_of[order]
        bounds = np.flatnonzero(np.diff(sorted_chunks)) + 1
        for pos in np.split(order, bounds):
            c = int(chunk_of[pos[0]])
            local = rows[pos] - c * r
            for n in names:
                out[n][pos] = self.get(n, c)[local]
        return out


def as_ids(key: Any, n: int) -> tuple[NDArray[np.int64], bool]:
    """Integer ids (wrapped, bounds-checked) from an int, slice or array; and whether scalar."""
    if isinstance(key, slice):
        return np.arange(n, dtype=np.int64)[key], False
    scalar = np.ndim(key) == 0
    ids = np.asarray(key)
    if ids.size == 0:
        return np.zeros(0, np.int64), False
    if ids.dtype == bool:
        if ids.shape != (n,):
            raise IndexError(f"boolean index of shape {ids.shape}, expected ({n},)")
        return np.flatnonzero(ids), False
    if not np.issubdtype(ids.dtype, np.integer):
        raise IndexError(f"index must be an int, slice or integer array, found {ids.dtype}")
    ids = np.atleast_1d(ids).astype(np.int64)
    ids = np.where(ids < 0, ids + n, ids)
    bad = (ids < 0) | (ids >= n)
    if bad.any():
        raise IndexError(f"index {np.asarray(key).ravel()[bad][0]} is out of range for "
                         f"{n} items")
    return ids, scalar
