"""The operations' user-facing shape: errors a user sees as one line, the summary of a rerun,
run_streaming's named result.

Real components throughout: real stores, the CLI's ``main``, spawned worker processes, a
subprocess where h5py cannot be imported.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import zarr
from producers import make

from chunkstore.cli import main
from chunkstore.config import Config
from chunkstore.errors import IngestError
from chunkstore.ingest.coordinator import open_or_create_streaming
from chunkstore.ingest.streaming import (
    StreamingResult,
    python_source,
    run_streaming,
    streaming_chunk_rows,
)
from chunkstore.sources import open_source
from chunkstore.testing import make_items, write_config, write_items

TESTS = Path(__file__).parent


def die_on_item_2(item: tuple[int, int]) -> dict[str, Any]:
    """A producer whose worker process dies (as if OOM-killed) on item 2."""
    if item[0] == 2:
        os._exit(3)
    return make(item)


def _npz_config(tmp_path: Path) -> Path:
    items = make_items([20, 7, 13, 30])
    return write_config(tmp_path / "c.yaml", store=tmp_path / "s.zarr",
                        paths=write_items(tmp_path / "b", items), ingest={"chunk_rows": 8})


def test_rerun_of_a_complete_store_says_already_complete(tmp_path, capsys):
    cfg = _npz_config(tmp_path)
    assert main(["ingest", str(cfg), "--quiet"]) == 0
    first = capsys.readouterr().out
    assert "(complete)" in first and "wall time" in first
    saved = json.loads((tmp_path / "s.zarr" / "_chunkstore" / "summary.json").read_text())

    assert main(["ingest", str(cfg), "--quiet"]) == 0
    again = capsys.readouterr().out
    assert "already complete" in again
    assert "rows             70" in again and "stored bytes" in again
    # no figures computed from no work, no ratio mixing later splits and statistics in
    for absent in ("wall time", "MiB/s", "compression ratio", "peak memory"):
        assert absent not in again
    # the record of the run that built the store is kept
    assert json.loads((tmp_path / "s.zarr" / "_chunkstore" / "summary.json").read_text()) == saved
    assert saved["tasks_run"] > 0 and not saved["already_complete"]


def test_stats_on_a_corrupt_chunk_prints_one_line(build_store, tmp_path, capsys):
    store = build_store(tmp_path)
    chunk = Path(store) / "features" / "c" / "1" / "0"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    capsys.readouterr()

    assert main(["stats", store, "--quiet"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err
    assert err.startswith("chunkstore: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert "array 'features'" in err and "rows [" in err  # the array, chunk file and rows
    assert "features/c/1/0" in err
    assert "checksum" in err and "restore the file" in err  # what happened, what to do


def test_export_without_h5py_gives_the_install_hint(small_store, tmp_path):
    store = small_store(8)
    script = f"""
import sys
sys.modules["h5py"] = None  # import h5py now raises ImportError
from chunkstore.cli import main
from chunkstore.errors import ExportError
from chunkstore.interop.export import export
try:
    export({store!r}, {str(tmp_path / "a.h5")!r})
except ExportError as e:
    print("ExportError:", e)
sys.exit(main(["export", {store!r}, {str(tmp_path / "b.h5")!r}]))
"""
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 1, r.stderr
    assert r.stdout.startswith("ExportError: exporting to HDF5 needs h5py")
    assert "pip install 'chunkstore[hdf5]'" in r.stdout
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert "pip install 'chunkstore[hdf5]'" in r.stderr
    assert not list(tmp_path.iterdir())  # nothing written


def _streaming_config(tmp_path: Path, process: str, sizes: list[int]) -> Config:
    d = {"store": str(tmp_path / "s.zarr"),
         "schema": {"features": 4, "heads": {"move": 5, "target": 3}},
         "source": {"kind": "python", "group": True, "path": [str(TESTS)],
                    "items": [[k, n] for k, n in enumerate(sizes)], "process": process},
         "ingest": {"chunk_rows": 8, "workers": 1}}
    return Config.from_dict(d)


def test_run_streaming_returns_a_named_result(tmp_path):
    sizes = [5, 11, 0, 9, 3]
    config = _streaming_config(tmp_path, "producers:process", sizes)
    source = python_source(open_source(config.source, config.schema))
    chunk_rows = streaming_chunk_rows(config)
    sha = config.content_sha256(chunk_rows, 0)
    assert open_or_create_streaming(config, source, chunk_rows, sha, overwrite=False) == "create"

    result = run_streaming(config, source, config.store, workers=1, chunk_rows=chunk_rows,
                           progress=False, scheduler=None)

    assert isinstance(result, StreamingResult) and dataclasses.is_dataclass(result)
    assert [f.name for f in dataclasses.fields(result)] == [
        "rows", "items_run", "items_skipped", "leftover_rows", "worker_peak_rss"]
    assert result.rows == sum(sizes) == 28
    assert (result.items_run, result.items_skipped) == (5, 0)
    assert result.leftover_rows == 28 % 8  # one loop: its partial last chunk
    assert result.worker_peak_rss > 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.rows = 0  # type: ignore[misc]
    g = zarr.open_group(config.store, mode="r")
    assert g["features"].shape == (28, 4)  # trimmed from 2**40 rows, metadata only
    assert g["meta/source"].shape == (28, 2)


def test_a_streaming_worker_that_dies_is_an_ingest_error(tmp_path, monkeypatch):
    from chunkstore import ingest

    monkeypatch.setenv("CHUNKSTORE_TEST_SIZES", "9,9,9,9")  # read by the spawned workers too
    config = {"store": str(tmp_path / "s.zarr"),
              "schema": {"features": 4, "heads": {"move": 5, "target": 3}},
              "source": {"kind": "python", "group": True, "path": [str(TESTS)],
                         "items": "producers:items_from_env",
                         "process": "test_operations_shape:die_on_item_2"},
              "ingest": {"chunk_rows": 8, "workers": 1}}
    with pytest.raises(IngestError, match=r"(?s)streaming worker process died \(killed, or "
                                          r"out of memory\).*rerun the same command to resume"):
        ingest(config, progress=False)
