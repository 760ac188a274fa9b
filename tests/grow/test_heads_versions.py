"""add-head leaves every other chunk file unchanged; versions read the store as it was
(rows, splits, statistics) after a later append, split overwrite and stats rerun; tags survive
gc; the CLI forms."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from chunkstore import ingest
from chunkstore.errors import AppendError, VersionError
from chunkstore.ingest.append import append
from chunkstore.ingest.heads import add_head
from chunkstore.splits.write import run_split
from chunkstore.stats.compute import compute_stats
from chunkstore.store import versions
from chunkstore.testing import make_items, write_config, write_items


def _cfg(tmp: Path, name: str, items: list, store: Path) -> Path:
    return write_config(tmp / f"{name}.yaml", store=store,
                        paths=write_items(tmp / f"{name}-items", items),
                        ingest={"chunk_rows": 8, "task_chunks": 2})


def _store(tmp: Path, sizes: tuple[int, ...] = (13, 20)) -> Path:
    store = tmp / "s.zarr"
    ingest(_cfg(tmp, "a", make_items(list(sizes), seed=1), store), progress=False)
    return store


def _checksums(store: Path) -> dict[str, str]:
    return {str(p.relative_to(store)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(store.rglob("*")) if p.is_file() and "_chunkstore" not in p.parts}


def test_add_head_changes_no_other_chunk_file(tmp_path):
    store = _store(tmp_path)
    before = _checksums(store)
    labels = np.arange(33) % 4
    summary = add_head(str(store), "outcome", 4, labels, workers=2)
    assert summary.tasks_run == summary.tasks_total >= 2
    after = _checksums(store)
    changed = {k for k in before if after.get(k) != before[k]}
    assert changed <= {"zarr.json", "stats/all/zarr.json"}, changed  # attrs only
    assert "zarr.json" in changed
    new = {k for k in after if k not in before}
    assert new and all(k.startswith(("labels/outcome", "masks/outcome", "stats/all/"))
                       for k in new), new
    np.testing.assert_array_equal(zarr.open_array(str(store), path="labels/outcome")[:], labels)
    np.testing.assert_array_equal(zarr.open_array(str(store), path="masks/outcome")[:],
                                  np.ones((33, 4), np.int8))
    counts = zarr.open_array(str(store), path="stats/all/class_counts/outcome")[:]
    np.testing.assert_array_equal(counts, np.bincount(labels, minlength=4))
    attrs = zarr.open_group(str(store), mode="r").attrs["chunkstore"]
    assert attrs["heads"]["outcome"]["classes"] == 4
    assert versions.resolve(str(store)).command == "add-head outcome"


def test_add_head_bad_input_changes_nothing(tmp_path):
    store = _store(tmp_path)
    before = _checksums(store)
    with pytest.raises(AppendError, match="row 5 holds 9"):
        add_head(str(store), "h", 4, np.where(np.arange(33) == 5, 9, 0))
    with pytest.raises(AppendError, match="expected \\(33,\\)"):
        add_head(str(store), "h", 4, np.zeros(32))
    with pytest.raises(AppendError, match="already a head"):
        add_head(str(store), "move", 4, np.zeros(33))
    assert _checksums(store) == before


def test_a_version_reads_its_rows_splits_and_stats_after_later_changes(tmp_path):
    store = _store(tmp_path)
    s = str(store)
    run_split(s, method="random", seed=1)
    v_split = versions.commit_version(s, "split default")  # the split facade's hook (see notes)
    codes_then = np.asarray(zarr.open_array(s, path="splits/default")[:])
    mean_then = np.asarray(zarr.open_array(s, path="stats/all/mean")[:])
    versions.tag(s, "paper")
    append(_cfg(tmp_path, "b", make_items([30], seed=2), store))
    run_split(s, method="random", seed=9, overwrite=True)
    compute_stats(s, progress=False)
    versions.commit_version(s, "stats all")
    assert [v.n_samples for v in versions.log(s)][-1] == 63
    old = versions.open_version(s, "paper")
    assert old.version.id == v_split.id and old.n_samples == 33
    assert old.rows("features").shape == (33, 4)
    np.testing.assert_array_equal(old.split(), codes_then)
    np.testing.assert_array_equal(old.stats("all")[0]["mean"], mean_then)
    assert not np.array_equal(versions.open_version(s).split()[:33], codes_then)
    with pytest.raises(VersionError, match="no version or tag 'nope'"):
        versions.open_version(s, "nope")


def test_gc_keeps_tagged_versions_and_the_latest(tmp_path):
    s = str(_store(tmp_path))
    for seed in range(3):
        run_split(s, method="random", seed=seed, overwrite=True)
        versions.commit_version(s, f"split {seed}")
    kept = versions.log(s)
    versions.tag(s, "keep", kept[1].id)
    done = versions.gc(s)
    assert done["versions_removed"] == len(kept) - 2 and done["blobs_removed"] >= 1
    assert [v.id for v in versions.log(s)] == [kept[1].id, kept[-1].id]
    np.testing.assert_array_equal(versions.open_version(s, "keep").split().shape, (33,))


def test_cli_append_log_tag_gc(tmp_path):
    store = _store(tmp_path)
    cfg = _cfg(tmp_path, "b", make_items([9], seed=4), store)

    def cli(*args: str) -> str:
        out = subprocess.run([sys.executable, "-m", "chunkstore.cli", *args], env=dict(
            os.environ), capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        return out.stdout

    assert "33 + 9 = 42" in cli("append", str(cfg), "--workers", "1", "--pool", "processes")
    assert "append" in cli("log", str(store))
    assert "as 'v1'" in cli("tag", str(store), "v1")
    assert "kept" in cli("gc", str(store))
    np.save(tmp_path / "lab.npy", np.zeros(42, np.int64))
    assert "outcome" in cli("add-head", str(store), "outcome", "--classes", "2", "--labels",
                            str(tmp_path / "lab.npy"))


def test_add_head_resumes_from_the_records_of_an_interrupted_run(tmp_path):
    """The state a run killed after two tasks leaves (arrays created, state saved, two task
    records), built with add-head's own functions; the rerun writes only the rest and ends
    equal to an uninterrupted run."""
    import shutil

    from chunkstore.core.schema import HeadSpec
    from chunkstore.ingest import heads
    from chunkstore.store import journal, layout
    from chunkstore.testing import chunk_files

    store = _store(tmp_path, (40, 60))
    ref = tmp_path / "ref.zarr"
    shutil.copytree(store, ref)
    labels = (np.arange(100) * 7) % 3
    full = add_head(str(ref), "h", 3, labels, workers=1)
    s = str(store)
    attrs = layout.read_attrs(s)
    head = HeadSpec("h", 3)
    step = heads._create(zarr.open_group(s, mode="r+"), attrs, head)
    masks = np.ones((100, 3), np.int8)
    (heads.head_dir(s, "h") / journal.TASKS).mkdir()
    journal.write_json(heads.head_dir(s, "h") / "state.json", {
        "digest": heads._digest(labels.astype("int16"), masks, 3), "head": head.to_dict()})
    for i in (0, 2):
        heads.write_block(s, "h", i, i * step, labels[i * step:(i + 1) * step].astype("int16"),
                          masks[i * step:(i + 1) * step])
    resumed = add_head(s, "h", 3, labels, workers=1)
    assert resumed.tasks_run == full.tasks_run - 2
    assert chunk_files(store) == chunk_files(ref)
