"""Checks before an append, and what it reports: the config against the store, the source's
digest, the config resolved from a path or mapping (as :func:`chunkstore.ingest` does)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from chunkstore.config import Config
from chunkstore.core.plan import choose_chunk_rows
from chunkstore.errors import AppendError
from chunkstore.ingest.append_streaming import check_provenance
from chunkstore.ingest.resolve import resolve_config, with_scheduler
from chunkstore.sources import Source
from chunkstore.store import layout


@dataclass(frozen=True)
class AppendSummary:
    """What an append did; printed by the CLI."""

    store: str
    rows_before: int
    rows_added: int
    tasks_total: int
    tasks_run: int
    workers: int
    splits_extended: tuple[str, ...]
    scopes_updated: tuple[str, ...]
    version: str | None
    wall_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def format(self) -> str:
        return "\n".join([
            f"store            {self.store}  (complete)",
            f"rows             {self.rows_before:,} + {self.rows_added:,} = "
            f"{self.rows_before + self.rows_added:,}",
            f"tasks            {self.tasks_run} run, {self.tasks_total - self.tasks_run} "
            f"already done, {self.workers} workers",
            f"splits extended  {', '.join(self.splits_extended) or '-'}",
            f"stats merged     {', '.join(self.scopes_updated) or '-'}",
            f"version          {self.version or '-'}",
            f"wall time        {self.wall_seconds:,.1f} s",
        ])


def expected_attrs(config: Config, chunk_rows: int, has_group: bool) -> dict[str, Any]:
    """The store attrs that must equal the config's for rows to be appended (``meta/source``
    is checked by :func:`~chunkstore.ingest.append_streaming.check_provenance`)."""
    return {"feature_names": list(config.schema.feature_names),
            "feature_dtype": config.schema.feature_dtype,
            "heads": {h.name: h.to_dict() for h in config.schema.heads},
            "compression": config.compression.to_dict(), "chunk_rows": chunk_rows,
            "has_group": has_group}


def check_store(config: Config, source: Source) -> dict[str, Any]:
    """The store's attrs, if rows of ``source`` can be appended; AppendError naming the
    first difference otherwise (nothing is changed)."""
    store = config.store
    attrs = layout.read_attrs(store)
    if attrs.get("status") != layout.COMPLETE:
        raise AppendError(f"store {store!r} is not complete (status {attrs.get('status')!r}); "
                          "finish its ingest (rerun it) before appending")
    feature_row = config.schema.n_features * np.dtype(config.schema.feature_dtype).itemsize
    chunk_rows = config.ingest.chunk_rows or choose_chunk_rows(
        feature_row, config.ingest.target_chunk_mib * 2**20)
    want = expected_attrs(config, chunk_rows, source.has_group)
    for key, value in want.items():
        found = attrs.get(key, False if key.startswith("has_") else None)
        if found != value:
            raise AppendError(
                f"cannot append to store {store!r}: {key} differs (store: {short(found)}, "
                f"config {config.file!r}: {short(value)}); an append needs the same schema, "
                "chunking and compression as the store")
    check_provenance(config, source, attrs)
    return attrs


def short(v: Any, limit: int = 120) -> str:
    text = json.dumps(v, sort_keys=True, default=str)
    return text if len(text) <= limit else text[:limit] + "..."


def source_sha256(config: Config, counts: list[int]) -> str:
    """Digest of the source section and its item row counts: the same command, the same
    digest (a rerun resumes; a second run of a finished append is refused)."""
    d = {"source": config.to_dict()["source"], "counts": counts}
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()


def resolve(config: Any, items: Any, process: Any, count: Any, scheduler: str | None
            ) -> Config:
    """A Config from a Config, mapping or YAML path, with a python source's callables and a
    scheduler address applied (as :func:`chunkstore.ingest` does)."""
    return with_scheduler(resolve_config(config, items, process, count), scheduler)
