"""Appending from a streaming producer (a python source without a count): the rows are staged
by a streaming ingest inside the store's journal, then appended in order. Streaming content is
deterministic as a set, so every check is: each (item, row) exactly once, each row equal to
``producers.make(item)[row]``, the old rows unchanged in place, statistics equal to a full
recompute, splits extended, ``verify`` clean -- after an uninterrupted append and after a
SIGKILL during the staging and during the ordered phase."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr
from killing import kill_after
from producers import HEADS, make

from chunkstore import ingest
from chunkstore.errors import AppendError
from chunkstore.ingest.append import append
from chunkstore.ingest.append_streaming import staging_path
from chunkstore.ingest.append_task import completed
from chunkstore.integrity import verify
from chunkstore.splits.write import run_split
from chunkstore.store import layout
from chunkstore.store.journal import completed_tasks
from chunkstore.testing import chunk_files

A = [[0, 11], [1, 0], [2, 6], [3, 21]]  # 38 rows: ends mid-chunk (chunks of 8)
B = [[4, 9], [5, 14], [6, 0], [7, 30], [8, 5]]  # 58 rows


def _cfg(python_config, store, items, **source):
    return python_config(store, items=items, process="producers:process", **source)


def _pairs(items) -> list[tuple[int, int]]:
    return sorted((k, r) for k, n in items for r in range(n))


def _rows_match(g: zarr.Group, start: int, stop: int, pairs: np.ndarray) -> None:
    """Rows [start, stop) are producers.make(key)[row] for the given (key, row) pairs."""
    made = {k: make((k, int(n))) for k, n in
            {int(k): int(pairs[pairs[:, 0] == k, 1].max()) + 1 for k in np.unique(pairs[:, 0])
             }.items()}
    want_x = np.stack([made[k]["features"][r] for k, r in pairs])
    np.testing.assert_array_equal(g["features"][start:stop], want_x)
    for h in HEADS:
        np.testing.assert_array_equal(g[f"labels/{h}"][start:stop],
                                      [made[k]["labels"][h][r] for k, r in pairs])
        np.testing.assert_array_equal(g[f"masks/{h}"][start:stop],
                                      np.stack([made[k]["masks"][h][r] for k, r in pairs]))
    np.testing.assert_array_equal(g["meta/group"][start:stop], pairs[:, 0])


def _decoded_pairs(g: zarr.Group, start: int, stop: int) -> np.ndarray:
    """(key, row) of each row from feature 0 (producers encode key * 10,000 + row)."""
    f0 = np.asarray(g["features"][start:stop, 0]).astype(np.int64)
    return np.stack([f0 // 10_000, f0 % 10_000], axis=1)


def _check_stats(g: zarr.Group) -> None:
    x = np.asarray(g["features"][:]).astype(np.float64)
    s = g["stats/all"]
    np.testing.assert_array_equal(s["count"][:], len(x))
    np.testing.assert_array_equal(s["min"][:], x.min(0))
    np.testing.assert_array_equal(s["max"][:], x.max(0))
    np.testing.assert_allclose(s["mean"][:], x.mean(0), rtol=1e-12, atol=0)
    np.testing.assert_allclose(np.asarray(s["std"][:]) ** 2, x.var(0, ddof=0), rtol=1e-10,
                               atol=0)
    for h, k in HEADS.items():
        np.testing.assert_array_equal(s[f"class_counts/{h}"][:],
                                      np.bincount(g[f"labels/{h}"][:], minlength=k))


def _check_streaming_store(store: Path, items_a, items_b) -> None:
    """A streaming-placed store after the append: every pair once (meta/source continues the
    item ids), rows equal the producer's, stats exact, journal clean, verify OK."""
    g = zarr.open_group(str(store), mode="r")
    attrs = g.attrs["chunkstore"]
    n = sum(c for _, c in items_a + items_b)
    assert attrs["n_samples"] == n and attrs["status"] == "complete"
    assert attrs["n_items"] == len(items_a) + len(items_b)
    src = np.asarray(g["meta/source"][:])
    # meta/source is (position in the item lists, row); the producers' keys equal the positions
    assert sorted(map(tuple, src.tolist())) == _pairs(items_a + items_b)
    _rows_match(g, 0, n, src)
    _check_stats(g)
    assert not Path(staging_path(str(store))).exists()
    assert verify(str(store), workers=1).ok


def test_streaming_store_grows_from_a_streaming_producer(tmp_path, python_config):
    store = tmp_path / "s.zarr"
    ingest(_cfg(python_config, store, A), workers=2, progress=False)
    run_split(str(store), method="random", seed=4, name="default")
    run_split(str(store), method="group", seed=4, name="grouped")
    n_a = sum(c for _, c in A)
    old_codes = {s: np.asarray(zarr.open_array(str(store), path=f"splits/{s}")[:])
                 for s in ("default", "grouped")}
    old_rows = {k: np.asarray(zarr.open_array(str(store), path=k)[:])
                for k in ("features", "meta/source", "labels/move")}
    full = n_a // 8  # A's whole chunks: their files must not change
    before = {k: v for k, v in chunk_files(store).items()
              if "/c/" in k and int(k.split("/c/")[1].split("/")[0]) < full}
    summary = append(_cfg(python_config, store, B), workers=2)
    assert (summary.rows_before, summary.rows_added) == (n_a, 58)
    assert set(summary.splits_extended) == {"default", "grouped"}
    after = chunk_files(store)
    assert before and all(after[k] == v for k, v in before.items())
    for k, v in old_rows.items():  # the partial chunk was rewritten with its old rows first
        np.testing.assert_array_equal(zarr.open_array(str(store), path=k)[:n_a], v)
    _check_streaming_store(store, A, B)
    g = zarr.open_group(str(store), mode="r")
    for s, codes in old_codes.items():
        got = np.asarray(g[f"splits/{s}"][:])
        assert len(got) == n_a + 58 and (got[n_a:] >= 0).all()
        np.testing.assert_array_equal(got[:n_a], codes)
    grouped, groups = np.asarray(g["splits/grouped"][:]), np.asarray(g["meta/group"][:])
    assert all(len(np.unique(grouped[groups == k])) == 1 for k in np.unique(groups))
    with pytest.raises(AppendError, match="already appended"):
        append(_cfg(python_config, store, B), workers=2)


def test_ordered_store_grows_from_a_streaming_producer(tmp_path, python_config):
    store = tmp_path / "o.zarr"
    ingest(_cfg(python_config, store, A, count="producers:rows_of"), progress=False)
    n_a = sum(c for _, c in A)
    old = np.asarray(zarr.open_array(str(store), path="features")[:])
    summary = append(_cfg(python_config, store, B), workers=2)
    assert (summary.rows_before, summary.rows_added) == (n_a, 58)
    g = zarr.open_group(str(store), mode="r")
    assert "source" not in g["meta"]  # an ordered store gets no meta/source
    np.testing.assert_array_equal(g["features"][:n_a], old)
    _rows_match(g, 0, n_a, np.array(_pairs(A)))  # ordered: A's rows in item order
    new = _decoded_pairs(g, n_a, n_a + 58)
    assert sorted(map(tuple, new.tolist())) == _pairs(B)
    _rows_match(g, n_a, n_a + 58, new)
    _check_stats(g)
    assert not Path(staging_path(str(store))).exists()
    assert verify(str(store), workers=1).ok


def test_streaming_store_grows_from_an_ordered_source(tmp_path, python_config):
    """A producer with a count (ordered placement) appended to a streaming-placed store: its
    rows follow in item order and get meta/source (item, row) continuing the item ids."""
    store = tmp_path / "s.zarr"
    ingest(_cfg(python_config, store, A), workers=2, progress=False)
    append(_cfg(python_config, store, B, count="producers:rows_of"), workers=2)
    _check_streaming_store(store, A, B)
    src = np.asarray(zarr.open_array(str(store), path="meta/source")[38:])
    assert src.tolist() == [list(p) for p in _pairs(B)]  # ordered: in item order


def _prov_cfg(store: Path, items, process: str = "process", provenance: bool = True):
    here = str(Path(__file__).parent.parent / "sources")
    return {"store": str(store), "schema": {"features": 4, "heads": {"a": 3}},
            "source": {"kind": "python", "path": [here], "group": True, "items": items,
                       "provenance": provenance, "process": f"provenance_producers:{process}"},
            "ingest": {"chunk_rows": 8, "workers": 2}}


def test_own_provenance_is_carried_over(tmp_path):
    """A store built with the source's own (item, row) pairs gets the new rows' own pairs; an
    append without them is refused, nothing changed."""
    store = tmp_path / "p.zarr"
    ingest(_prov_cfg(store, A), progress=False)
    before = chunk_files(store)
    with pytest.raises(AppendError, match="provenance: true"):
        append(_prov_cfg(store, B, "process_without_source", provenance=False))
    assert chunk_files(store) == before
    append(_prov_cfg(store, B), workers=2)
    g = zarr.open_group(str(store), mode="r")
    src = np.asarray(g["meta/source"][:])
    assert len(src) == 38 + 58
    key, row = (5_000 - src[:, 0]), (src[:, 1] - 1) // 3  # provenance_producers.item_row
    assert sorted(zip(key.tolist(), row.tolist(), strict=True)) == _pairs(A + B)
    f0 = np.asarray(g["features"][:, 0]).astype(np.int64)
    np.testing.assert_array_equal(f0, key * 10_000 + row)  # each row beside its own pair
    assert verify(str(store), workers=1).ok


# ------------------------------------------------------------------ SIGKILL, then the rerun

KILL_A = [[k, 3 + (7 * k) % 17] for k in range(6)]
KILL_B = [[k, 1 + (5 * k) % 23] for k in range(6, 46)]  # 40 items, slow producer


def _cli_config(tmp: Path, store: Path, items, producers_path: str) -> Path:
    cfg = {"store": str(store), "schema": {"features": 4, "heads": HEADS},
           "source": {"kind": "python", "group": True, "path": [producers_path],
                      "items": items, "process": "producers:process_slow"},
           "ingest": {"chunk_rows": 8, "task_chunks": 1, "workers": 2}}
    path = tmp / "b.json"
    path.write_text(json.dumps(cfg))
    return path


@pytest.mark.parametrize("phase", ["staging", "ordered"])
def test_killed_streaming_append_resumes(tmp_path, python_config, producers_path, phase):
    store = tmp_path / "s.zarr"
    ingest(_cfg(python_config, store, KILL_A), workers=2, progress=False)
    n_a = sum(c for _, c in KILL_A)
    cfg = _cli_config(tmp_path, store, KILL_B, producers_path)
    cli = [sys.executable, "-m", "chunkstore.cli", "append", str(cfg)]
    env = dict(os.environ, PYTHONPATH=producers_path)
    proc = subprocess.Popen(cli, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if phase == "staging":
        killed = kill_after(proc, lambda: _staged_chunks(store), 3)
    else:
        killed = kill_after(proc, lambda: _append_tasks(store), 3)
    assert killed, f"the append finished before the kill in its {phase} phase"
    attrs = zarr.open_group(str(store), mode="r").attrs["chunkstore"]
    assert attrs["n_samples"] == n_a and attrs["status"] == "complete"  # readers: old rows
    staged = Path(staging_path(str(store)))
    current = Path(store, "_chunkstore", "appends", "current.json")
    assert staged.exists() and current.exists() == (phase == "ordered")
    done = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    _check_streaming_store(store, KILL_A, KILL_B)


def _staged_chunks(store: Path) -> set[int]:
    staging = staging_path(str(store))
    return completed_tasks(staging) if Path(staging, "_chunkstore", "tasks").exists() else set()


def _append_tasks(store: Path) -> set[int]:
    tasks = Path(store, "_chunkstore", "appends", "tasks")
    return completed(str(store)) if tasks.exists() else set()


# ------------------------------------------------------------------ verify and repair

def _corrupt(store: Path, array: str, row: int) -> str:
    a = zarr.open_array(str(store), path=array, mode="r")
    key = f"{array}/{layout.chunk_key(a, row // int(a.chunks[0]))}"
    data = bytearray((store / key).read_bytes())
    data[-1] ^= 0xFF
    (store / key).write_bytes(bytes(data))
    return key


def test_ordered_store_repairs_chunks_of_a_streaming_append(tmp_path, python_config):
    """A bad chunk a streaming append wrote into an ordered store (the shared tail chunk, and
    one of its own) is named by verify and rewritten byte-identically: the producer runs again
    and its rows are placed by the (item, row) pairs the append kept."""
    from chunkstore.pipeline import repair

    store = tmp_path / "o.zarr"
    cfg = _cfg(python_config, store, A, count="producers:rows_of")
    ingest(cfg, progress=False)
    b_file = tmp_path / "b.json"  # repair runs the producer again from the config file
    b_file.write_text(json.dumps(_cfg(python_config, store, B)))
    append(b_file, workers=2)
    good = chunk_files(store)
    keys = {_corrupt(store, "features", 36), _corrupt(store, "labels/move", 80)}
    report = verify(str(store), workers=1)
    assert {p.key for p in report.problems if p.kind == "corrupt"} == keys, report.format()
    assert all(p.writer.startswith("append 1") for p in report.problems if p.kind == "corrupt")
    repair(cfg, workers=1, progress=False)
    assert verify(str(store), workers=1).ok
    assert chunk_files(store) == good


def test_staged_rows_of_another_producer_are_refused_then_finished(tmp_path, python_config):
    """Staging done but the append not started (killed in between): another item list is
    refused with one message, nothing changed; the same command finishes from the staged
    rows without producing them again."""
    from chunkstore.config import Config
    from chunkstore.ingest.append_streaming import staging_config
    from chunkstore.ingest.coordinator import ingest_store

    store = tmp_path / "s.zarr"
    ingest(_cfg(python_config, store, A), workers=2, progress=False)
    cfg_b = Config.from_dict(_cfg(python_config, store, B))
    ingest_store(staging_config(cfg_b), workers=2, progress=False)  # the staging phase only
    before = chunk_files(store)
    with pytest.raises(AppendError, match="staged streaming append of another item list"):
        append(_cfg(python_config, store, B[:2]), workers=2)
    assert chunk_files(store) == before
    staged_x = np.asarray(zarr.open_array(staging_path(str(store)), path="features")[:])
    append(_cfg(python_config, store, B), workers=2)
    _check_streaming_store(store, A, B)
    np.testing.assert_array_equal(  # the staged rows, in their staged order
        zarr.open_array(str(store), path="features")[38:], staged_x)


def test_pairs_are_kept_once_and_a_rerun_after_the_staging_store_went_is_a_no_op(
        tmp_path, python_config):
    """A streaming append killed after its staging store was deleted (pairs saved) but before
    its commit: the rerun's save of the pairs must not read the deleted staging store."""
    from chunkstore.ingest.append_streaming import pairs_path, save_pairs
    from chunkstore.store.journal import append_records

    store = tmp_path / "o.zarr"
    ingest(_cfg(python_config, store, A, count="producers:rows_of"), progress=False)
    append(_cfg(python_config, store, B), workers=2)
    sha = append_records(str(store))[-1]["source_sha256"]
    kept = pairs_path(str(store), sha)
    assert kept.exists() and not Path(staging_path(str(store))).exists()
    before = kept.read_bytes()
    save_pairs(str(store), sha)  # the rerun's step: nothing to read, nothing rewritten
    assert kept.read_bytes() == before
