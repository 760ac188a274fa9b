"""Appending from a python source (ordered placement: a count function, or a counting pass
for a producer without one) on the process pool equals one ingest of all items. Streaming
placement: tests/grow/test_append_streaming.py."""

from __future__ import annotations

from chunkstore import ingest
from chunkstore.ingest.append import append
from chunkstore.testing import chunk_files

A = [[0, 11], [1, 0], [2, 6]]  # 17 rows: ends mid-chunk
B = [[3, 9], [4, 14]]


def _cfg(python_config, store, items, **source):
    return python_config(store, items=items, process="producers:process", **source)


def test_python_source_append_equals_one_ingest(tmp_path, python_config):
    whole, grown = tmp_path / "whole.zarr", tmp_path / "grown.zarr"
    ingest(_cfg(python_config, whole, A + B, count="producers:rows_of"), progress=False)
    ingest(_cfg(python_config, grown, A, count="producers:rows_of"), progress=False)
    summary = append(_cfg(python_config, grown, B, count="producers:rows_of"), workers=2)
    assert (summary.rows_before, summary.rows_added) == (17, 23)
    assert chunk_files(grown) == chunk_files(whole)
    more = [[5, 3], [6, 20]]  # a producer without a count: rows counted by running it
    ingest(_cfg(python_config, whole, A + B + more, count="producers:rows_of"),
           progress=False, overwrite=True)
    summary = append(_cfg(python_config, grown, more, counting_pass=True), workers=2)
    assert (summary.rows_before, summary.rows_added) == (40, 23)
    assert chunk_files(grown) == chunk_files(whole)
