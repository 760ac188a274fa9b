"""The command line as a user meets it: real ``python -m chunkstore.cli`` subprocesses.

Option placement, renamed options, help text, ``--quiet``, ``--workers``, exit codes and
one-line errors, a closed stdout pipe, Ctrl-C, and ``config-schema``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import dask
import pytest
import yaml
import zarr

from chunkstore.cli import build_parser
from chunkstore.runtime.dask import dask_scheduler
from chunkstore.store.view import seal_attrs
from chunkstore.testing import make_items, write_config, write_items

COMMANDS = ("ingest", "stats", "split", "export", "info", "report", "config-schema", "append",
            "add-head", "log", "tag", "gc", "verify", "repair", "dedup")
DASK_BAR = "% Completed"  # dask's progress bars (local and distributed)


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 180
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "chunkstore.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


@pytest.fixture
def store(small_store, copy_store) -> str:
    """A private copy of the small complete store (333 rows, chunks of 8), free to change."""
    return copy_store(small_store(8), "cli")


# ------------------------------------------------------------------ --debug and exit codes --

@pytest.mark.parametrize("args", [
    ["--debug", "stats", "{missing}"],
    ["stats", "{missing}", "--debug"],
    ["stats", "--debug", "{missing}"],
])
def test_debug_is_accepted_before_and_after_the_command(tmp_path, args):
    r = cli(*(a.format(missing=tmp_path / "nothing.zarr") for a in args))
    assert r.returncode == 1
    assert "Traceback" in r.stderr and "NotAStoreError" in r.stderr


def test_an_error_is_one_line_without_debug(tmp_path):
    r = cli("stats", str(tmp_path / "nothing.zarr"))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("chunkstore: error: no chunkstore store")
    assert "nothing.zarr" in lines[0]


def test_an_unexpected_exception_is_reported_as_a_bug_in_one_line(store):
    # a store whose attrs were edited by hand: chunkstore fails in a way it did not foresee
    g = zarr.open_group(store, mode="r+")
    g.attrs["chunkstore"] = {**g.attrs["chunkstore"], "chunk_rows": "eight"}
    seal_attrs(store)  # sealed again, as if chunkstore wrote it: not an integrity error
    r = cli("split", store, "--quiet")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("chunkstore: error: unexpected ")
    assert "bug in chunkstore" in lines[0]
    assert lines[0].endswith("rerun with --debug for the traceback")
    r = cli("split", store, "--quiet", "--debug")
    assert r.returncode == 1 and "Traceback" in r.stderr


def test_ctrl_c_says_how_to_resume_without_a_traceback(python_config, tmp_path):
    cfg = python_config(tmp_path / "s.zarr", items="producers:items_from_env",
                        process="producers:process_slow")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {"CHUNKSTORE_TEST_SIZES": "10,10,10", "PYTHONPATH": cfg["source"]["path"][0],
           "CHUNKSTORE_PAUSE_AT": "start"}  # the coordinator waits there, in time.sleep
    proc = subprocess.Popen([sys.executable, "-m", "chunkstore.cli", "ingest", str(path),
                             "--quiet"], env={**os.environ, **env}, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        paused = tmp_path / "s.zarr" / "_chunkstore" / "paused-start"
        deadline = time.time() + 120
        while not paused.exists():
            assert proc.poll() is None and time.time() < deadline, proc.stderr.read()
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == ("chunkstore: error: interrupted; rerun the same "
                                            "command to resume")


# -------------------------------------------------------------------- the split set option --

@pytest.mark.parametrize("args, old", [
    (["stats", "{store}", "--split", "train", "--splits", "cv"], "--splits"),
    (["export", "{store}", "{out}", "--split", "train", "--splits", "cv"], "--splits"),
    (["split", "{store}", "--name", "cv"], "--name"),
])
def test_old_split_set_spellings_are_refused_with_the_new_one(store, tmp_path, args, old):
    before = sorted(p.name for p in Path(store).iterdir())
    r = cli(*(a.format(store=store, out=tmp_path / "out") for a in args))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"{old} was renamed --split-set: use --split-set cv" in r.stderr
    assert sorted(p.name for p in Path(store).iterdir()) == before
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_split_set_names_the_same_array_in_split_stats_and_export(store, tmp_path):
    r = cli("split", store, "--split-set", "cv", "--method", "kfold", "--k", "3", "--quiet")
    assert r.returncode == 0, r.stderr
    assert "splits/cv" in r.stdout
    r = cli("stats", store, "--split", "fold1", "--split-set", "cv", "--bins", "4", "--quiet")
    assert r.returncode == 0, r.stderr
    codes = zarr.open_group(store, mode="r")["splits/cv"][:]
    assert zarr.open_group(store, mode="r")["stats/cv/fold1/count"][0] == (codes == 1).sum()
    r = cli("export", store, str(tmp_path / "out"), "--format", "npy", "--split", "fold1",
            "--split-set", "cv", "--quiet")
    assert r.returncode == 0, r.stderr
    assert len(list((tmp_path / "out").iterdir())) > 0


# --------------------------------------------------------------------------------- --help --

def test_help_reads_as_help_for_users():
    r = cli("--help")
    assert r.returncode == 0
    for markup in ("``", ":func:", ":mod:", ":class:", "* :"):
        assert markup not in r.stdout
    assert "Build ML training datasets" in r.stdout and "--debug" in r.stdout
    listed = r.stdout.split("commands:")[1].split("examples:")[0]
    for name in COMMANDS:  # every command, each with a one-line description
        assert name in listed
    subparsers = next(a for a in build_parser()._actions if a.dest == "command")
    for name, action in zip(COMMANDS, subparsers._choices_actions, strict=True):
        assert action.dest == name and action.help and "\n" not in action.help
        assert len(action.help) <= 70
    r = cli("split", "--help")
    assert r.returncode == 0 and "--split-set NAME" in r.stdout
    assert "--name" not in r.stdout and "--splits" not in r.stdout  # refused spellings hidden


# -------------------------------------------------------------------------------- --quiet --

@pytest.fixture
def config(tmp_path) -> Path:
    items = make_items([30, 20, 25])
    return write_config(tmp_path / "c.yaml", store=tmp_path / "s.zarr",
                        paths=write_items(tmp_path / "b", items), ingest={"chunk_rows": 8,
                                                                          "workers": 1})


@pytest.mark.slow
def test_quiet_turns_off_every_progress_bar(config, tmp_path):
    store = str(tmp_path / "s.zarr")
    runs = {
        "ingest": ["ingest", str(config)],
        "split": ["split", store],
        "stats": ["stats", store, "--split", "train", "--bins", "4"],
        "export": ["export", store, str(tmp_path / "x"), "--format", "npy"],
    }
    for name, args in runs.items():
        r = cli(*args, "--quiet")
        assert r.returncode == 0, (name, r.stderr)
        assert "\r" not in r.stderr and DASK_BAR not in r.stderr, name  # bars redraw with \r
        assert r.stdout.strip(), name  # the summary still prints
    # without --quiet the bars are there (on stderr; stdout holds only the summary)
    for name in ("split", "stats"):
        args = [*runs[name], "--overwrite"] if name == "split" else runs[name]
        r = cli(*args)
        assert r.returncode == 0 and DASK_BAR in r.stderr, (name, r.stderr)
        assert DASK_BAR not in r.stdout


# ------------------------------------------------------------------------------ --workers --

@pytest.mark.slow
def test_workers_without_a_cluster_sets_local_threads(store):
    for args in (["split", store, "--split-set", "w", "--workers", "1", "--quiet"],
                 ["stats", store, "--bins", "4", "--workers", "2", "--quiet"]):
        r = cli(*args)
        assert r.returncode == 0, r.stderr
    # what --workers does there: Dask's local thread pool has that many threads
    graph = [dask.delayed(threading.get_ident)(dask_key_name=f"t{i}") for i in range(64)]
    with dask_scheduler(workers=1) as address:
        assert address is None
        assert len(set(dask.compute(*graph, scheduler="threads"))) == 1


def test_workers_with_a_scheduler_is_refused(store):
    for command in ("split", "stats"):
        r = cli(command, store, "--scheduler", "tcp://127.0.0.1:1", "--workers", "2")
        assert r.returncode == 2 and "Traceback" not in r.stderr
        assert "--workers 2 does not apply with --scheduler tcp://127.0.0.1:1" in r.stderr
    r = cli("stats", store, "--workers", "0")
    assert r.returncode == 2 and "expected an integer >= 1, found 0" in r.stderr


# ------------------------------------------------------------------------ output and pipes --

def test_info_on_a_closed_pipe_exits_quietly(store):
    # `chunkstore info --json | head -0`: the reader is gone before anything is written
    proc = subprocess.Popen([sys.executable, "-m", "chunkstore.cli", "info", store, "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    proc.stdout.close()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and err == b""


def test_info_json_through_a_real_pipe(store):
    r = subprocess.run(f"{sys.executable} -m chunkstore.cli info {store} --json | head -1",
                       shell=True, capture_output=True, text=True, timeout=120)
    assert r.stdout == "{\n" and r.stderr == ""


def test_config_schema_prints_the_json_schema():
    from chunkstore.config import config_json_schema

    r = cli("config-schema")
    assert r.returncode == 0 and r.stderr == ""
    schema = json.loads(r.stdout)
    assert schema == config_json_schema()
    assert "properties" in schema and "store" in schema["properties"]
