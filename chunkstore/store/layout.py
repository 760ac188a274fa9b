"""The store layout, format version 2: every node name, the sample arrays, group attrs.

Version 2 added ``meta/row_hash`` (a fingerprint of every row's features) and packs the small
sample arrays into shards; version 1 stores (neither) still open and read.

A store is a plain Zarr v3 group; everything a reader needs is inside it, so ``zarr.open(path)``
works with no chunkstore import. See DESIGN.md, "Store layout".
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import zarr
from numpy.typing import NDArray
from zarr.codecs import BloscCname, BloscCodec, BloscShuffle, Crc32cCodec

from chunkstore.core.schema import Compression, Schema
from chunkstore.core.splitspec import check_split_set
from chunkstore.errors import NotAStoreError
from chunkstore.store.urls import is_local, open_group, store_path

FORMAT_VERSION = 2
ATTR_KEY = "chunkstore"
JOURNAL_DIR = "_chunkstore"
INCOMPLETE, COMPLETE = "incomplete", "complete"

# Node names: the one place they are spelled.
FEATURES = "features"
LABELS = "labels"
MASKS = "masks"
META = "meta"
GROUP = "meta/group"
SOURCE = "meta/source"
ROW_HASH = "meta/row_hash"  # (N,) uint64 xxh3 of each row's features (core.rowhash), v2+
SPLITS = "splits"  # splits/<name>: one int8 code per row
DEFAULT_SPLITS = "default"  # the split array read when none is named
STATS = "stats"  # stats/<scope>/...

# Unwritten rows read as these, so a hole is visible: NaN features, label -1.
FEATURE_FILL = float("nan")  # integer features (token ids, codes) have no NaN: 0
LABEL_FILL = -1
MASK_FILL = 0
GROUP_FILL = -1


def feature_fill(schema: Schema) -> float | int:
    """What unwritten feature rows read as: NaN for float features, 0 for integer ones."""
    return FEATURE_FILL if np.dtype(schema.feature_dtype).kind == "f" else 0


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def compressors(c: Compression) -> list[Any]:
    """Blosc (then crc32c, so corruption is detected on read) for one array."""
    codecs: list[Any] = [BloscCodec(cname=BloscCname(c.cname), clevel=c.clevel,
                                    shuffle=BloscShuffle[c.shuffle])]
    if c.checksum:
        codecs.append(Crc32cCodec())
    return codecs


def label_path(head: str) -> str:
    return f"{LABELS}/{head}"


def mask_path(head: str) -> str:
    return f"{MASKS}/{head}"


def split_path(name: str) -> str:
    """``splits/<name>``; SplitLookupError when ``name`` cannot name a split set (empty, a path,
    ``..``: see :func:`chunkstore.core.splitspec.split_set_problem`), so no caller ever turns a
    user's name into a path outside ``splits/``."""
    return f"{SPLITS}/{check_split_set(name)}"


def sample_arrays(schema: Schema, has_group: bool, has_source: bool = False
                  ) -> dict[str, tuple[tuple[int, ...], str, Any]]:
    """Every per-sample array: path -> (shape after N, dtype, fill value).

    The one list of them: writers, readers and exporters all iterate this.
    """
    arrays: dict[str, tuple[tuple[int, ...], str, Any]] = {
        FEATURES: ((schema.n_features,), schema.feature_dtype, feature_fill(schema)),
    }
    for h in schema.heads:
        arrays[label_path(h.name)] = ((), h.label_dtype, LABEL_FILL)
        arrays[mask_path(h.name)] = ((h.classes,), h.mask_dtype, MASK_FILL)
    if has_group:
        arrays[GROUP] = ((), "int64", GROUP_FILL)
    if has_source:
        arrays[SOURCE] = ((2,), "int64", GROUP_FILL)  # (item, row within item)
    arrays[ROW_HASH] = ((), "uint64", 0)
    return arrays


def sample_buffers(schema: Schema, rows: int, has_group: bool, has_source: bool = False
                   ) -> dict[str, NDArray[Any]]:
    """Empty write buffers of ``rows`` rows for every sample array, in store dtypes."""
    return {name: np.empty((rows, *tail), dtype=dtype) for name, (tail, dtype, _) in
            sample_arrays(schema, has_group, has_source).items()}


def stored_sample_arrays(group: zarr.Group) -> list[str]:
    """Paths of the sample arrays present in an open store, in a fixed order.

    Sorted: zarr lists group members in no fixed order, and callers zip two listings.
    """
    return [FEATURES] + [f"{p}/{k}" for p in (LABELS, MASKS, META)
                         if isinstance(sub := group.get(p), zarr.Group)
                         for k in sorted(sub.array_keys())]


def chunk_key(array: zarr.Array, chunk: int) -> str:
    """The store key (relative to the array) of the file holding row-chunk ``chunk``, as zarr
    encodes it: the chunk's own file, or the shard file it is packed in (sharded arrays)."""
    shards = getattr(array, "shards", None)
    index = chunk if shards is None else chunk * int(array.chunks[0]) // int(shards[0])
    return str(array.metadata.encode_chunk_key((index, *([0] * (array.ndim - 1)))))


def dimension_names(path: str) -> tuple[str, ...]:
    if path == "features":
        return ("sample", "feature")
    if path.startswith("masks/"):
        return ("sample", f"{path.split('/', 1)[1]}_class")
    if path == "meta/source":
        return ("sample", "provenance")
    return ("sample",)


def create_store(
    path: str,
    *,
    schema: Schema,
    compression: Compression,
    n_samples: int,
    chunk_rows: int,
    has_group: bool,
    config_sha256: str,
    has_source: bool = False,
    extra_attrs: Mapping[str, Any] | None = None,
    shard_rows: int | None = None,
) -> zarr.Group:
    """Create the group and every sample array at its final shape; no chunk is written.

    The group attrs go first (status ``incomplete``), so a crash mid-creation still leaves a
    store that is recognised and resumed or overwritten.

    ``shard_rows`` (a multiple of ``chunk_rows``; the rows of one write task, see
    :func:`chunkstore.core.plan.shard_rows_of`) packs the chunks of every sample array into
    one Zarr v3 shard file per task: inner chunks stay ``(chunk_rows, ...)`` with the same
    codecs, so readers see the same chunking, and each shard still has exactly one writer.
    None (or ``chunk_rows``) writes one file per chunk, as streaming placement must.
    """
    sharded = bool(shard_rows and shard_rows > chunk_rows)
    if sharded and shard_rows is not None and shard_rows % chunk_rows:
        raise ValueError(f"shard_rows={shard_rows} must be a multiple of chunk_rows={chunk_rows}")
    attrs = {
        "format_version": FORMAT_VERSION,
        "n_samples": n_samples,
        "chunk_rows": chunk_rows,
        "status": INCOMPLETE,
        "feature_names": list(schema.feature_names),
        "feature_dtype": schema.feature_dtype,
        **({"vocab_size": schema.vocab_size} if schema.vocab_size is not None else {}),
        "heads": {h.name: h.to_dict() for h in schema.heads},
        "has_group": has_group,
        "has_source": has_source,
        "compression": compression.to_dict(),
        "config_sha256": config_sha256,
        "created": now_iso(),
        **({"shard_rows": shard_rows} if sharded else {}),
        **(extra_attrs or {}),
    }
    # Not mode="w": that deletes the whole directory, the journal's lock with it. The caller
    # has cleared the store; anything left but the journal is removed here.
    for entry in store_path(path).iterdir():
        if entry.name != JOURNAL_DIR:
            entry.remove()
    group = open_group(path, mode="a", attributes={ATTR_KEY: attrs})
    for name, (tail, dtype, fill) in sample_arrays(schema, has_group, has_source).items():
        group.create_array(
            name,
            shape=(n_samples, *tail),
            chunks=(chunk_rows, *tail),
            shards=(shard_rows, *tail) if sharded else None,
            dtype=dtype,
            compressors=compressors(compression),
            fill_value=fill,
            dimension_names=dimension_names(name),
        )
    return group


def read_attrs(path: str) -> dict[str, Any]:
    """The ``chunkstore`` attrs of a store; NotAStoreError if ``path`` holds none."""
    if is_local(path):
        _check_local_store_path(path)
    try:
        group = open_group(path, mode="r")
    except (FileNotFoundError, NotADirectoryError, zarr.errors.GroupNotFoundError,
            ValueError) as e:
        raise NotAStoreError(f"no chunkstore store at {path!r}: no Zarr group there") from e
    attrs = group.attrs.get(ATTR_KEY)
    if not isinstance(attrs, dict) or "format_version" not in attrs:
        raise NotAStoreError(f"{path!r} is a Zarr group but not a chunkstore store: its attrs "
                             f"have no {ATTR_KEY!r} entry")
    if attrs["format_version"] > FORMAT_VERSION:
        raise NotAStoreError(f"{path!r} has format_version {attrs['format_version']}; this "
                             f"chunkstore reads up to {FORMAT_VERSION}: upgrade chunkstore")
    return dict(attrs)


def _check_local_store_path(path: str) -> None:
    """NotAStoreError saying what is at a local ``path`` when it cannot be a store directory."""
    if os.path.islink(path) and not os.path.exists(path):
        raise NotAStoreError(f"no chunkstore store at {path!r}: it is a symbolic link to "
                             f"{os.readlink(path)!r}, which does not exist; fix or remove the "
                             "link, or give the store's directory")
    if os.path.exists(path) and not os.path.isdir(path):
        raise NotAStoreError(f"no chunkstore store at {path!r}: it is a file, not a directory; "
                             "a store is the directory an ingest wrote (e.g. data/x.zarr)")


def update_attrs(path: str, **changes: Any) -> None:
    group = open_group(path, mode="r+")
    attrs = dict(group.attrs[ATTR_KEY])
    attrs.update(changes)
    group.attrs[ATTR_KEY] = attrs


def remove_partials(path: str) -> int:
    """Delete the ``*.partial`` temp files a killed zarr writer leaves in a local store.

    zarr's LocalStore writes a chunk to a temp file and renames it, so a kill never tears a
    chunk but may leave the temp file; it holds nothing a reader sees. Returns how many went.
    """
    if not is_local(path):
        return 0
    removed = 0
    for root, dirs, files in os.walk(path):
        dirs[:] = [d for d in dirs if d != JOURNAL_DIR]
        for f in files:
            if f.endswith(".partial"):
                os.unlink(os.path.join(root, f))
                removed += 1
    return removed


def stored_bytes(path: str, exclude: tuple[str, ...] = (JOURNAL_DIR,)) -> int:
    """Bytes stored under a store (a local directory or an fsspec URL), leaving out the journal."""
    return store_path(path).du(exclude)
