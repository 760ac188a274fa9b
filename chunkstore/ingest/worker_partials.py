"""Streaming ingest's partial statistics: one running partial per worker loop, not per chunk.

A streaming chunk record holds only its metadata and item runs. Each worker loop keeps the
merged :class:`~chunkstore.core.moments.Partial` of the chunks it committed and rewrites it,
atomically, as ``_chunkstore/workers/<loop>.npz`` together with the ids of the chunks it covers
(``chunks``). It is rewritten *after* the chunk records it covers (at the first chunk, then at
most every :data:`FLUSH_SECONDS`, and at the end of the loop), so a file never covers a chunk
that is not committed; a chunk committed after the last rewrite is simply not covered.

On resume and at the end of a run, :func:`consolidate` turns the files into one: it takes the
files whose chunks are all still kept (largest first, never two covering the same chunk),
recomputes the partial of every kept chunk no file covers from the chunk's stored rows (a chunk
committed after its loop's last rewrite, or one whose file covered chunks that recovery
re-packs or that compaction moved), writes the merge as one new file and deletes the others.
Whatever point a SIGKILL interrupts this at, the next run finds either the old files or the new
one (or both, and the larger wins), so the statistics stay exact.

With ``stats.online: false`` nothing is written here.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterable, Mapping

import numpy as np
import zarr

from chunkstore.config import Config
from chunkstore.core.moments import Partial, merge_partials
from chunkstore.ingest.task import partial_stats
from chunkstore.runtime.messages import warn
from chunkstore.store import journal, layout
from chunkstore.store.stats_io import node_array
from chunkstore.store.urls import StorePath

WORKERS = journal.WORKERS  # journal sub-directory of the loops' running partials
FLUSH_SECONDS = 2.0  # a loop rewrites its file at most this often (and at its end)


def workers_dir(store: str) -> StorePath:
    return journal.journal_dir(store) / WORKERS


def new_name(prefix: str = "loop") -> str:
    """A file name no other loop (of this run, an earlier one, or another host) uses."""
    return f"{prefix}-{os.getpid()}-{secrets.token_hex(6)}"


def block_partial(data: Mapping[str, np.ndarray], rows: int, config: Config) -> Partial | None:
    """The partial statistics of the first ``rows`` rows of ``data`` (None when
    ``stats.online`` is off)."""
    arrays = partial_stats({k: v[:rows] for k, v in data.items()}, config)
    return Partial.from_arrays(arrays) if arrays else None


def empty_partial(config: Config) -> Partial:
    heads = {h.name: h.classes for h in config.schema.heads}
    return Partial.empty(config.schema.n_features, heads, config.stats.correlation)


def write_partial(store: str, name: str, partial: Partial, chunks: Iterable[int]) -> None:
    """Atomically (re)write ``workers/<name>.npz``: ``partial`` covers exactly ``chunks``."""
    ids = np.array(sorted(chunks), dtype=np.int64)
    journal.write_npz(workers_dir(store) / f"{name}.npz", {"chunks": len(ids)},
                      {**partial.to_arrays(), "chunks": ids})


class RunningPartial:
    """A worker loop's merged partial of the chunks it committed, rewritten now and then."""

    def __init__(self, store: str, config: Config) -> None:
        self.store, self.name = store, new_name()
        self.partial = empty_partial(config)
        self.chunks: list[int] = []
        self.written_at = -np.inf

    def add(self, chunk: int, partial: Partial | None) -> None:
        """Call after chunk ``chunk``'s record is committed."""
        if partial is None:
            return
        self.partial = self.partial.merge(partial)
        self.chunks.append(chunk)
        if time.monotonic() - self.written_at >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        if self.chunks:
            write_partial(self.store, self.name, self.partial, self.chunks)
            self.written_at = time.monotonic()


def read_partials(store: str) -> list[tuple[StorePath, set[int], Partial]]:
    """Every worker file as (path, chunks covered, partial); one that does not decode is
    deleted with a warning (its chunks are then recomputed)."""
    out = []
    for p in workers_dir(store).iterdir():
        if not p.name.endswith(".npz") or p.name.startswith("."):
            continue
        try:
            _, arrays = journal.read_npz(p)
            chunks = {int(c) for c in arrays.pop("chunks")}
            out.append((p, chunks, Partial.from_arrays(arrays)))
        except Exception as e:  # zipfile, zlib, JSON, numpy: any file that does not decode
            warn(f"worker statistics {str(p)!r} do not decode ({type(e).__name__}: "
                 f"{str(e)[:100]}); it was deleted and its chunks' statistics are recomputed "
                 "from the store")
            p.unlink()
    return out


def stored_partial(group: zarr.Group, config: Config, chunk: int, chunk_rows: int,
                   rows: int) -> Partial | None:
    """The partial of chunk ``chunk`` (``rows`` rows), recomputed from its stored rows."""
    lo, hi = chunk * chunk_rows, chunk * chunk_rows + rows
    names = [layout.FEATURES] + [p for h in config.schema.heads
                                 for p in (layout.label_path(h.name), layout.mask_path(h.name))]
    data = {name: np.asarray(node_array(group, name)[lo:hi]) for name in names}
    return block_partial(data, rows, config)


def consolidate(store: str, group: zarr.Group, config: Config, chunk_rows: int,
                kept: Mapping[int, int], covers: Iterable[int] | None = None) -> Partial | None:
    """Merge the worker files into one covering the chunks ``kept`` (chunk -> rows).

    Files covering a chunk not in ``kept`` are dropped, and the kept chunks no remaining file
    covers are recomputed from the store. The result is written as one new file covering
    ``covers`` (default: the kept chunks; the end of a run passes the chunk ids after
    compaction, which are valid once it is done) and every other file is deleted.
    Returns the merged partial (None when ``stats.online`` is off).
    """
    if not config.stats.online:
        return None
    files = read_partials(store)
    taken: set[int] = set()
    parts: list[Partial] = []
    for _, chunks, partial in sorted(files, key=lambda f: -len(f[1])):
        if chunks <= kept.keys() and not chunks & taken:
            taken |= chunks
            parts.append(partial)
    for c in sorted(kept.keys() - taken):
        part = stored_partial(group, config, c, chunk_rows, kept[c])
        if part is not None:
            parts.append(part)
    total = merge_partials(parts, empty_partial(config))
    ids = list(kept.keys() if covers is None else covers)
    if ids:
        write_partial(store, new_name("merged"), total, ids)
    for p, _, _ in files:
        p.unlink()
    return total


def save_merged(store: str, total: Partial | None, rows: int, chunks: int) -> None:
    """Hand the run's merged statistics to finalize (``_chunkstore/merged.npz``, which it
    reuses instead of merging records); ``discard_merged`` drops a stale one on resume."""
    if total is not None:
        journal.write_npz(journal.journal_dir(store) / journal.MERGED,
                          {"chunks": chunks, "rows": rows}, total.to_arrays())


def discard_merged(store: str) -> None:
    (journal.journal_dir(store) / journal.MERGED).unlink(missing_ok=True)

