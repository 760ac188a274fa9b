"""Fixtures shared by the tests (helpers live in helpers.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture
def chdir_tmp(tmp_path: Path) -> Path:
    old = os.getcwd()
    os.chdir(tmp_path)
    yield tmp_path
    os.chdir(old)
