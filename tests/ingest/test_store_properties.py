"""Property: a written store equals the source arrays, for any schema, item sizes (empty items
included) and chunk layout drawn by :mod:`chunkstore.testing.strategies`."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from chunkstore import ingest
from chunkstore.testing import assert_store_equals
from chunkstore.testing.strategies import StoreCase, store_cases


@pytest.mark.slow  # one real ingest per example
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(store_cases(max_items=6, max_rows=30))
def test_written_store_equals_the_source_arrays(case: StoreCase):
    with tempfile.TemporaryDirectory() as tmp:
        cfg = case.write(Path(tmp))
        summary = ingest(cfg, progress=False)
        assert summary.rows == sum(len(d["group"]) for d in case.items)
        assert_store_equals(Path(tmp) / "s.zarr", case.items, heads=case.schema["heads"])
