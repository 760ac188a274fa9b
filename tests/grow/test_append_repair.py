"""Rows added by appends are repaired from the appends' own sources: ``verify`` names the
append task that wrote a bad chunk, and rewriting it (the chunk an append shares with the rows
before it included, rebuilt from the earlier writers' sources) gives back the original bytes."""

from __future__ import annotations

import shutil
from pathlib import Path

import zarr

from chunkstore import ingest
from chunkstore.config import load_config
from chunkstore.ingest.append import append
from chunkstore.ingest.append_repair import rerun_appended, split_bad_rows
from chunkstore.integrity import verify
from chunkstore.store import journal, layout
from chunkstore.testing import chunk_files, make_items, write_config, write_items


def _cfg(tmp: Path, name: str, items: list, store: Path) -> Path:
    return write_config(tmp / f"{name}.yaml", store=store,
                        paths=write_items(tmp / f"{name}-items", items),
                        ingest={"chunk_rows": 8, "task_chunks": 2, "workers": 1})


def _corrupt(store: Path, array: str, row: int) -> str:
    """Flip the last byte of the file (chunk or shard) holding ``row`` of ``array``."""
    a = zarr.open_array(str(store), path=array, mode="r")
    key = f"{array}/{layout.chunk_key(a, row // int(a.chunks[0]))}"
    path = store / key
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    return key


def test_bad_chunks_written_by_appends_are_named_and_rewritten_identically(tmp_path):
    items = make_items([5, 12, 9, 3, 20, 6], seed=5)
    store = tmp_path / "s.zarr"
    ingest(_cfg(tmp_path, "a", items[:2], store), progress=False)           # rows [0, 17)
    append(_cfg(tmp_path, "b", items[2:5], store))                          # rows [17, 49)
    append(_cfg(tmp_path, "c", items[5:], store))                           # rows [49, 55)
    ref = tmp_path / "ref.zarr"
    shutil.copytree(store, ref)
    shared = _corrupt(store, "features", 17)   # the ingest's last rows and append 1's first
    keys = {shared, _corrupt(store, "labels/move", 40),  # append 1's own rows
            _corrupt(store, "features", 50)}              # append 2's, after append 1's last
    report = verify(str(store), workers=1)
    bad = {p.key: p for p in report.problems if p.kind == "corrupt"}
    assert set(bad) == keys, report.format()
    assert bad[shared].writer.startswith("append 1 task")
    assert any(p.writer.startswith("append 2 task") for p in bad.values())
    rows = sorted({p.rows for p in bad.values()})
    ingest_rows, appended = split_bad_rows(str(store), rows)
    assert ingest_rows == [] and appended == rows
    config = load_config(tmp_path / "a.yaml")  # repair is given the original ingest config
    with journal.StoreLock(str(store)):
        done = rerun_appended(config, appended)
    assert any(d.startswith("append 1 task") for d in done)
    assert any(d.startswith("append 2 task") for d in done)
    assert verify(str(store), workers=1).ok
    assert chunk_files(store) == chunk_files(ref)


def test_chunkstore_repair_rewrites_appended_chunks(tmp_path):
    from chunkstore.pipeline import repair

    items = make_items([5, 12, 9, 3, 20], seed=6)
    store = tmp_path / "s.zarr"
    ingest(_cfg(tmp_path, "a", items[:2], store), progress=False)
    append(_cfg(tmp_path, "b", items[2:], store))
    ref = tmp_path / "ref.zarr"
    shutil.copytree(store, ref)
    _corrupt(store, "features", 3)       # the ingest's own rows
    _corrupt(store, "features", 17)      # shared by the ingest and the append
    _corrupt(store, "masks/move", 40)    # the append's
    summary = repair(tmp_path / "a.yaml", workers=1, progress=False)
    assert summary.after.ok and any("append 1 task" in r for r in summary.rewritten)
    assert chunk_files(store) == chunk_files(ref)
