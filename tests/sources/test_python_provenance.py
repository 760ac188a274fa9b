"""A python source's own provenance (``provenance: true``, ``process()`` returns ``source``):
``meta/source`` holds it; resume after SIGKILL, verify and repair still work from the journal's
(item, row) runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st
from killing import kill_after

from chunkstore import ingest
from chunkstore.core.schema import Schema, Where
from chunkstore.errors import ConfigError, IntegrityError, SourceError
from chunkstore.ingest.recovery import item_rows_of
from chunkstore.ingest.streaming import runs_of
from chunkstore.integrity import verify
from chunkstore.pipeline import repair
from chunkstore.sources import check_batch, source_class
from chunkstore.store.journal import completed_tasks
from chunkstore.testing import chunk_files

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import provenance_producers as pp  # noqa: E402

SCHEMA = {"features": pp.N_FEATURES, "heads": {pp.HEAD: pp.CLASSES}}
SIZES = [0, 1, 5, 8, 30, 0, 17, 3, 9, 40, 2, 7, 8, 16, 1]


def config(store: Path, **source) -> dict:
    return {"store": str(store), "schema": SCHEMA,
            "source": {"kind": "python", "path": [str(HERE)], "group": True,
                       "provenance": True, "process": "provenance_producers:process", **source},
            "ingest": {"chunk_rows": 8, "workers": 2}}


def python_source(**options):
    schema = Schema.from_dict(SCHEMA)
    cls = source_class("python")
    opts = cls.Options.from_dict({"path": [str(HERE)], "items": [[0, 5], [1, 3]], **options},
                                 Where("t.yaml"), schema)
    return cls(opts, schema), schema


def assert_store_of(store: Path, items: list[tuple[int, int]]) -> np.ndarray:
    """Every row of every item exactly once, meta/source = the producer's provenance, every
    array equal to what process() made for that row. Returns meta/source."""
    g = zarr.open_group(str(store), mode="r")
    n = sum(c for _, c in items)
    assert g.attrs["chunkstore"]["status"] == "complete" and g["meta/source"].shape == (n, 2)
    src = g["meta/source"][:]
    expected = np.concatenate([pp.provenance_of(k, c) for k, c in items])
    assert sorted(map(tuple, src.tolist())) == sorted(map(tuple, expected.tolist()))
    keys, rows = pp.item_row(src)
    made = {k: pp.process((k, c)) for k, c in items if c}
    x = g["features"][:]
    np.testing.assert_array_equal(x, np.stack([made[k]["features"][r]
                                               for k, r in zip(keys, rows, strict=True)]))
    np.testing.assert_array_equal(g[f"labels/{pp.HEAD}"][:],
                                  [made[k]["labels"][pp.HEAD][r] for k, r in zip(keys, rows,
                                                                                   strict=True)])
    np.testing.assert_array_equal(g[f"masks/{pp.HEAD}"][:],
                                  np.stack([made[k]["masks"][pp.HEAD][r]
                                            for k, r in zip(keys, rows, strict=True)]))
    np.testing.assert_array_equal(g["meta/group"][:], keys)
    np.testing.assert_allclose(g["stats/all/mean"][:], x.astype(np.float64).mean(0), rtol=1e-12)
    return src


def sorted_arrays(store: Path) -> dict[str, np.ndarray]:
    """Every sample array with rows in meta/source order (streaming records the order)."""
    g = zarr.open_group(str(store), mode="r")
    order = np.lexsort(g["meta/source"][:].T[::-1])
    names = ["features", f"labels/{pp.HEAD}", f"masks/{pp.HEAD}", "meta/group", "meta/source",
             "meta/row_hash"]
    return {k: g[k][:][order] for k in names}


# ---------------------------------------------------------------------------- the source side

def test_config_declares_provenance_and_keeps_old_hashes():
    src, _ = python_source(provenance=True)
    assert src.has_source and src.options.to_dict()["provenance"] is True
    plain, _ = python_source()
    assert not plain.has_source and "provenance" not in plain.options.to_dict()


def test_provenance_needs_streaming_placement():
    with pytest.raises(ConfigError, match=r"key 'provenance': provenance: true .*needs "
                                          r"streaming placement"):
        python_source(provenance=True, count="provenance_producers:process")
    with pytest.raises(ConfigError, match="needs streaming placement"):
        python_source(provenance=True, placement="ordered", counting_pass=True)


def test_batch_carries_checked_provenance():
    src, schema = python_source(provenance=True, process="provenance_producers:process")
    b = src.run(0)
    np.testing.assert_array_equal(b.source, pp.provenance_of(0, 5))
    checked = check_batch(b, schema, where="item 0", item_start=0, rows=5, has_group=False,
                          has_source=True)
    assert checked.source.dtype == np.int64
    np.testing.assert_array_equal(checked.source, pp.provenance_of(0, 5))
    np.testing.assert_array_equal(src.read(0, 1, 4).source, pp.provenance_of(0, 5)[1:4])


@pytest.mark.parametrize("process, declared, message", [
    ("process", False, r"item 0 \(\[0, 5\]\): process\(\) returned 'source' provenance, but "
                       r"source\.provenance is not set; add 'provenance: true'"),
    ("process_without_source", True, r"item 0 \(\[0, 5\]\): process\(\) returned no 'source'; "
                                     r"source\.provenance: true says"),
])
def test_provenance_and_the_config_must_agree(process, declared, message):
    src, _ = python_source(provenance=declared, process=f"provenance_producers:{process}")
    with pytest.raises(SourceError, match=message):
        src.run(0)


def test_bad_provenance_shape_names_the_item():
    src, schema = python_source(provenance=True, process="provenance_producers:process_bad_source")
    with pytest.raises(SourceError, match=r"item 0: 'source' provenance has shape \(5, 1\) and "
                                          r"dtype int64; expected \(5, 2\) integers"):
        check_batch(src.run(0), schema, where="item 0", item_start=0, rows=5, has_group=True,
                    has_source=True)
    b = src.run(0)
    floats = type(b)(b.features, b.labels, b.masks, b.group, np.zeros((5, 2)))
    with pytest.raises(SourceError, match="dtype float64; expected"):
        check_batch(floats, schema, where="item 0", item_start=0, rows=5, has_group=True)


# ---------------------------------------------------------------------------- the store side

@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 5), st.integers(1, 4)),
                max_size=12))
def test_item_rows_of_inverts_runs_of(segments):
    """A reclaimed chunk's (item, row) pairs come back from its record's runs alone."""
    rows = [(item, r) for item, start, n in segments for r in range(start, start + n)]
    pairs = np.array(rows, dtype=np.int64).reshape(-1, 2)
    np.testing.assert_array_equal(item_rows_of(runs_of(pairs)), pairs)


@pytest.mark.parametrize("workers", [1, 2])
def test_streaming_store_keeps_the_sources_provenance(tmp_path, workers):
    items = [(k, n) for k, n in enumerate(SIZES)]
    summary = ingest(config(tmp_path / "s.zarr"), items=items, workers=workers, progress=False)
    assert summary.rows == sum(SIZES)
    assert_store_of(tmp_path / "s.zarr", items)
    assert verify(str(tmp_path / "s.zarr"), workers=1).ok


def _cli(cfg: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "chunkstore.cli", "ingest", str(cfg),
                             "--quiet"], start_new_session=True, env={**os.environ, **env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


KILL_SIZES = [int(n) for n in np.random.default_rng(19).integers(0, 30, size=60)]


@pytest.mark.parametrize("when", ["mid-ingest", pytest.param("pack-mid",
                                                             marks=pytest.mark.slow)])
def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path, monkeypatch, when):
    """Killed while chunks are committed (or while the leftovers are packed), the resumed
    ingest reclaims rows by the journal's (item, row) runs, not by meta/source, and ends with
    the same rows, provenance and statistics as a run that was never killed."""
    env = {"CHUNKSTORE_TEST_SIZES": ",".join(map(str, KILL_SIZES)),
           "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    if when == "pack-mid":
        env["CHUNKSTORE_PAUSE_AT"] = when
    cfg = config(tmp_path / "s.zarr", items="provenance_producers:items_from_env",
                 process="provenance_producers:process_slow")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = _cli(path, env)
    if when == "pack-mid":
        paused = tmp_path / "s.zarr/_chunkstore/paused-pack-mid"
        assert kill_after(proc, lambda: {1} if paused.exists() else set(), 1)
    else:
        assert kill_after(proc, lambda: completed_tasks(str(tmp_path / "s.zarr")), 6)
    assert zarr.open_group(str(tmp_path / "s.zarr"), mode="r").attrs["chunkstore"][
        "status"] == "incomplete"
    monkeypatch.setenv("CHUNKSTORE_TEST_SIZES", env["CHUNKSTORE_TEST_SIZES"])
    resumed = ingest(str(path), progress=False)
    assert resumed.tasks_skipped > 0
    items = [(k, n) for k, n in enumerate(KILL_SIZES)]
    assert_store_of(tmp_path / "s.zarr", items)
    whole = config(tmp_path / "w.zarr", process="provenance_producers:process")
    ingest(whole, items=items, progress=False)
    a, b = sorted_arrays(tmp_path / "s.zarr"), sorted_arrays(tmp_path / "w.zarr")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    ga, gb = (zarr.open_group(str(tmp_path / s), mode="r") for s in ("s.zarr", "w.zarr"))
    for k in ("count", "min", "max"):
        np.testing.assert_array_equal(ga[f"stats/all/{k}"][:], gb[f"stats/all/{k}"][:])
    np.testing.assert_allclose(ga["stats/all/mean"][:], gb["stats/all/mean"][:], rtol=1e-12)
    assert verify(str(tmp_path / "s.zarr"), workers=1).ok


def test_verify_and_repair_rewrite_damaged_chunks_byte_for_byte(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(json.dumps(config(tmp_path / "s.zarr", items=[[k, n] for k, n in
                                                                  enumerate(SIZES)])))
    ingest(str(cfg), progress=False)
    store = tmp_path / "s.zarr"
    pristine = chunk_files(store)
    feats = store / "features/c/3/0"
    raw = bytearray(feats.read_bytes())
    raw[20] ^= 0xFF
    feats.write_bytes(bytes(raw))
    source = store / "meta/source/c/5/0"
    source.write_bytes(source.read_bytes()[:9])
    (store / f"labels/{pp.HEAD}/c/7").unlink()
    report = verify(str(store), workers=1)
    found = {p.key: p.kind for p in report.problems if p.key}
    assert found == {"features/c/3/0": "corrupt", "meta/source/c/5/0": "corrupt",
                     f"labels/{pp.HEAD}/c/7": "missing"}
    summary = repair(str(cfg), progress=False)
    assert summary.after.ok and chunk_files(store) == pristine
    assert_store_of(store, [(k, n) for k, n in enumerate(SIZES)])


def test_repair_without_the_chunks_record_is_a_clear_error(tmp_path):
    """meta/source is not (item, row) here, so a chunk whose journal record is lost cannot
    be re-produced from it: repair says so instead of guessing."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(json.dumps(config(tmp_path / "s.zarr", items=[[k, n] for k, n in
                                                                  enumerate(SIZES)])))
    ingest(str(cfg), progress=False)
    store = tmp_path / "s.zarr"
    assert zarr.open_group(str(store), mode="r").attrs["chunkstore"][
        "source_provenance"] == "process"
    record = sorted((store / "_chunkstore/tasks").iterdir())[1]
    record.write_bytes(record.read_bytes()[:40])
    with pytest.raises(IntegrityError, match=r"chunk 1 of store .*: its journal record is "
                                             r"missing or does not decode, and meta/source "
                                             r"holds the source's own provenance"):
        repair(str(cfg), progress=False)
