"""A split-set name is never a path: one clear error, no traceback, in every command and reader
that takes one (the rule lives in ``chunkstore.core.splitspec.split_set_problem``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import chunkstore
from chunkstore import ingest
from chunkstore.errors import SplitError

BAD = ["../x", "", "/abs", "a/b", "..", "."]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    tmp = tmp_path_factory.mktemp("names")
    ingest({"store": str(tmp / "s.zarr"), "schema": {"features": 4, "heads": {"a": 3}},
            "source": {"kind": "synthetic", "n_samples": 300, "seed": 1},
            "ingest": {"workers": 1, "chunk_rows": 64}}, progress=False)
    chunkstore.open(str(tmp / "s.zarr"))  # a readable store: only the name can be wrong
    return str(tmp / "s.zarr")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "chunkstore.cli", *args], capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("command", ["stats", "split", "export"])
def test_cli_refuses_a_split_set_name_that_is_a_path(store, tmp_path, command):
    extra = {"stats": ["--split", "train"], "split": [],
             "export": [str(tmp_path / "out"), "--split", "train"]}[command]
    for name in ("../x", ""):  # every BAD name is checked in-process below
        r = _cli(command, store, *extra, "--split-set", name)
        assert r.returncode == 1, (name, r.stderr)
        assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1, r.stderr
        assert f"split set name {name!r} is not valid" in r.stderr, r.stderr
        assert "identifier-like" in r.stderr
        assert "--name" not in r.stderr  # the option is --split-set
    assert not (Path(store).parent / "x").exists() and not (tmp_path / "out").exists()


def test_dataset_and_loader_refuse_a_split_set_name_that_is_a_path(store):
    ds = chunkstore.open(store)
    for name in BAD:
        with pytest.raises(SplitError, match="is not valid: it names the array splits/NAME"):
            ds.loader(batch_size=8, split="train", splits=name)
        if name:  # "/train" is part train of the default split set
            with pytest.raises(SplitError, match="is not valid"):
                ds.split(f"{name}/train")
