"""parquet, hdf5 and npy sources and legacy pickled npz: contract, round trips, bad input."""

from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zarr

from chunkstore import ingest
from chunkstore.config import Config
from chunkstore.core.schema import Schema, Where
from chunkstore.errors import ConfigError, SourceError
from chunkstore.sources import source_class
from chunkstore.sources.registry import resolved_schema
from chunkstore.testing import (
    HEADS,
    N_FEATURES,
    SourceContract,
    assert_store_equals,
    concat,
    make_items,
    write_items,
)

SCHEMA = Schema.from_dict({"features": N_FEATURES, "heads": HEADS})
NAMES = ["speed", "hp", "x_pos", "y_pos"]


def make_source(kind: str, options: dict, schema: Schema = SCHEMA):
    opts = source_class(kind).Options.from_dict(options, Where("t", "source"), schema)
    return source_class(kind)(opts, schema)


def run_ingest(tmp_path: Path, source: dict, *, features: object = N_FEATURES,
               heads: dict = HEADS) -> Path:
    """Ingest with the source's schema resolution applied (as Config.from_dict will)."""
    store = tmp_path / "store.zarr"
    cfg = Config.from_dict({"store": str(store), "schema": {"features": features, "heads": heads},
                            "source": source, "ingest": {"workers": 1, "chunk_rows": 8}},
                           file="t.yaml")
    cfg = dataclasses.replace(cfg, schema=resolved_schema(cfg.source.options, cfg.schema,
                                                          Where("t.yaml", "source")))
    ingest(cfg, progress=False)
    return store


# ---------------------------------------------------------------------------- parquet

def parquet_table(items: list[dict], *, names=NAMES, scalar_masks: tuple[str, ...] = ()
                  ) -> pa.Table:
    """Items as one table: feature columns, label_<h>, mask_<h> lists (or mask_<h>_<k>), group."""
    cols: dict[str, pa.Array] = {}
    x = concat(items, "strategic_features")
    for j, name in enumerate(names):
        cols[name] = pa.array(x[:, j])
    for h, classes in HEADS.items():
        cols[f"label_{h}"] = pa.array(concat(items, f"labels_{h}"))
        m = concat(items, f"masks_{h}")
        if h in scalar_masks:
            for k in range(classes):
                cols[f"mask_{h}_{k}"] = pa.array(m[:, k])
        else:
            cols[f"mask_{h}"] = pa.FixedSizeListArray.from_arrays(pa.array(m.ravel()), classes)
    cols["episode"] = pa.array(concat(items, "group"))
    return pa.table(cols)


def write_parquet(directory: Path, items: list[dict], files: list[slice], row_group: int,
                  **kw) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for i, sl in enumerate(files):
        pq.write_table(parquet_table(items[sl], **kw), directory / f"part-{i:03d}.parquet",
                       row_group_size=row_group)
    return directory


class TestParquetSource(SourceContract):
    def make_source(self, tmp_path):
        items = make_items([5, 1, 9, 4], seed=1)
        d = write_parquet(tmp_path / "pq", items, [slice(0, 2), slice(2, 4)], row_group=4)
        return make_source("parquet", {"paths": str(d), "group": "episode"})

    def test_items_are_row_groups_counted_from_footers(self, tmp_path):
        src = self.make_source(tmp_path)
        assert src.counts() == [4, 2, 4, 4, 4, 1]  # 6 rows -> 4+2, 13 rows -> 4+4+4+1
        assert "row group 1" in src.describe(1) and "part-000" in src.describe(1)


@pytest.mark.slow
def test_parquet_round_trip_many_files_nulls_and_selectors(tmp_path):
    """Several files and row groups, prefix-selected features with nulls, scalar mask columns."""
    items = make_items([7, 12, 3, 9, 10], seed=2)
    items[1]["strategic_features"][3, 2] = np.nan
    d = tmp_path / "pq"
    d.mkdir()
    names = ["f_speed", "f_hp", "f_x", "f_y"]
    for i, sl in enumerate([slice(0, 2), slice(2, 3), slice(3, 5)]):
        t = parquet_table(items[sl], names=names, scalar_masks=("target",))
        x = t.column("f_hp").to_numpy().copy()
        mask = np.zeros(len(x), dtype=bool)
        mask[::4] = True  # nulls in a feature column -> NaN
        t = t.set_column(1, "f_hp", pa.array(x, mask=mask)).append_column(
            "comment", pa.array(["text"] * len(x)))
        pq.write_table(t, d / f"p{i}.parquet", row_group_size=5)
    src = {"kind": "parquet", "paths": str(d / "*.parquet"), "features": {"prefix": "f_"},
           "masks": {"move": "mask_move", "target": "mask_target_{k}"}, "group": "episode"}
    store = run_ingest(tmp_path, src)
    g = zarr.open_group(str(store), mode="r")
    expected = concat(items, "strategic_features").copy()
    hp = expected[:, 1]
    starts = np.cumsum([0] + [sum(len(i["group"]) for i in items[sl])
                              for sl in (slice(0, 2), slice(2, 3))])
    for s, sl in zip(starts, [slice(0, 2), slice(2, 3), slice(3, 5)], strict=True):
        n = sum(len(i["group"]) for i in items[sl])
        hp[s:s + n][::4] = np.nan
    np.testing.assert_array_equal(g["features"][:], expected)
    assert np.isnan(g["features"][:]).sum() == np.isnan(expected).sum() > 1
    for h in HEADS:
        np.testing.assert_array_equal(g[f"labels/{h}"][:], concat(items, f"labels_{h}"))
        np.testing.assert_array_equal(g[f"masks/{h}"][:], concat(items, f"masks_{h}"))
    np.testing.assert_array_equal(g["meta/group"][:], concat(items, "group"))
    assert g.attrs["chunkstore"]["feature_names"] == names  # names come from the columns


def test_parquet_all_others_and_explicit_schema_names(tmp_path):
    items = make_items([6, 6], seed=3)
    d = write_parquet(tmp_path / "pq", items, [slice(0, 2)], row_group=5)
    # all_others: every column that is no label/mask/group, minus exclude
    src = make_source("parquet", {"paths": str(d), "features": "all_others",
                                  "exclude": ["episode"]})
    assert src.columns.features == tuple(NAMES)
    # schema names select the columns when there is no features key; order is the schema's
    schema = Schema.from_dict({"features": {"names": ["y_pos", "speed", "hp", "x_pos"]},
                               "heads": HEADS})
    src = make_source("parquet", {"paths": str(d), "group": "episode"}, schema)
    b = src.read(0, 0, 5)
    np.testing.assert_array_equal(b.features, items[0]["strategic_features"][:5][:, [3, 0, 1, 2]])
    # a regex, and resolve_schema takes names from the columns
    opts = source_class("parquet").Options.from_dict(
        {"paths": str(d), "features": {"regex": r"(speed|hp|._pos)"}}, Where("t"), SCHEMA)
    assert opts.resolve_schema(SCHEMA, Where("t")).feature_names == tuple(NAMES)


def test_parquet_slices_of_a_large_row_group_cross_read_batches(tmp_path):
    items = make_items([20000], seed=12)
    d = write_parquet(tmp_path / "pq", items, [slice(0, 1)], row_group=20000)
    src = make_source("parquet", {"paths": str(d), "group": "episode"})
    assert src.counts() == [20000]
    for start, stop in [(5000, 17000), (0, 9000), (16384, 20000), (7, 7)]:
        b = src.read(0, start, stop)
        np.testing.assert_array_equal(b.features, items[0]["strategic_features"][start:stop])
        np.testing.assert_array_equal(b.masks["move"], items[0]["masks_move"][start:stop])
        np.testing.assert_array_equal(b.group, items[0]["group"][start:stop])


def test_parquet_variable_lists_and_int_features(tmp_path):
    """A plain list mask column of the right length and integer features with nulls work."""
    t = pa.table({"a": pa.array([1, None, 3], pa.int32()), "b": pa.array([0.5, 1.5, None]),
                  "c": pa.array([True, False, True]), "d": pa.array([1, 2, 3], pa.int64()),
                  "label_move": pa.array([0, 4, 2]), "label_target": pa.array([1, 1, 2]),
                  "mask_move": pa.array([[1, 0, 0, 0, 1]] * 3, pa.list_(pa.int8())),
                  "mask_target": pa.array([[1, 1, 1]] * 3, pa.list_(pa.int8()))})
    pq.write_table(t, tmp_path / "t.parquet")
    b = make_source("parquet", {"paths": str(tmp_path / "t.parquet")}).read(0, 0, 3)
    np.testing.assert_array_equal(b.features, [[1, 0.5, 1, 1], [np.nan, 1.5, 0, 2],
                                               [3, np.nan, 1, 3]])
    assert b.masks["move"].shape == (3, 5)


def bad_parquet(tmp_path: Path, change, name: str = "bad.parquet", **kw) -> str:
    t = parquet_table(make_items([6], seed=4))
    t = change(t)
    pq.write_table(t, tmp_path / name, row_group_size=4, **kw)
    return str(tmp_path / name)


@pytest.mark.parametrize("change, options, match", [
    (lambda t: t.drop_columns(["label_move"]), {}, "no column 'label_move'.*labels of head"),
    (lambda t: t, {"features": ["speed", "nope", "hp", "x_pos"]}, "no column 'nope'"),
    (lambda t: t.set_column(t.schema.get_field_index("mask_move"), "mask_move",
                            pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(24, np.int8)), 4)),
     {}, "list of width 4; expected width 5"),
    (lambda t: t, {"features": {"prefix": "s"}}, "selects 1 columns.*schema has 4 features"),
    (lambda t: t.append_column("name", pa.array(["a"] * 6)), {"exclude": ["episode"]},
     "feature column 'name' has type string"),
    (lambda t: t, {"masks": {"move": "label_move", "target": "mask_target"}},
     "mask column 'label_move' .* has type int64; expected a list column of width 5"),
])
def test_parquet_bad_columns_fail_at_count_time(tmp_path, change, options, match):
    path = bad_parquet(tmp_path, change)
    with pytest.raises(SourceError, match=match):
        make_source("parquet", {"paths": path, **options}).counts()


def test_parquet_label_nulls_fail_before_writing_and_at_read(tmp_path):
    def with_null(t):
        y = t.column("label_target").to_numpy()
        return t.set_column(t.schema.get_field_index("label_target"), "label_target",
                            pa.array(y, mask=np.arange(6) == 5))
    path = bad_parquet(tmp_path, with_null)
    src = make_source("parquet", {"paths": path, "group": "episode"})
    with pytest.raises(SourceError, match="row group 1: column 'label_target' has 1 null"):
        src.counts()
    # without footer statistics the read still finds the null and names the row
    src = make_source("parquet", {"paths": bad_parquet(tmp_path, with_null, "nostats.parquet",
                                                       write_statistics=False),
                                  "group": "episode"})
    assert src.counts() == [4, 2]
    with pytest.raises(SourceError, match="row 1 of the item: the label of head 'target'.* null"):
        src.read(1, 0, 2)
    store = tmp_path / "s.zarr"
    with pytest.raises(SourceError, match="null"):
        run_ingest(tmp_path, {"kind": "parquet", "paths": path})
    assert not store.exists()


def test_parquet_variable_list_of_wrong_length_names_the_row(tmp_path):
    t = pa.table({**{n: pa.array([0.0, 1.0]) for n in NAMES},
                  "label_move": pa.array([0, 1]), "label_target": pa.array([0, 1]),
                  "mask_move": pa.array([[1] * 5, [1] * 4], pa.list_(pa.int8())),
                  "mask_target": pa.array([[1] * 3] * 2, pa.list_(pa.int8()))})
    pq.write_table(t, tmp_path / "t.parquet")
    with pytest.raises(SourceError, match="row 1 of the item: the mask of head 'move' .* has 4 "
                                          "values; expected 5"):
        make_source("parquet", {"paths": str(tmp_path / "t.parquet")}).read(0, 0, 2)


def test_parquet_files_with_other_columns_are_refused(tmp_path):
    items = make_items([4, 4], seed=5)
    d = write_parquet(tmp_path / "pq", items, [slice(0, 1)], row_group=4)
    t = parquet_table(items[1:]).rename_columns(
        ["speed", "hp", "x_pos", "z_pos", *parquet_table(items[1:]).column_names[4:]])
    pq.write_table(t, d / "part-999.parquet")
    with pytest.raises(SourceError, match="no column 'y_pos'|other columns"):
        make_source("parquet", {"paths": str(d), "features": NAMES}).counts()


def test_parquet_config_errors():
    with pytest.raises(ConfigError, match="features.*expected a list of column names"):
        make_source("parquet", {"paths": "x", "features": {"suffix": "a"}})
    with pytest.raises(ConfigError, match="exclude.*only used with features: all_others"):
        make_source("parquet", {"paths": "x", "features": ["a"], "exclude": ["b"]})
    with pytest.raises(ConfigError, match="masks.*missing \\['target'\\]"):
        make_source("parquet", {"paths": "x", "masks": {"move": "m"}})


@pytest.mark.slow
def test_missing_extra_names_the_pip_extra():
    code = ("import sys; sys.modules['pyarrow'] = None\n"
            "from chunkstore.sources import source_class\n"
            "from chunkstore.errors import ConfigError\n"
            "try:\n    source_class('parquet')\n"
            "except ConfigError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'chunkstore[parquet]'" in out.stdout


# ---------------------------------------------------------------------------- hdf5

def write_h5(path: Path, items: list[dict], *, chunks: int | None = 3, names=None) -> Path:
    with h5py.File(path, "w") as f:
        kw = {"compression": "gzip", "shuffle": True} if chunks else {}
        def put(name, a):
            f.create_dataset(name, data=a, chunks=(chunks, *a.shape[1:]) if chunks else None,
                             **kw)
        put("features", concat(items, "strategic_features"))
        for h in HEADS:
            put(f"labels/{h}", concat(items, f"labels_{h}"))
            put(f"masks/{h}", concat(items, f"masks_{h}"))
        put("meta/group", concat(items, "group"))
        if names:
            f["features"].attrs["feature_names"] = names
    return path


class TestHdf5Source(SourceContract):
    def make_source(self, tmp_path):
        items = make_items([5, 1, 9, 4], seed=1)
        write_h5(tmp_path / "a.h5", items[:2])
        write_h5(tmp_path / "b.h5", items[2:], chunks=None)
        return make_source("hdf5", {"paths": str(tmp_path / "*.h5")})

    def test_counts_from_shapes(self, tmp_path):
        assert self.make_source(tmp_path).counts() == [6, 13]


@pytest.mark.slow
def test_hdf5_round_trip_with_nan_and_names(tmp_path):
    items = make_items([10, 17, 5], seed=6)
    items[1]["strategic_features"][4] = np.nan
    write_h5(tmp_path / "a.h5", items[:1], names=NAMES)
    write_h5(tmp_path / "b.h5", items[1:], chunks=4, names=NAMES)
    store = run_ingest(tmp_path, {"kind": "hdf5", "paths": [str(tmp_path / "a.h5"),
                                                            str(tmp_path / "b.h5")]})
    assert_store_equals(store, items)
    assert zarr.open_group(str(store)).attrs["chunkstore"]["feature_names"] == NAMES


def test_hdf5_custom_paths_and_bad_input(tmp_path):
    items = make_items([8], seed=7)
    with h5py.File(tmp_path / "c.h5", "w") as f:
        f["X"] = items[0]["strategic_features"]
        for h in HEADS:
            f[f"{h}/y"] = items[0][f"labels_{h}"]
            f[f"{h}/mask"] = items[0][f"masks_{h}"]
        f["short/y"] = items[0]["labels_move"][:5]
    ok = {"paths": str(tmp_path / "c.h5"), "features": "X", "labels": "{head}/y",
          "masks": "{head}/mask", "group": None}
    src = make_source("hdf5", ok)
    assert src.counts() == [8] and not src.has_group
    np.testing.assert_array_equal(src.read(0, 2, 6).masks["target"],
                                  items[0]["masks_target"][2:6])
    with pytest.raises(SourceError, match="labels/move has shape \\(5,\\) but the features have "
                                          "8 rows.*mismatched row counts"):
        make_source("hdf5", {**ok, "labels": {"move": "short/y", "target": "target/y"}}).counts()
    with pytest.raises(SourceError, match="no dataset 'features' .*the file has datasets"):
        make_source("hdf5", {**ok, "features": "features"}).counts()
    with pytest.raises(SourceError, match="not found"):
        make_source("hdf5", {**ok, "paths": str(tmp_path / "none.h5")}).counts()


def test_hdf5_names_must_agree_with_the_schema(tmp_path):
    write_h5(tmp_path / "a.h5", make_items([3]), names=NAMES)
    opts = source_class("hdf5").Options.from_dict({"paths": str(tmp_path / "a.h5")},
                                                  Where("t"), SCHEMA)
    other = Schema.from_dict({"features": {"names": ["a", "b", "c", "d"]}, "heads": HEADS})
    with pytest.raises(SourceError, match="differs from schema.features.names"):
        opts.resolve_schema(other, Where("t"))


# ---------------------------------------------------------------------------- npy

def write_npy_files(d: Path, items: list[dict], *, npz_masks: bool = False) -> dict:
    d.mkdir(parents=True, exist_ok=True)
    np.save(d / "X.npy", concat(items, "strategic_features"))
    for h in HEADS:
        np.save(d / f"y_{h}.npy", concat(items, f"labels_{h}"))
        np.save(d / f"m_{h}.npy", concat(items, f"masks_{h}"))
    np.save(d / "g.npy", concat(items, "group"))
    np.savez(d / "masks.npz", **{h: concat(items, f"masks_{h}") for h in HEADS})
    return {"features": str(d / "X.npy"), "labels": str(d / "y_{head}.npy"),
            "masks": str(d / "masks.npz") if npz_masks else str(d / "m_{head}.npy"),
            "group": str(d / "g.npy")}


def write_flat(d: Path, items: list[dict], *, entities=True, names=NAMES) -> Path:
    """Every array in one flat binary file, described by metadata.json."""
    d.mkdir(parents=True, exist_ok=True)
    arrays = {"features": concat(items, "strategic_features")}
    for h in HEADS:
        arrays[f"labels/{h}"] = concat(items, f"labels_{h}").astype(np.int16)
        arrays[f"masks/{h}"] = concat(items, f"masks_{h}")
    meta: dict = {"file": "data.bin", "arrays": {}}
    offset = 0
    with open(d / "data.bin", "wb") as fh:
        for name, a in arrays.items():
            fh.write(a.tobytes())
            meta["arrays"][name] = {"dtype": a.dtype.str, "shape": list(a.shape),
                                    "offset": offset}
            offset += a.nbytes
    if names:
        meta["feature_names"] = names
    if entities:
        sizes = [len(i["group"]) for i in items]
        ends = np.cumsum(sizes).tolist()
        meta["entities"] = [{"id": int(i["group"][0]), "start": e - n, "stop": e}
                            for i, n, e in zip(items, sizes, ends, strict=True)]
    (d / "metadata.json").write_text(json.dumps(meta))
    return d / "metadata.json"


class TestNpySource(SourceContract):
    def make_source(self, tmp_path):
        opts = write_npy_files(tmp_path / "n", make_items([5, 1, 9, 4], seed=1))
        return make_source("npy", {**opts, "item_rows": 6})

    def test_items_are_row_blocks(self, tmp_path):
        assert self.make_source(tmp_path).counts() == [6, 6, 6, 1]


class TestNpyFlatSource(SourceContract):
    def make_source(self, tmp_path):
        meta = write_flat(tmp_path / "flat", make_items([5, 1, 9, 4], seed=1))
        return make_source("npy", {"metadata": str(meta)})

    def test_items_are_entities_and_groups_their_ids(self, tmp_path):
        src = self.make_source(tmp_path)
        assert src.counts() == [5, 1, 9, 4]
        assert src.read(2, 0, 9).group.tolist() == [1002] * 9


@pytest.mark.slow
def test_npy_round_trips_both_layouts(tmp_path):
    items = make_items([40, 3, 25], seed=8)
    items[0]["strategic_features"][7, 1] = np.nan
    store = run_ingest(tmp_path / "a", {"kind": "npy", "item_rows": 16,
                                        **write_npy_files(tmp_path / "n", items, npz_masks=True)})
    assert_store_equals(store, items)
    store = run_ingest(tmp_path / "b", {"kind": "npy",
                                        "metadata": str(write_flat(tmp_path / "f", items))})
    assert_store_equals(store, items)
    assert zarr.open_group(str(store)).attrs["chunkstore"]["feature_names"] == NAMES


def test_npy_bad_input(tmp_path):
    items = make_items([6], seed=9)
    opts = write_npy_files(tmp_path / "n", items)
    np.save(tmp_path / "n" / "short.npy", items[0]["labels_move"][:4])
    with pytest.raises(SourceError, match="labels/move .*short.npy.* has shape \\(4,\\) but the "
                                          "features have 6 rows \\(mismatched row counts\\)"):
        make_source("npy", {**opts, "labels": {"move": str(tmp_path / "n" / "short.npy"),
                                               "target": str(tmp_path / "n" / "y_target.npy")}}
                    ).counts()
    with pytest.raises(SourceError, match="masks/move .* have shape \\(6, 3\\); expected"):
        make_source("npy", {**opts, "masks": {"move": str(tmp_path / "n" / "m_target.npy"),
                                              "target": str(tmp_path / "n" / "m_target.npy")}}
                    ).counts()
    np.savez_compressed(tmp_path / "n" / "c.npz", move=items[0]["masks_move"],
                        target=items[0]["masks_target"])
    with pytest.raises(SourceError, match="compressed .*cannot be memory-mapped"):
        make_source("npy", {**opts, "masks": str(tmp_path / "n" / "c.npz")}).counts()
    meta = write_flat(tmp_path / "f", items)
    m = json.loads(meta.read_text())
    m["arrays"]["features"]["shape"] = [600, 4]
    meta.write_text(json.dumps(m))
    with pytest.raises(SourceError, match="bytes; dtype float32 shape \\[600, 4\\] at offset 0 "
                                          "needs 9,600"):
        make_source("npy", {"metadata": str(meta)}).counts()
    m["arrays"]["features"]["shape"] = [6, 4]
    m["entities"] = [[0, 4], [3, 6]]
    meta.write_text(json.dumps(m))
    with pytest.raises(SourceError, match="entities 0 and 1 overlap"):
        make_source("npy", {"metadata": str(meta)}).counts()
    with pytest.raises(ConfigError, match="either metadata .* or features"):
        make_source("npy", {"metadata": str(meta), "features": "x.npy"})


# ---------------------------------------------------------------------------- legacy npz

def write_legacy(d: Path, items: list[dict], shape: str) -> str:
    """Pickled batch files: a list of sample dicts (1-D or wrapped 0-d) or object columns."""
    d.mkdir(parents=True, exist_ok=True)
    for k, item in enumerate(items):
        n = len(item["group"])
        samples = [{"strategic_features": item["strategic_features"][i],
                    "labels": {h: int(item[f"labels_{h}"][i]) for h in HEADS},
                    "masks_move": item["masks_move"][i], "masks": {"target":
                                                                   item["masks_target"][i]},
                    "group": int(item["group"][i])} for i in range(n)]
        if shape == "samples":
            arr = np.empty(n, dtype=object)
            arr[:] = samples
            np.savez(d / f"b{k}.npz", samples=arr)
        elif shape == "wrapped":
            arr = np.empty((), dtype=object)
            arr[()] = samples
            np.savez(d / f"b{k}.npz", arr)
        else:
            cols = {key: np.empty(n, dtype=object) for key in item}
            for key, col in cols.items():
                col[:] = list(item[key])
            np.savez(d / f"b{k}.npz", **cols)
    return str(d / "*.npz")


class TestLegacyNpzSource(SourceContract):
    def make_source(self, tmp_path):
        paths = write_legacy(tmp_path / "l", make_items([5, 1, 9, 4], seed=1), "samples")
        return make_source("npz", {"paths": paths, "allow_pickle": True})


@pytest.mark.parametrize("shape", ["samples", "wrapped", "columns"])
def test_legacy_pickled_npz_round_trip_with_opt_in(tmp_path, shape, caplog):
    items = make_items([9, 4, 11], seed=10)
    paths = write_legacy(tmp_path / "l", items, shape)
    with caplog.at_level(logging.WARNING, logger="chunkstore.sources.npz"):
        store = run_ingest(tmp_path, {"kind": "npz", "paths": paths, "allow_pickle": True})
    assert "allow_pickle is true" in caplog.text
    assert_store_equals(store, items)


def test_pickled_npz_without_opt_in_is_refused_before_writing(tmp_path):
    paths = write_legacy(tmp_path / "l", make_items([4, 4]), "samples")
    with pytest.raises(SourceError, match="pickled .*allow_pickle: true"):
        run_ingest(tmp_path, {"kind": "npz", "paths": paths})
    assert not (tmp_path / "store.zarr").exists()
    paths = write_legacy(tmp_path / "c", make_items([4]), "columns")
    with pytest.raises(SourceError, match="are pickled \\(object\\) arrays"):
        make_source("npz", {"paths": paths}).counts()
    with pytest.raises(ConfigError, match="samples_key.*only used with allow_pickle"):
        make_source("npz", {"paths": paths, "samples_key": "x"})


def test_plain_npz_config_hash_is_unchanged_by_the_new_keys(tmp_path):
    paths = write_items(tmp_path / "b", make_items([3]))
    opts = source_class("npz").Options.from_dict({"paths": paths}, Where("t"), SCHEMA)
    assert set(opts.to_dict()) == {"paths", "features_key", "label_key", "mask_key", "group_key"}
