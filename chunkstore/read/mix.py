"""Mixtures: one shuffled, elastic, resumable batch stream over several stores.

``mix([ds_a, ds_b], weights=[0.7, 0.3], seed=0)`` samples the stores in exact proportions:

* **Blocks.** The mixture's stream is cut into blocks of ``block`` items; in every block store
  ``k`` contributes exactly ``c_k`` items (``weights`` normalized, times ``block``, rounded by
  largest remainder, so ``|c_k - w_k x block| < 1``), at positions drawn from (seed, epoch,
  block). Proportions are exact per block, not just on average.
* **Each store's own order.** The items store ``k`` contributes are consecutive items of its
  own elastic global order (:mod:`chunkstore.read.order`, seeded by (seed, k)), continued
  across mixture epochs and wrapping into the store's next epoch when it runs out: a small
  store with a large weight is repeated (each repetition in a new order), a large store with a
  small weight is read further every mixture epoch.
* **Elastic.** The mixture's stream depends only on (seed, epoch, weights, block, the stores'
  items), never on world size or workers; ranks take it in lockstep exactly like a single
  store's loader (``shard``, ``remainder``), and the state is the global position.

Each store's window is ``window_chunks`` chunks, or by default as many as fit its share
(``window_bytes / stores``) of the byte budget, as for the loader. The chunks the next
``prefetch`` batches need are decoded ahead in ``threads`` background threads, each once
(:mod:`chunkstore.read.prefetch`), and kept in an LRU of ``2 x window_chunks`` decoded chunks
per store: a store's items in the mixture come from one or two of its windows at a time.

Sequence windows mix too: ``mix([ds_a.windows(lookback=32), ds_b.windows(lookback=32)], ...)``
(same ``lookback + horizon``); the items are then windows, each store's in the elastic order
of its window loader, and a batch holds whole windows: ``features`` (b, L, F), ``labels``
(b, L), ``masks`` (b, L, K), ``index`` the window ids.

Batches: ``features`` (b, F), ``labels`` / ``masks`` for the union of the stores' heads (by
name; a store without head ``h`` gives label ``-100``, the default ``ignore_index`` of torch's
losses, and an all-zero mask), ``index`` (the row in its store), ``source`` (the store's
number), and ``valid`` with the "pad" remainder.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, Self

import numpy as np
from numpy.typing import NDArray

from chunkstore.errors import ReadError
from chunkstore.read.elastic import concat
from chunkstore.read.loader import (
    WINDOW_BYTES,
    row_membership,
    sample_sources,
    window_chunks_for,
)
from chunkstore.read.mixorder import (
    SourceOrder,
    block_counts,
    block_pattern,
    row_items,
    window_items,
)
from chunkstore.read.order import check_remainder, position_after, rank_batches, steps
from chunkstore.read.prefetch import ChunkPrefetcher, Decoded, ahead
from chunkstore.read.stream import torch_worker
from chunkstore.read.windows import Windows
from chunkstore.runtime.pool import stop_threads
from chunkstore.store.view import StoreView

I64 = NDArray[np.int64]
MISSING_LABEL = -100


def _windowed(datasets: list[Any], split: str | None
              ) -> tuple[list[Windows] | None, list[StoreView], int | None]:
    """(the sequence windows or None, their stores, rows per window or None)."""
    windowed = [isinstance(d, Windows) for d in datasets]
    if not any(windowed):
        return None, datasets, None
    if not all(windowed):
        raise ReadError("mix takes stores or sequence windows (ds.windows(...)), not both")
    lengths = sorted({w.length for w in datasets})
    if len(lengths) > 1:
        raise ReadError(f"mixed sequence windows must have the same lookback + horizon, found "
                        f"lengths {lengths}")
    if split is not None:
        raise ReadError("split= selects rows of stores; sequence windows carry their own "
                        "split: ds.windows(..., split=...)")
    return datasets, [w.dataset for w in datasets], lengths[0]


def _union_heads(views: Sequence[StoreView], heads: Sequence[str] | None) -> dict[str, int]:
    """Head -> classes over every store (by name); the classes must agree."""
    union: dict[str, int] = {}
    for v in views:
        for h, k in v.heads.items():
            if union.setdefault(h, k) != k:
                raise ReadError(f"head {h!r} has {union[h]} classes in one store and {k} in "
                                f"{v.path!r}: a mixture needs the same classes per head name")
    if heads is None:
        return union
    unknown = [h for h in heads if h not in union]
    if unknown:
        raise ReadError(f"unknown head(s) {unknown}; the mixed stores have {list(union)}")
    return {h: union[h] for h in heads}


def _check_features(views: Sequence[StoreView]) -> None:
    first = views[0]
    for v in views[1:]:
        if v.feature_names != first.feature_names or v.features.dtype != first.features.dtype:
            raise ReadError(f"store {v.path!r} has {len(v.feature_names)} features "
                            f"({v.features.dtype}) and {first.path!r} has "
                            f"{len(first.feature_names)} ({first.features.dtype}), or their "
                            "names differ: a mixture needs the same features in every store")


class Mixture:
    """Batches mixed from several stores in exact proportions; see the module docstring.

    Use :func:`mix` to make one. ``set_epoch``, ``shard(rank, world_size)``, ``state_dict`` /
    ``load_state_dict`` and ``len()`` behave as for a single store's loader.
    """

    def __init__(self, datasets: Sequence[StoreView | Windows], *, weights: Sequence[float],
                 seed: int = 0, batch_size: int = 256, split: str | None = None,
                 splits: str = "default", heads: Sequence[str] | None = None,
                 window_chunks: int | None = None, block: int = 1024,
                 epoch_items: int | None = None, remainder: str = "even",
                 window_bytes: int = WINDOW_BYTES, threads: int = 2, prefetch: int = 4
                 ) -> None:
        self.windows, self.views, self.length = _windowed(list(datasets), split)
        if not self.views or len(weights) != len(self.views):
            raise ReadError(f"mix needs one weight per store: {len(self.views)} stores, "
                            f"{len(weights)} weights")
        _check_features(self.views)
        for name, value in (("batch_size", batch_size), ("block", block),
                            ("window_chunks", 1 if window_chunks is None else window_chunks),
                            ("threads", threads), ("prefetch", prefetch)):
            low = 0 if name == "prefetch" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ReadError(f"{name} must be an integer >= {low}, found {value!r}")
        self.weights = [float(w) for w in weights]
        self.counts = block_counts(self.weights, block)
        self.seed, self.batch_size, self.block = int(seed), batch_size, block
        self.remainder = check_remainder(remainder)
        self.threads, self.prefetch = threads, prefetch
        self.heads = _union_heads(self.views, heads)
        self._sources = [sample_sources(v, [h for h in self.heads if h in v.heads])
                         for v in self.views]
        share = max(1, int(window_bytes) // len(self.views))
        self.window_chunks = [window_chunks_for(window_chunks, share, src, v.chunk_rows,
                                                -(-v.n_samples // v.chunk_rows))
                              for v, src in zip(self.views, self._sources, strict=True)]
        self.orders = []
        for k, v in enumerate(self.views):
            counts, items_of = (
                row_items(row_membership(v, split, splits, False), v.n_samples, v.chunk_rows)
                if self.windows is None
                else window_items(self.windows[k].index.starts(), v.n_samples, v.chunk_rows))
            self.orders.append(SourceOrder(counts, items_of, seed=int(seed) * 1_000_003 + k,
                                           window_chunks=self.window_chunks[k]))
        empty = [v.path for v, o, c in zip(self.views, self.orders, self.counts, strict=True)
                 if c and not o.items]
        if empty:
            where = f" in split {split!r}" if split else ""
            raise ReadError(f"store(s) {empty} have no rows{where} but a positive weight")
        total = sum(o.items for o in self.orders)
        blocks = -(-total // block) if epoch_items is None else -(-int(epoch_items) // block)
        self.items = blocks * block  # items per mixture epoch
        self.epoch, self.rank, self.world_size = 0, 0, 1
        self._position = self._resume = 0

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch`` from now on (a loaded resume position of another epoch
        is dropped)."""
        if int(epoch) != self.epoch:
            self._resume = 0
        self.epoch = int(epoch)

    def shard(self, rank: int, world_size: int) -> Self:
        """A copy for lockstep rank ``rank`` of ``world_size``."""
        if not (isinstance(world_size, int) and world_size >= 1 and 0 <= rank < world_size):
            raise ReadError(f"need 0 <= rank < world_size, found rank={rank!r}, "
                            f"world_size={world_size!r}")
        other = copy.copy(self)
        other.rank, other.world_size = rank, world_size
        other._position = other._resume = 0
        return other

    def __len__(self) -> int:
        return steps(self.items, start=0, batch_size=self.batch_size,
                     world_size=self.world_size, remainder=self.remainder)

    def state_dict(self) -> dict[str, Any]:
        """The global position: loads into a mixture of any world size or worker count."""
        return {"epoch": self.epoch, "position": self._position, **self._fingerprint()}

    def state_after(self, batches: int) -> dict[str, Any]:
        """The state once every rank has consumed ``batches`` batches from where this mixture
        starts (its loaded state, else the epoch's start): for DataLoader workers, whose
        position the training process cannot see."""
        position = position_after(self.items, start=self._resume, batch_size=self.batch_size,
                                  world_size=self.world_size, remainder=self.remainder,
                                  done=int(batches))
        return {"epoch": self.epoch, "position": position, **self._fingerprint()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume at a state of any rank, world size or worker count (same mixture)."""
        mine = self._fingerprint()
        diff = sorted(k for k in mine if state.get(k) != mine[k])
        if diff:
            raise ReadError("cannot resume: the saved mixture state differs in " + ", ".join(
                f"{k} (saved {state.get(k)!r}, this mixture {mine[k]!r})" for k in diff))
        position = int(state["position"])
        if not 0 <= position <= self.items:
            raise ReadError(f"resume position {position} is outside this epoch's "
                            f"{self.items} items")
        self.epoch, self._resume = int(state["epoch"]), position
        self._position = position

    def _fingerprint(self) -> dict[str, Any]:
        return {"kind": "Mixture", "seed": self.seed, "weights": self.weights,
                "block": self.block, "items": self.items, "window_chunks": self.window_chunks,
                "sources": [[v.path, o.items] for v, o in zip(self.views, self.orders,
                                                              strict=True)],
                **({"length": self.length} if self.windows is not None else {})}

    def _batch(self, plans: list[Any], step: int) -> tuple[dict[str, Any], int]:
        """A gather job: the batch of ``plans`` (filled from decoded chunks) and its step."""
        return concat([self._fill(*p) for p in plans]), step

    def __iter__(self) -> Iterator[dict[str, Any]]:
        start, self._resume = self._resume, 0
        self._position = start
        decode = ThreadPoolExecutor(self.threads, thread_name_prefix="chunkstore-mix")
        chunks = ChunkPrefetcher(self._sources, [2 * k for k in self.window_chunks], decode)

        def jobs() -> Iterator[Callable[[], tuple[dict[str, Any], int]]]:
            for spec in rank_batches(self.items, start=start, batch_size=self.batch_size,
                                     rank=self.rank, world_size=self.world_size,
                                     remainder=self.remainder, workers=torch_worker()):
                plans = [self._plan(a, b, valid, chunks) for a, b, valid in spec.ranges]
                yield partial(self._batch, plans, spec.step)

        batches = ahead(jobs(), threads=self.threads, depth=self.prefetch)
        try:
            for batch, step in batches:
                self._position = position_after(
                    self.items, start=start, batch_size=self.batch_size,
                    world_size=self.world_size, remainder=self.remainder, done=step + 1)
                yield batch
        finally:
            batches.close()
            stop_threads(decode)

    def locate(self, positions: I64) -> tuple[I64, I64]:
        """(source, cumulative position in that source's stream) of mixture positions."""
        blocks = self.items // self.block
        source = np.empty(len(positions), np.int64)
        q = np.empty(len(positions), np.int64)
        b, o = np.divmod(positions, self.block)
        for blk in np.unique(b).tolist():
            at = np.flatnonzero(b == blk)
            src, within = block_pattern(self.counts, seed=self.seed, epoch=self.epoch,
                                        block=blk)
            source[at] = src[o[at]]
            q[at] = (self.epoch * blocks + blk) * self.counts[src[o[at]]] + within[o[at]]
        return source, q

    def _plan(self, a: int, b: int, valid: bool, chunks: ChunkPrefetcher) -> tuple[Any, ...]:
        """Which rows of which store mixture positions ``[a, b)`` are, and the futures of
        their decoded chunks (in the consumer's thread: the orders' caches are not shared)."""
        source, q = self.locate(np.arange(a, b, dtype=np.int64))
        parts = []
        for k in np.unique(source).tolist():
            at = np.flatnonzero(source == k)
            ids = self.orders[k].rows(q[at])
            rows = ids if self.windows is None else (
                self.windows[k].index.locate(ids)[1][:, None]
                + np.arange(self.length or 1, dtype=np.int64)).ravel()
            parts.append((k, at, ids, rows,
                          chunks.need(k, rows // self.views[k].chunk_rows)))
        return b - a, source, parts, valid

    def _fill(self, n: int, source: I64, parts: list[Any], valid: bool) -> dict[str, Any]:
        """The batch of a :meth:`_plan`, gathered from its decoded chunks (a pool thread)."""
        f, length = self.views[0].features, self.length or 1
        m = n * length  # rows (a window's rows side by side)
        out: dict[str, Any] = {
            "features": np.empty((m, *f.shape[1:]), f.dtype),
            "labels": {h: np.full(m, MISSING_LABEL, np.int64) for h in self.heads},
            "masks": {h: np.zeros((m, k), np.int8) for h, k in self.heads.items()},
            "index": np.empty(n, np.int64), "source": source}
        for k, at, ids, rows, futures in parts:
            r = self.views[k].chunk_rows
            out["index"][at] = ids
            slots = (at[:, None] * length + np.arange(length)).ravel()
            for c, future in futures.items():
                sel = rows // r == c
                dest, local = slots[sel], rows[sel] - c * r
                got: Decoded = future.result()
                out["features"][dest] = got["features"][local]
                for h in self.heads:
                    if f"labels/{h}" in got:
                        out["labels"][h][dest] = got[f"labels/{h}"][local]
                        out["masks"][h][dest] = got[f"masks/{h}"][local]
        if self.windows is not None:  # (n, L, ...)
            out["features"] = out["features"].reshape(n, length, *f.shape[1:])
            out["labels"] = {h: v.reshape(n, length) for h, v in out["labels"].items()}
            out["masks"] = {h: v.reshape(n, length, -1) for h, v in out["masks"].items()}
        if self.remainder == "pad":
            out["valid"] = np.full(n, valid)
        return out


def mix(datasets: Sequence[StoreView | Windows], *, weights: Sequence[float], seed: int = 0,
        batch_size: int = 256, split: str | None = None, splits: str = "default",
        heads: Sequence[str] | None = None, window_chunks: int | None = None,
        block: int = 1024, epoch_items: int | None = None, remainder: str = "even",
        window_bytes: int = WINDOW_BYTES, threads: int = 2, prefetch: int = 4) -> Mixture:
    """A shuffled batch stream over several stores in exact proportions.

    Parameters
    ----------
    datasets : open stores (``chunkstore.open``) with the same features, or sequence windows
        of such stores (``ds.windows(lookback=..., horizon=...)``, the same length each; their
        own ``split``).
    weights : one per store; normalized. Per block of ``block`` items, store ``k`` gives
        exactly ``round(w_k x block)`` items (largest remainder).
    seed : fixes every order with the epoch (``set_epoch``).
    window_chunks, window_bytes : each store's window: ``window_chunks`` chunks, or as many
        as fit ``window_bytes / stores`` decoded bytes (default).
    threads, prefetch : background decode threads; batches prepared ahead.
    batch_size, split, splits, heads, remainder : as for the loader; ``heads``
        is over the union of the stores' heads, a store without a head gives label -100 and
        an all-zero mask for it.
    epoch_items : items per mixture epoch (rounded up to a whole block); default the stores'
        rows (of ``split``) together.

    Raises
    ------
    ReadError
        On bad weights, differing features, head classes that disagree, or a weighted store
        without rows.

    Examples
    --------
    >>> m = chunkstore.mix([a, b], weights=[3, 1], seed=0, batch_size=256)  # doctest: +SKIP
    >>> for batch in m.shard(rank, world):  # doctest: +SKIP
    ...     loss = model(batch["features"], batch["labels"]["action"])
    """
    return Mixture(datasets, weights=weights, seed=seed, batch_size=batch_size, split=split,
                   splits=splits, heads=heads, window_chunks=window_chunks, block=block,
                   epoch_items=epoch_items, remainder=remainder, window_bytes=window_bytes,
                   threads=threads, prefetch=prefetch)
