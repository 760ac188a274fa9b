"""Every source kind passes :class:`chunkstore.testing.SourceContract`; kind-specific checks
follow. (parquet, hdf5, npy and legacy npz: test_file_sources.py.)"""

from __future__ import annotations

import numpy as np
import pytest

from chunkstore.core.schema import Schema, Where
from chunkstore.errors import SourceError
from chunkstore.sources import registry, source_class
from chunkstore.sources.npz import npz_member_shape
from chunkstore.testing import HEADS, N_FEATURES, SourceContract, make_items, write_items

SCHEMA = Schema.from_dict({"features": N_FEATURES, "heads": HEADS})


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

    @pytest.mark.parametrize("save", ["savez", "savez_compressed", "big-endian", "fortran"])
    def test_row_slices_equal_np_load(self, tmp_path, save):
        """The pread path (np.savez members) and the np.load path (anything else) agree on
        every slice, including the slices of an item cut by task edges."""
        item = make_items([23], seed=5)[0]
        if save == "big-endian":
            item = {k: v.astype(v.dtype.newbyteorder(">")) for k, v in item.items()}
        if save == "fortran":
            item["strategic_features"] = np.asfortranarray(item["strategic_features"])
        getattr(np, "savez_compressed" if save == "savez_compressed" else "savez")(
            tmp_path / "a.npz", **item)
        opts = source_class("npz").Options.from_dict({"paths": str(tmp_path / "a.npz")},
                                                     Where("t"), SCHEMA)
        src = source_class("npz")(opts, SCHEMA)
        for a, b in [(0, 23), (0, 7), (7, 16), (16, 23), (5, 5)]:
            got = src.read(0, a, b)
            np.testing.assert_array_equal(got.features, item["strategic_features"][a:b])
            assert got.features.dtype == item["strategic_features"].dtype
            for h in HEADS:
                np.testing.assert_array_equal(got.labels[h], item[f"labels_{h}"][a:b])
                np.testing.assert_array_equal(got.masks[h], item[f"masks_{h}"][a:b])
            np.testing.assert_array_equal(got.group, item["group"][a:b])

    def test_corrupt_or_truncated_member_is_an_error_naming_the_file(self, tmp_path):
        item = make_items([40], seed=2)[0]
        np.savez(tmp_path / "a.npz", **item)
        opts = source_class("npz").Options.from_dict({"paths": str(tmp_path / "a.npz")},
                                                     Where("t"), SCHEMA)
        src = source_class("npz")(opts, SCHEMA)
        assert src.has_group and len(src.read(0, 0, 40)) == 40  # before the damage
        raw = bytearray((tmp_path / "a.npz").read_bytes())
        x = item["strategic_features"]
        at = bytes(raw).index(x[3].tobytes())  # a byte inside the features' data
        raw[at] ^= 0xFF
        (tmp_path / "a.npz").write_bytes(bytes(raw))
        with pytest.raises(SourceError, match=r"a\.npz.*'strategic_features' is corrupt"):
            src.read(0, 0, 40)
        assert len(src.read(0, 0, 3)) == 3  # a partial read is not checked (rows not read)
        (tmp_path / "a.npz").write_bytes(bytes(raw[:at]))  # cut inside the features
        with pytest.raises(SourceError, match=r"a\.npz"):
            src.read(0, 0, 40)


class TestPythonSource(SourceContract):
    """The python source with ``count`` (ordered placement): items are (key, rows) pairs."""

    ITEMS = [(0, 5), (1, 1), (2, 0), (3, 9)]

    def make_source(self, tmp_path):
        opts = source_class("python").Options.from_dict(
            {"items": "producers:items_from_env", "process": "producers:process",
             "count": "producers:rows_of", "group": True}, Where("t"), SCHEMA)
        return source_class("python")(opts.with_callables(items=self.ITEMS), SCHEMA)

    def test_counts_come_from_count(self, tmp_path):
        assert self.make_source(tmp_path).counts() == [5, 1, 0, 9]

    def test_describe_shows_the_item(self, tmp_path):
        assert "(3, 9)" in self.make_source(tmp_path).describe(3)


def test_registry_lists_kinds():
    assert {"synthetic", "npz", "python"} <= set(registry)
