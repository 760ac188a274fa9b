"""chunkstore.interop.torch_mix: a mixture in a real DataLoader with worker processes; a
rank's batches do not depend on num_workers; resume under a new world size and workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import chunkstore
from chunkstore.interop.torch_mix import MixtureDataset
from chunkstore.testing import make_items, write_config, write_items

pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")
OPTIONS = dict(seed=3, batch_size=12, block=30, remainder="pad")


@pytest.fixture(scope="module")
def paths(small_store, tmp_path_factory) -> list[str]:
    tmp = tmp_path_factory.mktemp("torch_mix")
    heads = {"move": 5, "side": 2}
    items = make_items([30, 40, 27], seed=9, heads=heads)
    cfg = write_config(tmp / "c.yaml", store=tmp / "s.zarr", paths=write_items(tmp / "b", items),
                       heads=heads, ingest={"chunk_rows": 16})
    chunkstore.ingest(cfg, progress=False)
    return [small_store(8), str(tmp / "s.zarr")]


def rank_run(paths, rank, world, workers, *, state=None, stop=None):
    ds = MixtureDataset(paths, weights=[2, 1], rank=rank, world_size=world, **OPTIONS)
    ds.set_epoch(1)
    if state is not None:
        ds.load_state_dict(state)
    out = []
    for b in DataLoader(ds, batch_size=None, num_workers=workers):
        if stop is not None and len(out) == stop:
            break
        assert b["labels"]["move"].dtype == torch.int64
        keep = b["valid"].numpy()
        out.append(list(zip(b["source"].numpy()[keep].tolist(),
                            b["index"].numpy()[keep].tolist(), strict=True)))
    return out, ds.state_dict(len(out))


def test_a_ranks_batches_do_not_depend_on_num_workers(paths):
    want, _ = rank_run(paths, 1, 2, 0)
    for workers in (1, 3):
        assert rank_run(paths, 1, 2, workers)[0] == want


@pytest.mark.parametrize("old, new", [((2, 2), (3, 1)), ((3, 0), (2, 3))])
def test_resume_under_a_new_world_size_and_workers(paths, old, new):
    (w0, k0), (w1, k1) = old, new
    whole = [x for b in rank_run(paths, 0, 1, 0)[0] for x in b]
    before = [rank_run(paths, r, w0, k0, stop=2) for r in range(w0)]
    state = before[0][1]
    after = [rank_run(paths, r, w1, k1, state=state)[0] for r in range(w1)]
    assert len({len(a) for a in after}) == 1  # equal batches per rank
    got = [x for s in range(2) for r in range(w0) for x in before[r][0][s]]
    got += [x for s in range(len(after[0])) for r in range(w1) for x in after[r][s]]
    assert got == whole
    assert np.bincount([s for s, _ in whole]).tolist() == [300, 150]  # 2:1 in every block
