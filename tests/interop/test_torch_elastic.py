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
