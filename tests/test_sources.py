"""Every source kind passes :class:`SourceContract`; kind-specific checks follow."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import HEADS, N_FEATURES, make_items, write_items

from chunkstore.core.schema import Schema, Where
from chunkstore.errors import SourceError
from chunkstore.sources import Source, check_batch, registry, source_class
from chunkstore.sources.npz import npz_member_shape

SCHEMA = Schema.from_dict({"features": N_FEATURES, "heads": HEADS})


class SourceContract:
    """Subclass and implement ``make_source``; every source kind must pass these."""

    def make_source(self, tmp_path) -> Source:
        raise NotImplementedError

    def test_counts_are_non_negative_and_nonempty(self, tmp_path):
        counts = self.make_source(tmp_path).counts()
        assert counts and all(isinstance(c, int) and c >= 0 for c in counts)
        assert sum(counts) > 0

    def test_read_returns_valid_batches(self, tmp_path):
        src = self.make_source(tmp_path)
        for item, n in enumerate(src.counts()):
            b = check_batch(src.read(item, 0, n), src.schema, where=src.describe(item),
                            item_start=0, rows=n, has_group=src.has_group)
            assert len(b) == n and b.features.dtype == np.float32
            assert (b.group is not None) == src.has_group

    def test_slices_equal_slices_of_whole_item(self, tmp_path):
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

    def test_deterministic_across_instances(self, tmp_path):
        a, b = self.make_source(tmp_path), self.make_source(tmp_path)
        assert a.counts() == b.counts()
        n = a.counts()[-1]
        np.testing.assert_array_equal(a.read(len(a.counts()) - 1, 0, n).features,
                                      b.read(len(b.counts()) - 1, 0, n).features)

    def test_describe_names_the_item(self, tmp_path):
        src = self.make_source(tmp_path)
        assert "0" in src.describe(0)


class TestSyntheticSource(SourceContract):
    def make_source(self, tmp_path):
        opts = source_class("synthetic").Options.from_dict(
            {"n_samples": 1234, "item_rows": [1, 300], "seed": 3}, Where("t"), SCHEMA)
        return source_class("synthetic")(opts, SCHEMA)

    def test_counts_sum_to_n_samples(self, tmp_path):
        assert sum(self.make_source(tmp_path).counts()) == 1234

    def test_labels_depend_on_features(self, tmp_path):
        schema = Schema.from_dict({"features": 200, "heads": {"a": 4}})
        opts = source_class("synthetic").Options.from_dict({"n_samples": 4000}, Where("t"), schema)
        src = source_class("synthetic")(opts, schema)
        b = src.generate(0, 4000)
        cols, _ = src._columns["heads"]["a"]
        # the mean of an informative feature differs between classes by far more than noise
        x = b.features[:, cols[0]]
        means = [x[b.labels["a"] == k].mean() for k in range(4)]
        assert np.ptp(means) > 0.3 * x.std()
        assert (b.masks["a"][np.arange(4000), b.labels["a"]] == 1).all()


class TestNpzSource(SourceContract):
    def make_source(self, tmp_path):
        paths = write_items(tmp_path / "b", make_items([5, 1, 0, 9], seed=1))
        opts = source_class("npz").Options.from_dict({"paths": paths}, Where("t"), SCHEMA)
        return source_class("npz")(opts, SCHEMA)

    def test_counts_come_from_headers(self, tmp_path):
        assert self.make_source(tmp_path).counts() == [5, 1, 0, 9]
        np.savez_compressed(tmp_path / "c.npz", x=np.zeros((7, 3)))
        assert npz_member_shape(str(tmp_path / "c.npz"), "x") == (7, 3)
        assert npz_member_shape(str(tmp_path / "c.npz"), "y") is None

    def test_no_files_is_a_clear_error(self, tmp_path):
        opts = source_class("npz").Options.from_dict({"paths": str(tmp_path / "none/*.npz")},
                                                     Where("t"), SCHEMA)
        with pytest.raises(SourceError, match="no files match"):
            source_class("npz")(opts, SCHEMA).counts()


def test_registry_lists_kinds():
    assert {"synthetic", "npz"} <= set(registry)
