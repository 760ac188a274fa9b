"""The elastic global order of an epoch, and how lockstep ranks share it.

Pure functions of their arguments (no I/O), so that the guarantees are tested on their own:

* **One global order per epoch.** The items (rows, or sequence windows) of an epoch form one
  global stream that depends only on (seed, epoch, the items per chunk, ``window_chunks``,
  shuffle): windows of at most ``window_chunks`` chunks drawn from (seed, epoch), stratified
  across the store (:func:`window_chunk_sets`), in a random order, each window's items
  permuted by (seed, epoch, window). World size, rank, DataLoader workers and batch size play
  no part in the order.
* **Lockstep steps.** Ranks consume the stream in steps: at each step every one of the
  ``world_size`` ranks takes one batch of ``batch_size`` consecutive items, rank ``r`` the
  ``r``-th (global batch ``g`` goes to rank ``g % world_size``). After ``k`` steps the ranks
  together have consumed a known prefix of the stream, so the *global position* (items
  consumed) is the whole state: any rank's state resumes every rank of a new world size or
  batch size from that position, by arithmetic (no replay).
* **Equal ranks.** Every rank takes the same number of steps. The last, partial step (fewer
  than ``world_size x batch_size`` items left) follows the *remainder* policy:

  - ``"even"`` (default): the ``R`` items left are split into ``world_size`` equal batches of
    ``R // world_size`` items; the ``R % world_size`` last items of the epoch's order (fewer
    than ``world_size``) are not yielded, and the step is skipped when ``R < world_size``.
    With one rank nothing is dropped (the last batch is smaller), as before.
  - ``"drop"``: the partial step is skipped (at most ``world_size x batch_size - 1`` items,
    the last of the epoch's order, which differ every epoch).
  - ``"pad"``: the partial step is filled up to full batches by repeating the epoch's first
    items, which the batch marks as not valid (``batch["valid"]`` is False for them).

* **DataLoader workers** split a rank's steps round-robin (worker ``j`` of ``k`` takes steps
  ``j, j + k, ...``), which is the order a ``torch.utils.data.DataLoader`` collects them in, so
  the rank's sequence of batches does not depend on the number of workers either.

The cost of the exactness: a rank decodes every window it takes a batch from. When a window
holds more than ``world_size x workers`` batches (the usual case), every rank decodes every
window, so decoding CPU is per rank the whole epoch's; the loader's background threads
parallelize it (Blosc releases the GIL).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from chunkstore.errors import ReadError

REMAINDERS = ("even", "drop", "pad")
I64 = NDArray[np.int64]


@dataclass(frozen=True)
class Window:
    """One window of the global stream: its chunks and where its items sit in the stream."""

    number: int  # position of the window in the epoch
    chunks: I64
    start: int  # stream offset of the window's first item
    count: int  # items the window contributes


@dataclass(frozen=True)
class BatchSpec:
    """One batch of one rank: ranges ``[a, b)`` of stream positions, in order.

    ``valid`` is False for the ranges that repeat items to pad the last step ("pad" policy).
    """

    step: int  # the rank's step number in this epoch, counted from position 0
    ranges: tuple[tuple[int, int, bool], ...]

    @property
    def size(self) -> int:
        return sum(b - a for a, b, _ in self.ranges)


@dataclass(frozen=True)
class Piece:
    """Items ``[lo, hi)`` of a window's permuted items, part of one batch of a shard."""

    lo: int
    hi: int
    valid: bool  # False: repeated items padding the last step
    ends: int  # the step this piece completes (its batch's last piece), else -1
    step: int = -1  # the step of the batch this piece belongs to


@dataclass(frozen=True)
class Task:
    """The pieces of one window that one shard yields next, in order (decoded once)."""

    window: Window
    pieces: tuple[Piece, ...]


def window_chunk_sets(live: I64, *, seed: int, epoch: int, shuffle: bool,
                      window_chunks: int) -> list[I64]:
    """The chunks of each window of the epoch, in stream order (stratified, balanced).

    ``live`` are the chunks that contribute items, in store order. With ``n`` windows, the
    store is cut into strata of ``n`` consecutive chunks and every window takes one chunk of
    each stratum, drawn at random; the windows then come in a random order. Each window thus
    spans the whole store, so a store ordered by class, time or file still gives every window
    chunks of every region (a window of random chunks can miss whole classes); window sizes
    differ by at most one chunk, so no short window mixes the end of an epoch worse.
    """
    n = -(-len(live) // window_chunks)
    if not shuffle or n == 0:
        return list(np.array_split(live, n)) if n else []
    rng = np.random.default_rng(np.random.SeedSequence([seed, epoch, 0]))
    window = np.empty(len(live), np.int64)
    for s in range(0, len(live), n):
        m = min(n, len(live) - s)
        window[s:s + m] = rng.permutation(n)[:m]
    by_window = np.argsort(window, kind="stable")
    bounds = np.searchsorted(window[by_window], np.arange(n + 1))
    sets = [live[by_window[bounds[w]:bounds[w + 1]]] for w in range(n)]
    return [sets[w] for w in rng.permutation(n)]


def global_windows(counts: I64, *, seed: int, epoch: int, shuffle: bool,
                   window_chunks: int) -> list[Window]:
    """The windows of the epoch's global stream, in stream order.

    ``counts[c]`` is the number of items chunk ``c`` contributes; empty chunks are skipped.
    """
    live = np.flatnonzero(counts > 0).astype(np.int64)
    out, start = [], 0
    for number, chunks in enumerate(window_chunk_sets(live, seed=seed, epoch=epoch,
                                                      shuffle=shuffle,
                                                      window_chunks=window_chunks)):
        n = int(counts[chunks].sum())
        out.append(Window(number, chunks, start, n))
        start += n
    return out


def window_permutation(count: int, *, seed: int, epoch: int, number: int) -> I64:
    """The permutation of window ``number``'s items (natural order -> stream order)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, epoch, 1, number, 0, 1]))
    return rng.permutation(count).astype(np.int64)


def check_remainder(remainder: str) -> str:
    if remainder not in REMAINDERS:
        raise ReadError(f"remainder must be one of {', '.join(map(repr, REMAINDERS))}, "
                        f"found {remainder!r}")
    return remainder


def last_step(left: int, batch_size: int, world_size: int, remainder: str) -> int:
    """Items per rank in the partial last step of ``left`` items (0: no such step)."""
    if remainder == "drop":
        return 0
    if remainder == "pad":
        return batch_size
    return left // world_size


def steps(total: int, *, start: int, batch_size: int, world_size: int, remainder: str) -> int:
    """Steps (batches per rank) left in an epoch of ``total`` items from position ``start``."""
    left = total - start
    full, part = divmod(left, batch_size * world_size)
    return full + (part > 0 and last_step(part, batch_size, world_size, remainder) > 0)


def position_after(total: int, *, start: int, batch_size: int, world_size: int,
                   remainder: str, done: int) -> int:
    """The global position once every rank has consumed ``done`` steps from ``start``.

    A completed epoch (every step, including a partial last step) is position ``total``.
    """
    if done >= steps(total, start=start, batch_size=batch_size, world_size=world_size,
                     remainder=remainder):
        return total
    return start + done * batch_size * world_size


def rank_batches(total: int, *, start: int, batch_size: int, rank: int, world_size: int,
                 remainder: str, workers: tuple[int, int] = (0, 1)) -> Iterator[BatchSpec]:
    """The batches of ``rank`` (and of DataLoader worker ``workers = (id, count)``) from
    position ``start`` to the end of the epoch, lazily (resuming costs nothing)."""
    worker, n_workers = workers
    span = batch_size * world_size
    n = steps(total, start=start, batch_size=batch_size, world_size=world_size,
              remainder=remainder)
    for step in range(worker, n, n_workers):
        a = start + step * span
        if total - a >= span:
            lo = a + rank * batch_size
            yield BatchSpec(step, ((lo, lo + batch_size, True),))
            continue
        size = last_step(total - a, batch_size, world_size, remainder)
        lo = a + rank * size
        yield BatchSpec(step, tuple(_wrap(lo, lo + size, total)))


def _wrap(a: int, b: int, total: int) -> Iterator[tuple[int, int, bool]]:
    """Positions ``[a, b)``; those past ``total`` repeat the epoch's first items, not valid."""
    if a < total:
        yield a, min(b, total), True
    p = max(a, total)
    while p < b:
        q = min(b, p + total - (p - total) % total)
        r = (p - total) % total
        yield r, r + (q - p), False
        p = q


def tasks(windows: list[Window], batches: Iterator[BatchSpec]) -> Iterator[Task]:
    """The window pieces the ``batches`` need, in order, as tasks of one window each.

    Consecutive pieces of the same window form one task, so a shard decodes a window once
    per run of batches that need it.
    """
    starts = np.array([w.start for w in windows], dtype=np.int64)
    current: Window | None = None
    pieces: list[Piece] = []
    for batch in batches:
        for k, (a, b, valid) in enumerate(batch.ranges):
            w = int(np.searchsorted(starts, a, side="right")) - 1
            while a < b:
                win = windows[w]
                hi = min(b, win.start + win.count)
                if current is not None and win.number != current.number:
                    yield Task(current, tuple(pieces))
                    pieces = []
                current = win
                last = hi == b and k == len(batch.ranges) - 1
                pieces.append(Piece(a - win.start, hi - win.start, valid,
                                    batch.step if last else -1, batch.step))
                a, w = hi, w + 1
    if current is not None:
        yield Task(current, tuple(pieces))


def global_items(windows: list[Window], items: list[I64], *, seed: int, epoch: int,
                 shuffle: bool) -> I64:
    """The whole epoch's global stream given each window's items in natural order (for tests
    and reports; the loader never materializes it)."""
    parts = [it[window_permutation(len(it), seed=seed, epoch=epoch, number=w.number)]
             if shuffle else it for w, it in zip(windows, items, strict=True)]
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)
