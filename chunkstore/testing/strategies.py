"""Hypothesis strategies for schemas, items and small stores.

Needs Hypothesis (``pip install chunkstore[test]``); ``import chunkstore`` and the rest of
:mod:`chunkstore.testing` do not.

Examples
--------
>>> from hypothesis import given
>>> @given(store_cases())
... def test_round_trip(case): ...
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

try:
    from hypothesis import strategies as st
except ImportError as e:  # pragma: no cover - the message is the point
    raise ImportError("chunkstore.testing.strategies needs Hypothesis: pip install "
                      "'chunkstore[test]' (or pip install hypothesis)") from e

from chunkstore.testing.data import make_items, write_config, write_items

HEAD_NAMES = ("move", "target", "a", "b")


def schema_dicts(*, max_features: int = 8, max_heads: int = 3, max_classes: int = 6
                 ) -> st.SearchStrategy[dict[str, Any]]:
    """``schema:`` config sections: 1..max_features features, 1..max_heads heads of 2..K
    classes."""
    heads = st.dictionaries(st.sampled_from(HEAD_NAMES[:max_heads]),
                            st.integers(2, max_classes), min_size=1, max_size=max_heads)
    return st.fixed_dictionaries({"features": st.integers(1, max_features), "heads": heads})


def item_sizes(*, max_items: int = 8, max_rows: int = 40) -> st.SearchStrategy[list[int]]:
    """Row counts of items (empty items included); at least one row in all."""
    return st.lists(st.integers(0, max_rows), min_size=1, max_size=max_items).filter(any)


@st.composite
def items(draw: st.DrawFn, schema: dict[str, Any], sizes: list[int] | None = None
          ) -> list[dict[str, np.ndarray]]:
    """Batch-file dicts (npz convention) for ``schema``; the values come from a drawn seed."""
    sizes = draw(item_sizes()) if sizes is None else sizes
    seed = draw(st.integers(0, 2**32 - 1))
    return make_items(sizes, seed=seed, n_features=schema["features"], heads=schema["heads"])


@dataclass(frozen=True)
class StoreCase:
    """A schema, its items and the chunk layout of a store to ingest them into."""

    schema: dict[str, Any]
    items: list[dict[str, np.ndarray]]
    chunk_rows: int
    task_chunks: int

    def write(self, directory: Path) -> Path:
        """Writes the items as npz files and a YAML config under ``directory``; returns the
        config's path (the store is ``directory / "s.zarr"``)."""
        return write_config(directory / "c.yaml", store=directory / "s.zarr",
                            paths=write_items(directory / "b", self.items),
                            n_features=self.schema["features"], heads=self.schema["heads"],
                            ingest={"chunk_rows": self.chunk_rows,
                                    "task_chunks": self.task_chunks})


@st.composite
def store_cases(draw: st.DrawFn, *, max_items: int = 8, max_rows: int = 40) -> StoreCase:
    """A :class:`StoreCase`: chunks of 1..16 rows, 1..3 chunks per task."""
    schema = draw(schema_dicts())
    sizes = draw(item_sizes(max_items=max_items, max_rows=max_rows))
    return StoreCase(schema, draw(items(schema, sizes)), draw(st.integers(1, 16)),
                     draw(st.integers(1, 3)))
