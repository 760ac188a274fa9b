"""Integer feature stores (issue 19): exact round trips at the dtype's limits, refused values,
value counts, the text pipeline into uint16. Needs integer features in ingest (fill value 0,
the integrality/range check) — see the issue note."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

import chunkstore
from chunkstore.errors import IngestError, SourceError
from chunkstore.stats.value_counts import value_counts, write_value_counts

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from examples.pack_text import Settings, prepare  # noqa: E402

PRODUCER = '''
import numpy as np

def items():
    return list(range(6))

def rows(k, dtype):
    info = np.iinfo(dtype)
    n = 5 + 3 * k
    x = np.arange(n * 4, dtype=np.int64).reshape(n, 4) * (k + 1)
    if info.bits < 64:
        x = x % (int(info.max) - int(info.min) + 1) + int(info.min)
    x[0, 0], x[-1, -1] = info.min, info.max  # the limits round-trip too
    return x.astype(dtype)

def process(item):
    k, dtype = item
    x = rows(k, dtype)
    return {"features": x, "labels": {}, "masks": {}, "group": np.full(len(x), k)}
'''


def config(tmp_path, dtype, **features):
    (tmp_path / "intprod.py").write_text(PRODUCER)
    return {"store": str(tmp_path / "s.zarr"),
            "schema": {"features": {"count": 4, "dtype": dtype, **features}},
            "source": {"kind": "python", "path": [str(tmp_path)], "group": True,
                       "process": "intprod:process"},
            "ingest": {"workers": 2, "chunk_rows": 8}}


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int32", "int64"])
def test_integer_features_round_trip_exactly(tmp_path, dtype):
    items = [(k, dtype) for k in range(6)]
    chunkstore.ingest(config(tmp_path, dtype), items=items, progress=False)
    g = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    assert g["features"].dtype == np.dtype(dtype) and g["features"].fill_value == 0
    sys.path.insert(0, str(tmp_path))
    import intprod

    src = g["meta/source"][:]
    want = np.concatenate([intprod.rows(k, dtype) for k in range(6)])
    offsets = np.cumsum([0] + [len(intprod.rows(k, dtype)) for k in range(5)])
    np.testing.assert_array_equal(g["features"][:], want[offsets[src[:, 0]] + src[:, 1]])
    info = np.iinfo(dtype)
    assert g["features"][:].min() == info.min and g["features"][:].max() == info.max
    batch = next(iter(chunkstore.open(str(tmp_path / "s.zarr")).loader(batch_size=7)))
    assert batch["features"].dtype == np.dtype(dtype)  # the loader keeps the dtype


def test_values_outside_the_vocabulary_are_refused(tmp_path):
    with pytest.raises((SourceError, IngestError), match=r"is not an integer in \[0, 99\]"):
        chunkstore.ingest(config(tmp_path, "uint8", vocab_size=100),
                          items=[(k, "uint8") for k in range(6)], progress=False)


def test_text_pipeline_into_uint16_with_value_counts(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for k in range(8):
        (corpus / f"m{k}.py").write_text(f"# {k}\n" + "print('hi')\n" * (k + 2))
    items = prepare(Settings(corpus=str(corpus), max_docs=None, max_mib=None, byte_vocab=True,
                             vocab_size=258, sequence_len=16, shard_mib=80 / 2**20,
                             work=str(tmp_path / "work")))
    store = str(tmp_path / "t.zarr")
    chunkstore.ingest({"store": store, "schema": {"features": {"count": 16, "dtype": "uint16",
                                                               "vocab_size": 258}},
                       "source": {"kind": "python", "path": [str(REPO)], "group": True,
                                  "provenance": True,
                                  "process": "examples.pack_text:pack_shard"},
                       "ingest": {"workers": 2, "chunk_rows": 4}}, items=items,
                      progress=False)
    g = zarr.open_group(store, mode="r")
    assert g.attrs["chunkstore"]["vocab_size"] == 258
    counts = write_value_counts(store)
    x = g["features"][:]
    np.testing.assert_array_equal(counts, np.bincount(x.ravel(), minlength=258))
    np.testing.assert_array_equal(value_counts(store), counts)  # vocab_size from the attrs
    assert counts[256] == 8  # one end-of-document token per document


def test_stats_of_integer_features_skip_correlation_and_write_value_counts(tmp_path):
    from chunkstore.cli import main

    items = [(k, "uint8") for k in range(6)]
    chunkstore.ingest(config(tmp_path, "uint8", vocab_size=256), items=items, progress=False)
    store = str(tmp_path / "s.zarr")
    assert main(["stats", store]) == 0
    g = zarr.open_group(store, mode="r")
    assert "corr" not in g["stats/all"]  # off by default for integer features
    np.testing.assert_array_equal(g["stats/all/value_counts"][:],
                                  np.bincount(g["features"][:].ravel(), minlength=256))
    with pytest.raises(Exception, match="normalize=True is for float features"):
        chunkstore.open(store).loader(normalize=True)
