"""A SIGKILLed ``chunkstore add-head`` (coordinator killed after some chunks are written, its
pool workers exit by themselves) rerun with the same command ends byte-identical to an
uninterrupted add-head, and no other chunk file of the store changes."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import zarr
from killing import kill_after

from chunkstore import ingest
from chunkstore.ingest.heads import _done, add_head

N, CHUNK = 2_000, 8


def _sha(store: Path) -> dict[str, str]:
    return {str(p.relative_to(store)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(store.rglob("*")) if p.is_file() and "_chunkstore" not in p.parts}


def test_killed_add_head_resumes_to_identical_and_changes_no_other_chunk(tmp_path):
    cfg = {"store": str(tmp_path / "s.zarr"), "schema": {"features": 8, "heads": {"a": 5}},
           "source": {"kind": "synthetic", "n_samples": N, "seed": 7, "item_rows": [50, 300]},
           "ingest": {"workers": 2, "chunk_rows": CHUNK}}
    (tmp_path / "c.json").write_text(json.dumps(cfg))
    store = tmp_path / "s.zarr"
    ingest(tmp_path / "c.json", progress=False)
    ref = tmp_path / "ref.zarr"
    shutil.copytree(store, ref)
    labels = (np.arange(N) * 7919) % 6
    np.save(tmp_path / "lab.npy", labels)
    add_head(str(ref), "outcome", 6, labels, workers=1)
    before = _sha(store)

    args = [sys.executable, "-m", "chunkstore.cli", "add-head", str(store), "outcome",
            "--classes", "6", "--labels", str(tmp_path / "lab.npy"), "--workers", "2"]
    proc = subprocess.Popen(args, env=dict(os.environ), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    assert kill_after(proc, lambda: _done(str(store), "outcome"), 3), \
        "add-head finished before the kill: nothing was tested"
    written = len(_done(str(store), "outcome"))
    assert 3 <= written < 16  # some chunks written, not all
    assert "outcome" not in zarr.open_group(str(store), mode="r").attrs["chunkstore"]["heads"]

    rerun = subprocess.run(args, env=dict(os.environ), capture_output=True, text=True,
                           timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    after, want = _sha(store), _sha(ref)
    root = after.pop("zarr.json"), want.pop("zarr.json")  # holds the 'modified' time
    assert after == want  # every other file (the new head, stats) as an uninterrupted run
    attrs = [zarr.open_group(str(s), mode="r").attrs["chunkstore"] for s in (store, ref)]
    for a in attrs:
        a.pop("modified")
    assert attrs[0] == attrs[1] and root[0] != before["zarr.json"]
    changed = {k for k in before if k != "zarr.json" and after[k] != before[k]}
    assert changed <= {"stats/all/zarr.json"}, changed  # attrs only
    assert all(k.startswith(("labels/outcome", "masks/outcome", "stats/all/"))
               for k in set(after) - set(before))
    np.testing.assert_array_equal(zarr.open_array(str(store), path="labels/outcome")[:], labels)
