"""Bad input fails loudly, names file/item/row, and loses nothing already written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from chunkstore import SourceError, ingest
from chunkstore.store.journal import completed_tasks
from chunkstore.testing import assert_store_equals, make_items, write_config, write_items

SIZES = [8, 8, 8, 8, 8, 8]  # 6 items; with chunk_rows 8 and one chunk per task: task k = item k


def setup(tmp_path: Path, bad_item: int, corrupt, **ingest_opts) -> tuple[Path, list, Path]:
    items = make_items(SIZES, seed=4)
    paths = write_items(tmp_path / "b", items)
    bad_file = tmp_path / "b" / f"batch_{bad_item:05d}.npz"
    d = dict(np.load(bad_file))
    corrupt(d)
    np.savez(bad_file, **d)
    cfg = write_config(tmp_path / "c.yaml", store=tmp_path / "s.zarr", paths=paths,
                       ingest={"chunk_rows": 8, "task_chunks": 1, **ingest_opts})
    return cfg, items, bad_file


def set_(key, row, value):
    def corrupt(d):
        d[key] = d[key].copy()
        d[key][row] = value
    return corrupt


def replace(key, fn):
    def corrupt(d):
        d[key] = fn(d[key])
    return corrupt


CASES = {
    "label outside classes": (set_("labels_move", 3, 7),
                              r"row 3 of the item: label 7 of head 'move' is outside \[0, 5\)"),
    "negative label": (set_("labels_target", 0, -1), "label -1 of head 'target' is outside"),
    "wrong feature count": (replace("strategic_features", lambda a: a[:, :3]),
                            "features have 3 columns; the schema has 4 features"),
    "mask width": (replace("masks_target", lambda a: a[:, :2]),
                   "mask of head 'target' has width 2; expected 3"),
    "feature dtype overflow": (replace("strategic_features",
                                       lambda a: np.where(np.arange(8)[:, None] == 5, 1e39,
                                                          a.astype(np.float64))),
                               r"row 5 of the item: feature value 1e\+39 overflows float32"),
    "mask dtype overflow": (replace("masks_move", lambda a: np.where(np.arange(8)[:, None] == 2,
                                                                     300, a.astype(np.int64))),
                            "row 2 of the item: mask value of head 'move' does not fit int8"),
    "fractional label": (replace("labels_move", lambda a: a.astype(np.float64) + 0.5),
                         "is not an integer"),
    "missing label array": (lambda d: d.pop("labels_target"), "no array 'labels_target'"),
    "string features": (replace("strategic_features", lambda a: a.astype(str)),
                        "features has dtype <U"),
}


QUICK = {"label outside classes", "wrong feature count", "missing label array"}  # -m "not slow"


@pytest.mark.parametrize("corrupt, message", [
    pytest.param(*v, id=k, marks=() if k in QUICK else pytest.mark.slow) for k, v in CASES.items()])
def test_bad_batch_names_file_row_and_keeps_committed_work(tmp_path, corrupt, message):
    cfg, items, bad_file = setup(tmp_path, 3, corrupt)
    with pytest.raises(SourceError, match=message) as e:
        ingest(cfg, progress=False)
    assert str(bad_file) in str(e.value) and "(item 3)" in str(e.value)
    assert "rerun" in str(e.value)
    kept = completed_tasks(str(tmp_path / "s.zarr"))
    assert 3 not in kept and kept >= {0, 1, 2}  # one worker runs tasks in order
    np.savez(bad_file, **items[3])  # fix the input, rerun: resumes and finishes exactly
    summary = ingest(cfg, progress=False)
    assert summary.tasks_skipped == len(kept)
    assert_store_equals(tmp_path / "s.zarr", items)


def test_nan_policy_error_names_feature_and_row(tmp_path):
    cfg, _, _ = setup(tmp_path, 1, set_("strategic_features", (6, 2), np.nan), nan_policy="error")
    with pytest.raises(SourceError, match="row 6 of the item: NaN in feature 'f2'"):
        ingest(cfg, progress=False)


def test_nan_allowed_by_default(tmp_path):
    cfg, _, _ = setup(tmp_path, 1, set_("strategic_features", (6, 2), np.nan))
    ingest(cfg, progress=False)


def test_pickled_npz_is_refused(tmp_path):
    def corrupt(d):
        d["labels_move"] = np.array([{"label": 1}] * 8, dtype=object)
    cfg, _, _ = setup(tmp_path, 2, corrupt)
    with pytest.raises(SourceError, match="pickled .*never loads"):
        ingest(cfg, progress=False)


def test_missing_and_unreadable_files_fail_before_writing(tmp_path):
    items = make_items([4, 4])
    write_items(tmp_path / "b", items)
    missing = write_config(tmp_path / "c.yaml", store=tmp_path / "s.zarr",
                           paths=[str(tmp_path / "b" / "batch_00000.npz"),
                                  str(tmp_path / "b" / "nope.npz")])
    with pytest.raises(SourceError, match=r"nope.npz' \(item 1\): file not found"):
        ingest(missing, progress=False)
    assert not (tmp_path / "s.zarr").exists()
    (tmp_path / "b" / "batch_00001.npz").write_bytes(b"not a zip file")
    garbage = write_config(tmp_path / "d.yaml", store=tmp_path / "s.zarr",
                           paths=str(tmp_path / "b" / "*.npz"))
    with pytest.raises(SourceError, match=r"batch_00001.npz' \(item 1\): unreadable npz"):
        ingest(garbage, progress=False)
    assert not (tmp_path / "s.zarr").exists()


def test_empty_source(tmp_path):
    cfg = write_config(tmp_path / "c.yaml", store=tmp_path / "s.zarr",
                       paths=write_items(tmp_path / "b", make_items([0, 0])))
    with pytest.raises(SourceError, match="holds no rows"):
        ingest(cfg, progress=False)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "chunkstore.cli", *args], capture_output=True,
                          text=True, timeout=120)


@pytest.mark.slow
def test_cli_error_exits_1_with_message_and_no_traceback(tmp_path):
    cfg, _, _ = setup(tmp_path, 0, set_("labels_move", 1, 99))
    r = run_cli("ingest", str(cfg), "--quiet")
    assert r.returncode == 1
    assert "chunkstore: error:" in r.stderr and "label 99 of head 'move'" in r.stderr
    assert "Traceback" not in r.stderr
    r = run_cli("--debug", "ingest", str(cfg), "--quiet")
    assert r.returncode == 1 and "Traceback" in r.stderr


def test_cli_success_prints_summary(tmp_path):
    cfg = write_config(tmp_path / "c.yaml", store=tmp_path / "s.zarr",
                       paths=write_items(tmp_path / "b", make_items([5, 9])))
    r = run_cli("ingest", str(cfg))
    assert r.returncode == 0, r.stderr
    for word in ("rows             14", "compression ratio", "wall time", "coordinator",
                 "largest worker"):
        assert word in r.stdout
    assert "rows/s" in r.stderr  # the progress bar


def test_cli_bad_config(tmp_path):
    (tmp_path / "c.yaml").write_text("store: x\nschema: {features: 2, heads: {a: 2}}\n"
                                     "source: {kind: npz, paths: '*.npz', color: 1}\n")
    r = run_cli("ingest", str(tmp_path / "c.yaml"))
    assert r.returncode == 1 and "key 'source.color': unknown key" in r.stderr
