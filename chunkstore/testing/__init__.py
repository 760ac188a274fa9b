"""Test support shipped with chunkstore, the way zarr ships ``zarr.testing``.

- :class:`~chunkstore.testing.contract.SourceContract`: the tests every source kind passes;
  subclass it for your own source.
- :mod:`chunkstore.testing.data`: small items in the npz batch-file convention, configs that
  ingest them, and :func:`~chunkstore.testing.data.assert_store_equals`.
- :mod:`chunkstore.testing.strategies`: Hypothesis strategies for schemas, items and stores
  (import it explicitly; it needs Hypothesis, a test extra).

Nothing here is imported by ``import chunkstore``.
"""

from chunkstore.testing.contract import SourceContract
from chunkstore.testing.data import (
    HEADS,
    N_FEATURES,
    assert_batch_matches,
    assert_store_equals,
    chunk_files,
    concat,
    make_items,
    read_all,
    write_config,
    write_items,
)

__all__ = ["HEADS", "N_FEATURES", "SourceContract", "assert_batch_matches",
           "assert_store_equals", "chunk_files", "concat", "make_items", "read_all",
           "write_config", "write_items"]
