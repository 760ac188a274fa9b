"""Labels and masks kept decoded across epochs (chunkstore.read.small) change no batch."""

from __future__ import annotations

import numpy as np

import chunkstore
from chunkstore.read import small
from chunkstore.testing import assert_batch_matches, read_all


def test_kept_small_arrays_give_the_batches_of_decoding_per_window(small_store, monkeypatch):
    path = small_store(8)
    full = read_all(path)
    kept = chunkstore.open(path).loader(batch_size=24, seed=6, window_chunks=3, split=None)
    assert kept._small is not None  # the small store's labels and masks fit the budget
    monkeypatch.setattr(small, "BUDGET", 0)
    plain = chunkstore.open(path).loader(batch_size=24, seed=6, window_chunks=3)
    assert plain._small is None
    for epoch in range(3):  # epoch 0 fills the copies, later epochs only gather from them
        kept.set_epoch(epoch)
        plain.set_epoch(epoch)
        a, b = list(kept), list(plain)
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x["index"], y["index"])
            for h in x["labels"]:
                np.testing.assert_array_equal(x["labels"][h], y["labels"][h])
                np.testing.assert_array_equal(x["masks"][h], y["masks"][h])
            assert_batch_matches(x, full)
    assert kept._small.have.all()
    shard = kept.shard(1, 2)  # shards in one process share the decoded copies
    assert shard._small is kept._small
