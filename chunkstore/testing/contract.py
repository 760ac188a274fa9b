"""The contract every source kind passes, shipped for third-party sources too.

Subclass :class:`SourceContract` in a pytest module and implement ``make_source``::

    from chunkstore.testing import SourceContract

    class TestMySource(SourceContract):
        def make_source(self, tmp_path):
            ...  # write a few items (one of them empty) under tmp_path, return the Source

pytest collects the inherited ``test_*`` methods; each gets its own ``tmp_path``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from chunkstore.sources import Source, check_batch


class SourceContract:
    """Subclass and implement ``make_source``; every source kind must pass these tests.

    ``make_source(tmp_path)`` must be deterministic: two calls with the same ``tmp_path`` give
    sources with equal counts and equal rows.
    """

    def make_source(self, tmp_path: Path) -> Source:
        raise NotImplementedError

    def test_counts_are_non_negative_and_nonempty(self, tmp_path: Path) -> None:
        counts = self.make_source(tmp_path).counts()
        assert counts and all(isinstance(c, int) and c >= 0 for c in counts)
        assert sum(counts) > 0

    def test_read_returns_valid_batches(self, tmp_path: Path) -> None:
        src = self.make_source(tmp_path)
        for item, n in enumerate(src.counts()):
            b = check_batch(src.read(item, 0, n), src.schema, where=src.describe(item),
                            item_start=0, rows=n, has_group=src.has_group)
            assert len(b) == n and b.features.dtype == np.float32
            assert (b.group is not None) == src.has_group

    def test_slices_equal_slices_of_whole_item(self, tmp_path: Path) -> None:
        src = self.make_source(tmp_path)
        for item, n in enumerate(src.counts()):
            if n < 2:
                continue
            whole, part = src.read(item, 0, n), src.read(item, 1, n - 1)
            np.testing.assert_array_equal(np.asarray(part.features),
                                          np.asarray(whole.features)[1:n - 1])
            for h in src.schema.heads:
                np.testing.assert_array_equal(part.labels[h.name], whole.labels[h.name][1:n - 1])
                np.testing.assert_array_equal(part.masks[h.name], whole.masks[h.name][1:n - 1])

    def test_deterministic_across_instances(self, tmp_path: Path) -> None:
        a, b = self.make_source(tmp_path), self.make_source(tmp_path)
        assert a.counts() == b.counts()
        n = a.counts()[-1]
        np.testing.assert_array_equal(a.read(len(a.counts()) - 1, 0, n).features,
                                      b.read(len(b.counts()) - 1, 0, n).features)

    def test_describe_names_the_item(self, tmp_path: Path) -> None:
        src = self.make_source(tmp_path)
        assert "0" in src.describe(0)
