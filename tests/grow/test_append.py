"""``chunkstore append``: ingest(A) + append(B) is byte-identical to ingest(A then B), for A
ending mid-chunk and on a chunk boundary, with 1 and 2 workers, on threads (what a small
append uses) and on worker processes; bad appends change nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from chunkstore import ingest
from chunkstore.errors import AppendError, StoreLockedError
from chunkstore.ingest.append import append
from chunkstore.store import journal
from chunkstore.testing import chunk_files, concat, make_items, write_config, write_items

CHUNK = 8


def _cfg(tmp: Path, name: str, items: list, store: Path, **ingest_opts) -> Path:
    paths = write_items(tmp / f"{name}-items", items)
    return write_config(tmp / f"{name}.yaml", store=store, paths=paths,
                        ingest={"chunk_rows": CHUNK, "task_chunks": 2, **ingest_opts})


def _grown(tmp: Path, a_sizes: list[int], b_sizes: list[int], workers: int,
           pool: str = "auto") -> tuple[Path, Path, list, list]:
    items = make_items(a_sizes + b_sizes, seed=3)
    a, b = items[:len(a_sizes)], items[len(a_sizes):]
    whole = tmp / "whole.zarr"
    ingest(_cfg(tmp, "whole", items, whole, workers=workers), progress=False)
    grown = tmp / "grown.zarr"
    ingest(_cfg(tmp, "a", a, grown, workers=workers), progress=False)
    pipeline = zarr.config.get("codec_pipeline.path")
    summary = append(_cfg(tmp, "b", b, grown, workers=workers), pool=pool)
    assert zarr.config.get("codec_pipeline.path") == pipeline  # zarrs only while tasks ran
    assert summary.rows_before == sum(a_sizes) and summary.rows_added == sum(b_sizes)
    return whole, grown, a, b


@pytest.mark.parametrize("a_sizes,b_sizes,workers,pool", [
    ([5, 12], [9, 3, 20], 1, "auto"),     # A ends mid-chunk (17 rows); threads
    ([16], [7, 11], 2, "auto"),           # A ends on a chunk boundary, 2 threads
    ([3, 30], [1], 2, "auto"),            # A ends mid-chunk, B smaller than a chunk
    ([5, 12], [9, 3, 20], 2, "processes"),  # 2 worker processes
])
def test_append_is_byte_identical_to_one_ingest(tmp_path, a_sizes, b_sizes, workers, pool):
    whole, grown, a, b = _grown(tmp_path, a_sizes, b_sizes, workers, pool)
    assert chunk_files(grown) == chunk_files(whole)
    attrs = zarr.open_group(str(grown), mode="r").attrs["chunkstore"]
    assert attrs["n_samples"] == sum(a_sizes) + sum(b_sizes)
    assert attrs["status"] == "complete"
    np.testing.assert_array_equal(zarr.open_array(str(grown), path="features", mode="r")[:],
                                  concat(a + b, "strategic_features"))


def _a_store(tmp: Path) -> tuple[Path, list]:
    items = make_items([5, 12], seed=1)
    store = tmp / "s.zarr"
    ingest(_cfg(tmp, "a", items, store), progress=False)
    return store, items


def _snapshot(store: Path) -> dict[str, bytes]:
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*"))
            if p.is_file() and "_chunkstore" not in p.parts}


def test_schema_mismatch_is_a_clear_error_that_changes_nothing(tmp_path):
    store, _ = _a_store(tmp_path)
    before = _snapshot(store)
    other = make_items([6], seed=2, n_features=5)
    cfg = write_config(tmp_path / "bad.yaml", store=store, n_features=5,
                       paths=write_items(tmp_path / "bad", other),
                       ingest={"chunk_rows": CHUNK})
    with pytest.raises(AppendError, match="feature_names differs"):
        append(cfg)
    chunked = _cfg(tmp_path, "chunk", make_items([6], seed=2), store)
    text = chunked.read_text().replace("chunk_rows: 8", "chunk_rows: 4")
    chunked.write_text(text)
    with pytest.raises(AppendError, match="chunk_rows differs"):
        append(chunked)
    assert _snapshot(store) == before


def test_incomplete_store_and_locked_store_are_refused(tmp_path):
    store, _ = _a_store(tmp_path)
    cfg = _cfg(tmp_path, "b", make_items([6], seed=2), store)
    before = _snapshot(store)
    with journal.StoreLock(str(store)):
        with pytest.raises(StoreLockedError):
            append(cfg)
    assert _snapshot(store) == before
    group = zarr.open_group(str(store), mode="r+")
    attrs = dict(group.attrs["chunkstore"])
    group.attrs["chunkstore"] = {**attrs, "status": "incomplete"}
    before = _snapshot(store)
    with pytest.raises(AppendError, match="not complete"):
        append(cfg)
    assert _snapshot(store) == before


def test_the_same_source_is_not_appended_twice(tmp_path):
    store, items = _a_store(tmp_path)
    b = make_items([6], seed=2)
    cfg = _cfg(tmp_path, "b", b, store)
    append(cfg)
    before = _snapshot(store)
    with pytest.raises(AppendError, match="already appended"):
        append(cfg)
    assert _snapshot(store) == before
    shutil.rmtree(tmp_path / "b-items")


def test_many_small_appends_equal_one_ingest(tmp_path):
    """Five appends of a few rows each (no fragments, no compaction): the same chunk files as
    one ingest; a stored kfold split is extended by its own rule every time."""
    from chunkstore.splits.write import run_split

    sizes = [21, 3, 5, 1, 9, 6]
    items = make_items(sizes, seed=4)
    whole, grown = tmp_path / "whole.zarr", tmp_path / "grown.zarr"
    ingest(_cfg(tmp_path, "whole", items, whole), progress=False)
    ingest(_cfg(tmp_path, "a", items[:1], grown), progress=False)
    run_split(str(grown), method="kfold", k=3, seed=2, name="folds")
    for k in range(1, len(sizes)):
        append(_cfg(tmp_path, f"b{k}", items[k:k + 1], grown))
    assert chunk_files(grown) == chunk_files(whole)
    run_split(str(whole), method="kfold", k=3, seed=2, name="folds")
    np.testing.assert_array_equal(zarr.open_array(str(grown), path="splits/folds")[:],
                                  zarr.open_array(str(whole), path="splits/folds")[:])


def test_small_file_appends_run_in_process_and_large_or_python_ones_on_processes(
        tmp_path, python_config):
    from chunkstore.config import Config, load_config
    from chunkstore.ingest.append import THREADS_MAX_BYTES, in_process

    config = load_config(_cfg(tmp_path, "b", make_items([3]), tmp_path / "s.zarr"))
    row = 4 * 4  # 4 float32 features
    assert in_process(config, THREADS_MAX_BYTES // row)
    assert not in_process(config, THREADS_MAX_BYTES // row + 1)
    assert not in_process(config, 10, "processes") and in_process(config, 10**9, "threads")
    with pytest.raises(AppendError, match="pool must be one of"):
        in_process(config, 10, "fork")
    python = Config.from_dict(python_config(tmp_path / "p.zarr", items=[[0, 3]],
                                            process="producers:process", count="producers:rows_of"))
    assert not in_process(python, 10)  # a user's callables may not be thread-safe
