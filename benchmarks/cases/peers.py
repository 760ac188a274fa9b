"""Peers of the loader: Lance and Hugging Face ``datasets`` holding the same 15 arrays (issue 14).

Used by the ``loader`` case, so the peers are timed side by side with chunkstore's loader and
the memmap gather in one run. Both copies are built once from the chunkstore store (cached
under ``work/fixtures/``), one row group of 16,384 rows at a time (memory bounded):

- Lance: ``lance.write_dataset`` of an Arrow table with ``features`` as a fixed-size list of
  float32, one int16 column per label and a fixed-size list of int8 per mask; a batch is
  ``ds.take(rows)`` of 256 random rows of a permutation, converted to the same numpy arrays.
- Hugging Face ``datasets``: the same Arrow schema as one Arrow stream file opened with
  ``datasets.Dataset.from_file`` (memory-mapped, as ``load_from_disk`` does) and
  ``with_format("numpy")``; a batch is ``ds[rows]`` of 256 random rows of a permutation.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from .. import fixtures

GROUP_ROWS = 16_384


def _names(store: Path) -> list[str]:
    """The 15 sample arrays in a fixed order (a directory listing's order may change)."""
    return sorted(fixtures.array_names(store))


def _schema(store: Path) -> Any:
    import pyarrow as pa
    import zarr

    g = zarr.open_group(str(store), mode="r")
    fields = []
    for name in _names(store):
        a = g[name]
        t = pa.from_numpy_dtype(a.dtype)
        fields.append(pa.field(name.replace("/", "__"),
                               pa.list_(t, a.shape[1]) if a.ndim == 2 else t))
    return pa.schema(fields)


def _batches(store: Path) -> Any:
    """Arrow record batches of the store's 15 sample arrays, ``GROUP_ROWS`` rows each."""
    import pyarrow as pa
    import zarr

    g = zarr.open_group(str(store), mode="r")
    names = _names(store)
    schema = _schema(store)
    n = g["features"].shape[0]
    for i in range(0, n, GROUP_ROWS):
        cols = []
        for name in names:
            a = g[name][i:i + GROUP_ROWS]
            cols.append(pa.FixedSizeListArray.from_arrays(pa.array(a.ravel()), a.shape[1])
                        if a.ndim == 2 else pa.array(a))
        yield pa.RecordBatch.from_arrays(cols, schema=schema)


def lance_dir(rows: int) -> Path:
    """The store of ``fixtures.large_store(rows)`` as a Lance dataset."""
    store = fixtures.large_store(rows)

    def build(tmp: Path) -> None:
        import lance
        import pyarrow as pa

        reader = pa.RecordBatchReader.from_batches(_schema(store), _batches(store))
        lance.write_dataset(reader, str(tmp / "data.lance"))

    return fixtures.cached(f"peers-lance-{rows}", build) / "data.lance"


def arrow_file(rows: int) -> Path:
    """The store of ``fixtures.large_store(rows)`` as one Arrow stream file (HF datasets)."""
    store = fixtures.large_store(rows)

    def build(tmp: Path) -> None:
        import pyarrow as pa

        with pa.OSFile(str(tmp / "data.arrow"), "wb") as sink, \
                pa.ipc.new_stream(sink, _schema(store)) as writer:
            for batch in _batches(store):
                writer.write_batch(batch)

    return fixtures.cached(f"peers-arrow-{rows}", build) / "data.arrow"


def _numpy(table: Any) -> dict[str, Any]:
    """An Arrow table of the schema above as numpy arrays (2-D for the list columns)."""
    out = {}
    for name in table.column_names:
        col = table.column(name).combine_chunks()
        if hasattr(col.type, "list_size"):
            out[name] = col.flatten().to_numpy().reshape(len(col), col.type.list_size)
        else:
            out[name] = col.to_numpy()
    return out


def epochs(method: str, rows: int, batch: int) -> Any:
    """``epoch(e)`` -> iterator of numpy batch dicts (with ``index``) of a random permutation."""
    if method == "lance":
        import lance

        ds = lance.dataset(str(lance_dir(rows)))
        n = ds.count_rows()

        def get(idx: Any) -> dict[str, Any]:
            return _numpy(ds.take(idx))
    else:
        import datasets

        datasets.disable_progress_bars()
        hf = datasets.Dataset.from_file(str(arrow_file(rows))).with_format("numpy")
        n = len(hf)

        def get(idx: Any) -> dict[str, Any]:
            return dict(hf[idx])

    def epoch(e: int) -> Any:
        perm = np.random.default_rng(e).permutation(n)
        for i in range(0, n, batch):
            idx = perm[i:i + batch]
            yield {"index": idx, **get(idx)}

    return epoch


def check_batch(method: str, rows: int, batch: int) -> None:
    """One batch of the peer equals the store's rows (the conversion is complete and right)."""
    import zarr

    store = fixtures.large_store(rows)
    g = zarr.open_group(str(store), mode="r")
    b = next(epochs(method, rows, batch)(0))
    idx = np.asarray(b["index"])
    order = np.argsort(idx)
    for name in fixtures.array_names(store):
        got = np.asarray(b[name.replace("/", "__")])
        want = g[name].get_orthogonal_selection((idx[order],))[np.argsort(order)]
        assert np.array_equal(got, want, equal_nan=True), (method, name)


def bytes_on_disk(method: str, rows: int) -> int:
    from ..harness import tree_bytes

    return tree_bytes(lance_dir(rows) if method == "lance" else arrow_file(rows))


def timed(method: str, rows: int, batch: int) -> float:
    """Seconds of one epoch (for quick looks; the loader case measures them properly)."""
    t0 = time.perf_counter()
    sum(1 for _ in epochs(method, rows, batch)(1))
    return time.perf_counter() - t0
