"""Repair of rows appended to a store built with streaming placement: verify names the bad
chunks and the append that wrote them; repair produces them again -- the ingest's rows from
its chunks' item runs, an append's from its kept (item, row) pairs, ``meta/source`` as the
append made it -- and the chunk files equal the undamaged store's. What cannot be produced
again is refused with one message before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import zarr

from chunkstore import ingest
from chunkstore.errors import IntegrityError
from chunkstore.ingest.append import append
from chunkstore.integrity import verify
from chunkstore.pipeline import repair
from chunkstore.store import layout
from chunkstore.testing import chunk_files

A = [[0, 11], [1, 0], [2, 6], [3, 21]]  # 38 rows: the ingest ends mid-chunk (chunks of 8)
B = [[4, 9], [5, 14], [6, 0], [7, 30]]  # 53 rows: 91, mid-chunk again
C = [[8, 5], [9, 7]]  # 12 rows: 103


def _cfg(python_config, store: Path, items) -> dict:
    return python_config(store, items=items, process="producers:process")


def _grow(tmp_path: Path, python_config, *appends) -> tuple[Path, dict]:
    """A streaming-placed store of A, then one streaming append per item list (each from a
    config file: repair runs the producer again from it); returns (store, ingest config)."""
    store = tmp_path / "s.zarr"
    cfg = _cfg(python_config, store, A)
    ingest(cfg, workers=2, progress=False)
    for i, items in enumerate(appends):
        path = tmp_path / f"append-{i}.json"
        path.write_text(json.dumps(_cfg(python_config, store, items)))
        append(path, workers=2)
    return store, cfg


def _key(store: Path, array: str, row: int) -> str:
    a = zarr.open_array(str(store), path=array, mode="r")
    return f"{array}/{layout.chunk_key(a, row // int(a.chunks[0]))}"


def _corrupt(store: Path, array: str, row: int) -> str:
    key = _key(store, array, row)
    data = bytearray((store / key).read_bytes())
    data[-1] ^= 0xFF
    (store / key).write_bytes(bytes(data))
    return key


def _delete(store: Path, array: str, row: int) -> str:
    key = _key(store, array, row)
    (store / key).unlink()
    return key


def _bad(store: Path) -> dict[str, str]:
    """Bad chunk -> the writer verify names."""
    report = verify(str(store), workers=1)
    return {p.key: p.writer for p in report.problems if p.kind in ("corrupt", "missing")}


def test_streaming_store_repairs_chunks_of_a_streaming_append(tmp_path, python_config):
    """(a) chunks entirely in appended rows, (b) the tail chunk holding the ingest's last rows
    (32-37) and the append's first (38-39), in features, labels, meta/source, meta/row_hash."""
    store, cfg = _grow(tmp_path, python_config, B)
    good = chunk_files(store)
    appended = {_corrupt(store, "features", 56), _corrupt(store, "meta/source", 72),
                _delete(store, "labels/move", 88)}
    tail = {_corrupt(store, "features", 36), _corrupt(store, "meta/source", 33),
            _corrupt(store, "meta/row_hash", 39), _corrupt(store, "masks/move", 38)}
    bad = _bad(store)
    assert set(bad) == appended | tail, bad
    assert all(w.startswith("append 1") for w in bad.values()), bad
    summary = repair(cfg, workers=1, progress=False)
    assert any(r.startswith("append 1 task") for r in summary.rewritten), summary.format()
    assert verify(str(store), workers=1).ok
    assert chunk_files(store) == good


def test_tails_are_produced_again_through_every_writer_before(tmp_path, python_config):
    """Two appends: append 2's tail chunk (88-95) holds append 1's last rows (88-90), whose
    task also rewrote the ingest's tail chunk; both tails, a chunk only the ingest wrote and
    one only append 2 wrote are repaired together."""
    store, cfg = _grow(tmp_path, python_config, B, C)
    good = chunk_files(store)
    keys = {_corrupt(store, "features", 90), _corrupt(store, "meta/source", 94),
            _corrupt(store, "features", 33), _corrupt(store, "meta/source", 8),
            _corrupt(store, "labels/move", 100)}
    bad = _bad(store)
    assert set(bad) == keys, bad
    assert bad[_key(store, "features", 90)].startswith("append 2"), bad
    assert bad[_key(store, "features", 33)].startswith("append 1"), bad
    repair(cfg, workers=1, progress=False)
    assert verify(str(store), workers=1).ok
    assert chunk_files(store) == good


def test_an_append_that_cannot_be_produced_again_is_refused_before_any_write(
        tmp_path, python_config):
    """Its config file is gone: one message naming the append, and no chunk is written (the
    bad chunk of the ingest's own rows is not repaired either)."""
    store, cfg = _grow(tmp_path, python_config, B)
    (tmp_path / "append-0.json").unlink()
    _corrupt(store, "features", 36)
    _corrupt(store, "features", 8)
    before = chunk_files(store)
    with pytest.raises(IntegrityError, match="append 1 .*not found"):
        repair(cfg, workers=1, progress=False)
    assert chunk_files(store) == before


def _prov_cfg(store: Path, items) -> dict:
    here = str(Path(__file__).parent.parent / "sources")
    return {"store": str(store), "schema": {"features": 4, "heads": {"a": 3}},
            "source": {"kind": "python", "path": [here], "group": True, "items": items,
                       "provenance": True, "process": "provenance_producers:process"},
            "ingest": {"chunk_rows": 8, "workers": 2}}


def test_an_append_of_the_sources_own_provenance_is_refused(tmp_path):
    """A streaming append whose meta/source is the source's own pairs keeps no (item, row)
    order, so its chunks cannot be placed again: refused, nothing written; the ingest's own
    chunks are still repaired."""
    store = tmp_path / "p.zarr"
    ingest(_prov_cfg(store, A), progress=False)
    append(_prov_cfg(store, B), workers=2)
    good = chunk_files(store)
    _corrupt(store, "features", 56)
    before = chunk_files(store)
    with pytest.raises(IntegrityError, match="append 1 .*cannot rewrite its chunks"):
        repair(_prov_cfg(store, A), workers=1, progress=False)
    assert chunk_files(store) == before
    (store / _key(store, "features", 56)).write_bytes(good[_key(store, "features", 56)])
    _corrupt(store, "features", 8)
    repair(_prov_cfg(store, A), workers=1, progress=False)
    assert chunk_files(store) == good
