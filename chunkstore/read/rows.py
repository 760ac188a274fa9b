"""Map-style reads: rows by index, as a dict like a loader batch, through a chunk cache."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from chunkstore.read.loader import sample_sources
from chunkstore.store.chunkfiles import ChunkCache, as_ids
from chunkstore.store.view import StoreView


class RowReader:
    """``reader[key]`` -> ``{"features", "labels", "masks", "index"}`` for an int, slice or
    index array; an int gives arrays without the batch axis.

    Rows are read through a small LRU cache of decoded chunks (``max_chunks`` per array), so
    nearby rows are cheap; shuffled training should use the loader, which reads each chunk once
    per epoch.
    """

    def __init__(self, view: StoreView, heads: Sequence[str] | None = None, *,
                 max_chunks: int = 4) -> None:
        self.n_samples = view.n_samples
        self.heads = list(view.heads) if heads is None else list(heads)
        self.cache = ChunkCache(sample_sources(view, self.heads), max_chunks=max_chunks)

    def __getitem__(self, key: Any) -> dict[str, Any]:
        ids, scalar = as_ids(key, self.n_samples)
        got = self.cache.gather(list(self.cache.sources), ids)
        labels = {h: got[f"labels/{h}"] for h in self.heads}
        masks = {h: got[f"masks/{h}"] for h in self.heads}
        if scalar:
            return {"features": got["features"][0], "labels": {h: a[0] for h, a in labels.items()},
                    "masks": {h: a[0] for h, a in masks.items()}, "index": ids[0]}
        return {"features": got["features"], "labels": labels, "masks": masks, "index": ids}
