"""Rows of a streaming-placed store as its ingest wrote them, produced again (for repair).

A streaming ingest keeps, per chunk, the ``(item, row_start, row_stop)`` runs it holds (its
journal record, see :func:`chunkstore.ingest.streaming.write_chunk`); ``meta/source`` holds
the same pairs row by row unless the source declared its own provenance. Running ``process``
again on those items and taking the runs in order gives the chunk's rows byte for byte:
``chunkstore repair`` rewrites the ingest's bad chunks from them, and the repair of an
append's tail chunk produces the ingest's last rows from them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from chunkstore.config import Config
from chunkstore.errors import IntegrityError
from chunkstore.ingest.streaming import batch_arrays, runs_of
from chunkstore.sources import check_batch
from chunkstore.store import journal, layout


def chunk_runs(store: str, group: Any, c: int, r: int, user_provenance: bool = False,
               stop: int | None = None) -> tuple[Any, int]:
    """(item runs, moved_from) of chunk ``c``: from its record, else from ``meta/source``
    (unless ``meta/source`` holds the source's own provenance: ``user_provenance``), read up
    to row ``stop`` when given (the ingest's last row: an append's rows follow in the chunk)."""
    try:
        meta, arrays = journal.read_record(store, c)
        return arrays["runs"], int(meta.get("moved_from", -1))
    except Exception:  # no readable record: meta/source still says which rows are here
        pass
    if user_provenance:
        raise IntegrityError(f"chunk {c} of store {store!r}: its journal record is missing or "
                             "does not decode, and meta/source holds the source's own "
                             "provenance (source.provenance: true), not (item, row), so the "
                             "items that filled it are unknown; rebuild with `chunkstore "
                             "ingest --overwrite`")
    end = (c + 1) * r if stop is None else min(stop, (c + 1) * r)
    try:
        source_rows = np.asarray(group[layout.SOURCE][c * r:end])
    except Exception as e:
        raise IntegrityError(f"chunk {c} of store {store!r}: neither its journal record nor "
                             f"its meta/source rows can be read ({e}), so the items that "
                             "filled it are unknown; rebuild with `chunkstore ingest "
                             "--overwrite`") from e
    source_rows = source_rows[source_rows[:, 0] >= 0]
    return runs_of(source_rows), -1


def item_rows(config: Config, source: Any, item: int, cache: dict[int, dict[str, Any]]
              ) -> dict[str, Any]:
    """The checked rows of ``item`` as store arrays (produced once per ``cache``)."""
    if item not in cache:
        raw = source.run(item)
        b = check_batch(raw, config.schema, where=source.describe(item), item_start=0,
                        rows=len(raw), has_group=source.has_group,
                        has_source=source.has_source, nan_policy=config.ingest.nan_policy)
        cache[item] = batch_arrays(b, item, config)
    return cache[item]


def runs_rows(config: Config, source: Any, runs: Any, cache: dict[int, dict[str, Any]]
              ) -> dict[str, np.ndarray]:
    """The rows of item ``runs`` (``(item, row_start, row_stop)``), in order, as store arrays
    with ``meta/source`` and their (item, row) pairs."""
    parts = [{k: v[a:b] for k, v in item_rows(config, source, int(i), cache).items()}
             for i, a, b in runs]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def ingest_end(store: str) -> int | None:
    """The row after the ingest's last one when appends followed it (their rows share its
    last chunk), else None."""
    recs = journal.append_records(store)
    return int(recs[0]["n_before"]) if recs else None
