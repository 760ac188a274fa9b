"""``chunkstore dedup``: exact duplicate rows of a store, written as ``meta/duplicate_of``.

Three passes, memory bounded by a few blocks plus the hash array:

1. **Hashes**: ``meta/row_hash`` when the store has it (``by="features"``), else the xxh3 row
   hashes computed from the features block by block with Dask (stores written before the
   hashes existed). ``by="features+labels"`` mixes every head's label into the hash.
2. **Candidates**: rows whose hash occurs more than once (a sort of the hash array). Each is
   assigned a bucket by its hash, so all rows of one hash land in one bucket.
3. **Exact groups**: one Dask task per block reads the block's candidate rows (whole chunks
   decoded once) and spills their canonical bytes to a scratch directory, one file per
   bucket; one task per bucket then groups its rows by their bytes. A hash collision therefore
   never merges two different rows. A bucket holds about :data:`BUCKET_BYTES` of rows.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from chunkstore.core.plan import whole_chunk_rows
from chunkstore.core.rowhash import canonical, row_hashes
from chunkstore.core.schema import Compression, Where
from chunkstore.dedup import groups as grp
from chunkstore.dedup.summary import DedupSummary
from chunkstore.errors import DedupError
from chunkstore.runtime.dask import compute, local_scheduler
from chunkstore.store import journal, layout
from chunkstore.store.urls import open_group
from chunkstore.store.view import StoreView

BY = ("features", "features+labels")
DUPLICATE_OF = "meta/duplicate_of"
ROW_HASH = "meta/row_hash"
DEDUP_FORMAT = 1
METHOD = "xxh3-64 row hash, candidates compared byte for byte (NaN canonicalised)"
BLOCK_BYTES = 16 * 2**20  # features bytes per read block: a few chunks
BUCKET_BYTES = 128 * 2**20  # candidate bytes per exact-grouping task

Hasher = Callable[[np.ndarray], np.ndarray]


def _hashes(ds: StoreView, block_rows: int, hasher: Hasher | None, scheduler: Any
            ) -> tuple[np.ndarray, str]:
    """The (N,) uint64 feature hashes and where they came from."""
    import dask.array as da

    stored = ds.meta.get("row_hash")
    if hasher is None and stored is not None and stored.shape == (ds.n_samples,):
        return np.asarray(stored[:], dtype=np.uint64), ROW_HASH
    f = da.from_zarr(ds.features, chunks=(block_rows, ds.features.shape[1]))
    h = da.map_blocks(hasher or row_hashes, f, drop_axis=1, dtype=np.uint64)
    return np.asarray(compute(h, scheduler=scheduler)[0], dtype=np.uint64), "computed"


def _stack(ds: StoreView, labels: Any) -> np.ndarray:
    """(heads, N) labels in their stored dtype: a few bytes a row, like the hash array."""
    if not ds.heads:
        return np.zeros((0, ds.n_samples), dtype=np.int16)
    return np.stack([np.asarray(x) for x in labels])


def _read_all(arr: zarr.Array) -> np.ndarray:
    return np.asarray(arr[:])


def _spill(ds: StoreView, rows: np.ndarray, hashes: np.ndarray, n_buckets: int,
           lab: np.ndarray | None, scratch: str, tag: int) -> int:
    """Write the canonical bytes (and labels) of ``rows`` (sorted, one block) per bucket.

    The span of whole chunks holding ``rows`` is read as one slice: zarr decodes a slice's
    chunks in one batch, several times faster than an orthogonal selection of the rows."""
    r = ds.chunk_rows
    start, stop = rows[0] // r * r, min(ds.n_samples, (rows[-1] // r + 1) * r)
    x = canonical(np.asarray(ds.features[start:stop])[rows - start])
    data = x.view(np.uint8).reshape(rows.size, -1)
    if lab is not None and lab.size:  # by features+labels: the labels are part of the row
        data = np.concatenate([data, np.ascontiguousarray(lab.T, dtype=np.int64).view(
            np.uint8).reshape(rows.size, -1)], axis=1)
    buckets = hashes % np.uint64(n_buckets)
    for b in np.unique(buckets):
        sel = buckets == b
        np.savez(Path(scratch) / f"b{b:06d}_{tag:09d}.npz", rows=rows[sel], data=data[sel],
                 hashes=hashes[sel])
    return int(rows.size)


def _group_bucket(scratch: str, bucket: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact groups among one bucket's rows: (members, roots)."""
    parts = [dict(np.load(p)) for p in sorted(Path(scratch).glob(f"b{bucket:06d}_*.npz"))]
    if not parts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return grp.exact_groups(*(np.concatenate([p[k] for p in parts])
                              for k in ("rows", "data", "hashes")))


def _find(ds: StoreView, by: str, hasher: Hasher | None, scheduler: Any
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """(members, roots, member labels, hash source) of every exact group of two or more."""
    from dask import delayed

    row_bytes = ds.features.shape[1] * ds.features.dtype.itemsize
    block_rows = whole_chunk_rows(ds.chunk_rows, max(row_bytes, 1), BLOCK_BYTES)
    hashes, source = _hashes(ds, block_rows, hasher, scheduler)
    lazy_labels = [delayed(_read_all)(ds.labels[h]) for h in ds.heads]
    labels = None
    if by == "features+labels":
        labels = _stack(ds, compute(lazy_labels, scheduler=scheduler)[0])
        hashes = grp.with_labels(hashes, list(labels))
    cand = grp.candidates(hashes)
    n_buckets = max(1, int(np.ceil(cand.size * (row_bytes + 8 * len(ds.heads)) / BUCKET_BYTES)))
    cand_hashes = hashes[cand]
    del hashes
    scratch = tempfile.mkdtemp(prefix="chunkstore-dedup-")
    try:
        cuts = np.searchsorted(cand, np.arange(0, ds.n_samples + block_rows, block_rows))
        spills = [delayed(_spill)(ds, cand[a:b], cand_hashes[a:b], n_buckets,
                                  None if labels is None else labels[:, cand[a:b]], scratch, i)
                  for i, (a, b) in enumerate(zip(cuts[:-1], cuts[1:], strict=True)) if b > a]
        # by features: the labels (for conflicts) are read alongside the spill
        _, read = compute(spills, lazy_labels if labels is None else [], scheduler=scheduler)
        labels = _stack(ds, read) if labels is None else labels
        found = compute([delayed(_group_bucket)(scratch, b) for b in range(n_buckets)],
                        scheduler=scheduler)[0]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    members = np.concatenate([f[0] for f in found])
    order = np.argsort(members, kind="stable")
    members, roots = members[order], np.concatenate([f[1] for f in found])[order]
    return members, roots, labels[:, members].astype(np.int64), source


def _write(ds: StoreView, dup: np.ndarray, attrs: dict[str, Any]) -> None:
    comp = Compression.from_dict(ds.attrs["compression"], Where(ds.path, "compression"))
    group = open_group(ds.path, mode="r+")
    shard = whole_chunk_rows(ds.chunk_rows, 8, 2**20)
    arr = group.create_array(DUPLICATE_OF, shape=(ds.n_samples,), chunks=(ds.chunk_rows,),
                             shards=(shard,), dtype="int64", fill_value=-1,
                             compressors=layout.compressors(comp),
                             dimension_names=("sample",), overwrite=True)
    arr[:] = dup
    arr.update_attributes(attrs)


def dedup(store: str, *, by: str = "features", hasher: Hasher | None = None,
          progress: bool = False) -> DedupSummary:
    """Find exact duplicate rows and write ``meta/duplicate_of``.

    Parameters
    ----------
    store : path of a complete store.
    by : ``"features"`` (rows with identical feature bytes, NaN payloads aside) or
        ``"features+labels"`` (identical features and identical labels of every head).
    hasher : a test seam: ``rows -> (rows,) uint64`` replacing the stored ``meta/row_hash``
        (e.g. a constant, to prove that colliding hashes never merge different rows).
    progress : say what runs on stderr.

    Returns
    -------
    DedupSummary: rows, groups, duplicate rows and share, the largest groups, and (for
    ``by="features"``) conflicting labels per head.

    Raises
    ------
    DedupError
        Unknown ``by`` or an incomplete store; the store is unchanged.
    StoreLockedError
        An ingest or a split is writing the store.

    Examples
    --------
    >>> s = chunkstore.dedup("data/demo.zarr")  # doctest: +SKIP
    >>> s.duplicate_rows, s.share  # doctest: +SKIP
    """
    if by not in BY:
        raise DedupError(f"by must be one of {list(BY)}, found {by!r}")
    if layout.read_attrs(store).get("status") != layout.COMPLETE:
        raise DedupError(f"store {store!r} is incomplete; finish the ingest (rerun it) before "
                         "looking for duplicates")
    t0 = time.perf_counter()
    with journal.StoreLock(store):
        ds = StoreView(store)
        with zarr.config.set({"codec_pipeline.batch_size": 64}):
            members, roots, labels, source = _find(ds, by, hasher, local_scheduler())
            dup = grp.duplicate_of(ds.n_samples, members, roots)
            summary = DedupSummary(
                store=ds.path, by=by, rows=ds.n_samples,
                groups=int((members == roots).sum()), duplicate_rows=int((dup >= 0).sum()),
                largest=grp.largest(members, roots), hash_source=source,
                conflicts={} if by != "features" else {
                    h: grp.conflicts(members, roots, labels[i]) for i, h in enumerate(ds.heads)},
                wall_seconds=time.perf_counter() - t0)
            _write(ds, dup, {"rows": ds.n_samples, "groups": summary.groups,
                             "duplicate_rows": summary.duplicate_rows, "by": by,
                             "method": METHOD, "hashes": source, "version": DEDUP_FORMAT,
                             "created": layout.now_iso()})
    if progress:
        from chunkstore.runtime.messages import say

        say(f"dedup  {DUPLICATE_OF}: {summary.duplicate_rows:,} duplicate rows")
    return summary
