"""Repair of a store whose python source supplies its own ``meta/source`` provenance: a chunk
whose journal record is lost cannot be re-produced from ``meta/source`` (not (item, row)), so
repair says so instead of guessing."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from chunkstore import ingest
from chunkstore.errors import IntegrityError
from chunkstore.pipeline import repair

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import provenance_producers as pp  # noqa: E402

SIZES = [0, 1, 5, 8, 30, 0, 17, 3]


def test_repair_without_the_chunks_record_is_a_clear_error(tmp_path):
    store = tmp_path / "s.zarr"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(json.dumps({
        "store": str(store), "schema": {"features": pp.N_FEATURES, "heads": {pp.HEAD: pp.CLASSES}},
        "source": {"kind": "python", "path": [str(HERE)], "group": True, "provenance": True,
                   "process": "provenance_producers:process",
                   "items": [[k, n] for k, n in enumerate(SIZES)]},
        "ingest": {"chunk_rows": 8, "workers": 2}}))
    ingest(str(cfg), progress=False)
    record = sorted((store / "_chunkstore/tasks").iterdir())[1]
    record.write_bytes(record.read_bytes()[:40])
    with pytest.raises(IntegrityError, match=r"chunk 1 of store .*: its journal record is "
                                             r"missing or does not decode, and meta/source "
                                             r"holds the source's own provenance"):
        repair(str(cfg), progress=False)
