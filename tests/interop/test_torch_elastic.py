"""chunkstore.torch, elastic: a rank's batches do not depend on num_workers; a state counted
in the training loop resumes under another world size and worker count exactly; equal
batches per rank. Real DataLoader worker processes, explicit ranks (no process group)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from chunkstore.interop.torch import IterableDataset

pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")
OPTIONS = dict(batch_size=10, seed=6, window_chunks=3)


@pytest.fixture(scope="module")
def store(small_store) -> str:
    return small_store(8)  # 333 rows, 42 chunks of 8


@pytest.fixture(scope="module")
def full(store) -> dict[str, np.ndarray]:
    from chunkstore.testing import read_all

    return read_all(store)


def rank_batches(store, rank, world, workers, *, state=None, stop=None, **options):
    ds = IterableDataset(store, rank=rank, world_size=world, **{**OPTIONS, **options})
    ds.set_epoch(2)
    if state is not None:
        ds.load_state_dict(state)
    out = []
    for b in DataLoader(ds, batch_size=None, num_workers=workers):
        if stop is not None and len(out) == stop:
            break
        valid = b["valid"].numpy() if "valid" in b else np.ones(len(b["index"]), bool)
        out.append(b["index"].numpy()[valid])
    return out, ds.state_dict(len(out))


def lockstep(per_rank: list[list[np.ndarray]]) -> list[int]:
    assert len({len(r) for r in per_rank}) == 1  # equal batches per rank
    return [int(i) for k in range(len(per_rank[0])) for r in per_rank for i in r[k]]


@pytest.mark.parametrize("world", [1, 3])
def test_a_ranks_batches_do_not_depend_on_num_workers(store, world):
    want, _ = rank_batches(store, world - 1, world, 0)
    for workers in (1, 2, 3):
        got, _ = rank_batches(store, world - 1, world, workers)
        assert len(got) == len(want)
        assert all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))


@pytest.mark.parametrize("old, new", [((4, 2), (3, 3)), ((2, 1), (5, 0)), ((3, 0), (1, 2))])
def test_resume_under_new_world_size_and_workers_continues_exactly(store, old, new):
    (w0, k0), (w1, k1) = old, new
    whole = lockstep([rank_batches(store, r, 1, 0, remainder="pad")[0] for r in range(1)])
    assert sorted(whole) == list(range(333))
    stop = 3
    before = [rank_batches(store, r, w0, k0, stop=stop, remainder="pad") for r in range(w0)]
    state = before[-1][1]  # any rank's state is enough
    assert all(b[1] == state for b in before)
    after = [rank_batches(store, r, w1, k1, state=state, remainder="pad")[0] for r in range(w1)]
    order = lockstep([b[0] for b in before]) + lockstep(after)
    assert order == whole  # none repeated, none skipped, the uninterrupted order


@pytest.mark.parametrize("world", [2, 5, 8])
def test_equal_batches_per_rank_with_workers(store, world):
    counts = [len(rank_batches(store, r, world, 2)[0]) for r in range(world)]
    assert len(set(counts)) == 1 and counts[0] == len(IterableDataset(
        store, rank=0, world_size=world, **OPTIONS).loader())


def test_a_state_of_another_order_is_refused(store):
    _, state = rank_batches(store, 0, 2, 0, stop=2)
    ds = IterableDataset(store, rank=0, world_size=2, **{**OPTIONS, "seed": 7})
    with pytest.raises(Exception, match="seed"):
        ds.load_state_dict(state)
    assert torch.is_tensor(next(iter(DataLoader(IterableDataset(store, **OPTIONS),
                                                batch_size=None)))["index"])


def _report_decodes(out_dir, _worker_id):
    """worker_init_fn: at worker exit, write how many chunks its loader decoded."""
    import multiprocessing.util
    import os

    from torch.utils.data import get_worker_info

    ds = get_worker_info().dataset

    def write():
        (out_dir / f"{os.getpid()}.txt").write_text(str(ds.loader().chunks_decoded))

    multiprocessing.util.Finalize(None, write, exitpriority=100)


@pytest.mark.parametrize("workers", [2, 3])
def test_workers_of_a_rank_divide_the_decode_of_every_window(store, tmp_path, workers):
    # the workers decode each window together in inherited shared memory: every chunk is
    # decoded once per epoch in all, about 1/workers by each, and the batches are unchanged
    import functools

    want, _ = rank_batches(store, 0, 1, 0, window_chunks=6)
    ds = IterableDataset(store, **{**OPTIONS, "window_chunks": 6})
    ds.set_epoch(2)
    dl = DataLoader(ds, batch_size=None, num_workers=workers,
                    worker_init_fn=functools.partial(_report_decodes, tmp_path))
    got = [b["index"].numpy() for b in dl]
    del dl
    assert all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))
    assert len(got) == len(want)
    counts = sorted(int(p.read_text()) for p in tmp_path.glob("*.txt"))
    assert len(counts) == workers and sum(counts) == 42  # 42 chunks, each decoded once
    assert counts[-1] <= -(-42 // workers) + 7  # each about 1/workers (windows of 6: +1 each)


def test_shared_decode_survives_persistent_workers_and_an_abandoned_iteration(store, full):
    # persistent workers keep the shared window slots across iterations; an iteration left
    # mid-way must neither block the next one nor leak its windows into it
    want, _ = rank_batches(store, 0, 1, 0, window_chunks=4)
    ds = IterableDataset(store, **{**OPTIONS, "window_chunks": 4})
    ds.set_epoch(2)
    dl = DataLoader(ds, batch_size=None, num_workers=2, persistent_workers=True)
    for stop in (5, None, 1, None):
        got = []
        for b in dl:
            np.testing.assert_array_equal(b["features"].numpy(),
                                          full["features"][b["index"].numpy()])
            got.append(b["index"].numpy())
            if len(got) == stop:
                break
        n = len(want) if stop is None else stop
        assert all(np.array_equal(a, b) for a, b in zip(got, want[:n], strict=True))
        assert len(got) == n


@pytest.mark.parametrize("window_chunks", [1, 2])
def test_shared_decode_with_padding_and_fewer_batches_per_window_than_workers(store, window_chunks):
    # a window holds about one batch: most workers take no batch of it but still decode their
    # share, and the "pad" step wraps to the epoch's first window again at the end
    for world in (1, 2):
        want, _ = rank_batches(store, world - 1, world, 0, remainder="pad",
                               window_chunks=window_chunks)
        for workers in (2, 3):
            got, _ = rank_batches(store, world - 1, world, workers, remainder="pad",
                                  window_chunks=window_chunks)
            assert len(got) == len(want)
            assert all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))
