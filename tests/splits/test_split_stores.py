"""Splits over real stores: every method, determinism, provenance keys, views, CLI, config."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr

import chunkstore
from chunkstore import ConfigError, ingest
from chunkstore.cli import main
from chunkstore.core.splitspec import SplitSpec, kfold_fractions
from chunkstore.errors import ReadError, SplitError
from chunkstore.splits.graphs import split_codes
from chunkstore.splits.write import write_split
from chunkstore.testing import HEADS, concat, make_items, write_config, write_items

SIZES = [int(x) for x in np.random.default_rng(5).integers(5, 60, size=90)]
FR = (("train", 0.7), ("val", 0.2), ("test", 0.1))
METHODS = {
    "random": SplitSpec(method="random", fractions=FR),
    "group": SplitSpec(method="group", fractions=FR),
    "stratified": SplitSpec(method="stratified", fractions=FR, by="move"),
    "stratified_group": SplitSpec(method="stratified-group", fractions=FR, by="move"),
    "kfold": SplitSpec(method="kfold", k=4, fractions=kfold_fractions(4)),
    "kfold_group": SplitSpec(method="kfold", k=4, fractions=kfold_fractions(4), group=True),
    "kfold_strat": SplitSpec(method="kfold", k=5, fractions=kfold_fractions(5), by="move"),
    "kfold_strat_group": SplitSpec(method="kfold", k=3, fractions=kfold_fractions(3), by="move",
                                   group=True),
    "ordered": SplitSpec(method="ordered", fractions=FR),
    "ordered_by_group": SplitSpec(method="ordered", fractions=FR, by="meta/group"),
}
DECLARED = {"default": METHODS["stratified_group"].to_dict(),
            **{name: spec.to_dict() for name, spec in METHODS.items()}}


def config(path: Path, *, store: Path, paths: str, splits: dict | None = None,
           **kw: object) -> Path:
    """helpers.write_config, plus ``splits:`` in the given order (part order = code order)."""
    write_config(path, store=store, paths=paths, **kw)
    if splits:
        with path.open("a") as fh:
            fh.write(yaml.safe_dump({"splits": splits}, sort_keys=False))
    return path


def build(tmp: Path, items: list[dict[str, np.ndarray]], *, name: str = "s", chunk_rows: int = 32,
          workers: int = 1, splits: dict | None = None, **kw: object) -> str:
    store = tmp / f"{name}.zarr"
    cfg = config(tmp / f"{name}.yaml", store=store, paths=write_items(tmp / name, items),
                 ingest={"chunk_rows": chunk_rows, "workers": workers}, splits=splits, **kw)
    ingest(cfg, progress=False)
    return str(store)


def copy(store: str, to: Path) -> str:
    shutil.copytree(store, to, ignore=shutil.ignore_patterns("lock"))
    return str(to)


def codes(store: str, name: str = "default") -> np.ndarray:
    return zarr.open_group(store, mode="r")[f"splits/{name}"][:]


def snapshot(store: str) -> dict[str, bytes]:
    root = Path(store)
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and "_chunkstore" not in p.parts}


@pytest.fixture(scope="module")
def items() -> list[dict[str, np.ndarray]]:
    return make_items(SIZES, seed=3)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory, items) -> str:
    """A small store with one random split, for tests that must leave it unchanged."""
    return build(tmp_path_factory.mktemp("small"), items[:20],
                 splits={"default": {"method": "random"}})


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, items) -> str:
    """One store with every method declared in its config (written at the end of ingest)."""
    return build(tmp_path_factory.mktemp("splits"), items, splits=DECLARED)


# ------------------------------------------------------------------- partition, balance --

@pytest.mark.parametrize("name", list(METHODS))
def test_every_row_in_one_part_and_sizes_meet_fractions(store, items, name):
    spec, c = METHODS[name], codes(store, name)
    groups, n = concat(items, "group"), sum(SIZES)
    assert c.shape == (n,) and c.dtype == np.int8
    assert ((c >= 0) & (c < len(spec.names))).all()  # a partition: no -1, no stray code
    rows = np.bincount(c, minlength=len(spec.names))
    target = np.array([f for _, f in spec.fractions]) * n
    if spec.method in ("group", "stratified-group") or spec.group or spec.by == "meta/group":
        assert (np.abs(rows - target) <= max(SIZES)).all(), rows
        parts_per_group = {g: np.unique(c[groups == g]).size for g in np.unique(groups)}
        assert set(parts_per_group.values()) == {1}  # zero group overlap between parts
    elif spec.method == "random" or (spec.method == "kfold" and spec.by is None):
        f = target / n
        assert (np.abs(rows - target) <= 4 * np.sqrt(n * f * (1 - f))).all(), rows
    else:  # stratified, ordered: exact up to a row or two per class
        assert (np.abs(rows - target) <= 2 * HEADS["move"]).all(), rows
    attrs = zarr.open_group(store, mode="r")[f"splits/{name}"].attrs
    assert attrs["names"] == list(spec.names) and attrs["method"] == spec.method
    assert attrs["rows"] == dict(zip(spec.names, rows.tolist(), strict=True))
    assert attrs["seed"] == 0 and attrs["by"] == spec.by and attrs["complete"] is True
    assert attrs["fractions"] == dict(spec.fractions)


@pytest.mark.parametrize("name", ["stratified", "stratified_group", "kfold_strat",
                                  "kfold_strat_group"])
def test_stratified_class_proportions_within_3_standard_errors(store, items, name):
    c, labels = codes(store, name), concat(items, "labels_move")
    overall = np.bincount(labels, minlength=5) / labels.size
    for s in range(len(METHODS[name].names)):
        part = labels[c == s]
        share = np.bincount(part, minlength=5) / part.size
        se = np.sqrt(overall * (1 - overall) / part.size)
        assert (np.abs(share - overall) <= 3 * se).all(), (s, share, overall)


def test_summary_counts_groups_and_class_balance(store, items):
    a = zarr.open_group(store, mode="r")["splits/random"].attrs
    assert a["groups_total"] == len(SIZES) and a["groups_shared"] > 0  # random leaks groups
    assert a["class_counts"]["head"] == "move"  # no `by`: the first head is reported
    total = np.sum([a["class_counts"][n] for n in a["names"]], axis=0)
    np.testing.assert_array_equal(total, np.bincount(concat(items, "labels_move"), minlength=5))
    g = zarr.open_group(store, mode="r")["splits/stratified_group"].attrs
    assert g["groups_shared"] == 0 and sum(g["groups"].values()) == len(SIZES)
    assert g["key"] == "meta/group"


def test_split_codes_is_lazy_and_equals_the_written_array(store):
    ds = chunkstore.open(store)
    for name, spec in METHODS.items():
        lazy = split_codes(ds, spec)
        assert hasattr(lazy, "dask") and all(b % ds.chunk_rows == 0 for b in lazy.chunks[0][:-1])
        np.testing.assert_array_equal(lazy.compute(), codes(store, name))


# --------------------------------------------------------------------------- determinism --

@pytest.mark.slow
def test_same_codes_with_2_workers_at_ingest(tmp_path, items, store):
    some = ("default", "random", "kfold_group")
    two = build(tmp_path, items, name="w2", workers=2, splits={k: DECLARED[k] for k in some})
    for name in some:
        np.testing.assert_array_equal(codes(two, name), codes(store, name))
        files = {k: v for k, v in snapshot(store).items() if k.startswith(f"splits/{name}/")
                 and not k.endswith("zarr.json")}  # zarr.json holds the creation time
        assert files and files == {k: v for k, v in snapshot(two).items() if k in files}


@pytest.mark.slow
def test_same_codes_with_other_chunk_rows_and_many_dask_blocks(tmp_path, items, store,
                                                               monkeypatch):
    import chunkstore.splits.graphs as sd

    other_chunks = build(tmp_path, items, name="c40", chunk_rows=40)
    monkeypatch.setattr(sd, "BLOCK_ROWS", 48)  # 68 blocks: reductions of several tree levels
    ds = chunkstore.open(other_chunks)
    for name, spec in METHODS.items():
        lazy = split_codes(ds, spec)
        assert len(lazy.chunks[0]) > 30
        np.testing.assert_array_equal(lazy.compute(), codes(store, name), err_msg=name)
    write_split(other_chunks, SplitSpec(**{**METHODS["stratified_group"].__dict__}))
    np.testing.assert_array_equal(codes(other_chunks), codes(store))


@pytest.mark.slow
def test_same_seed_same_codes_different_seed_different_codes(store):
    ds = chunkstore.open(store)
    for name, spec in METHODS.items():
        np.testing.assert_array_equal(split_codes(ds, spec).compute(), codes(store, name))
        if spec.method != "ordered":  # ordered has no randomness
            other = split_codes(ds, SplitSpec(**{**spec.__dict__, "seed": 1})).compute()
            assert (other != codes(store, name)).any(), name


@pytest.mark.slow
def test_adding_rows_keeps_existing_random_assignments(tmp_path, items, store):
    first = build(tmp_path, items[:60], name="a",
                  splits={k: DECLARED[k] for k in ("random", "kfold", "group")})
    more = store  # the same items plus 30 more
    n = sum(SIZES[:60])
    for name in ("random", "kfold"):  # keyed by sample id alone: nothing moves
        np.testing.assert_array_equal(codes(more, name)[:n], codes(first, name))
    # group: only groups near a cut can move (the cuts follow the new totals)
    g = concat(items, "group")[:n]
    old, new = codes(first, "group"), codes(more, "group")[:n]
    moved = np.unique(g[old != new]).size
    assert moved <= 0.25 * 60, moved


def add_source(store: str, source: np.ndarray, perm: np.ndarray | None = None) -> None:
    """Write ``meta/source`` (as streaming ingest does) and optionally permute rows."""
    g = zarr.open_group(store, mode="r+")
    r = g["features"].chunks[0]
    if perm is not None:
        for path in ["features", "meta/group", *(f"{k}/{h}" for k in ("labels", "masks")
                                                 for h in HEADS)]:
            g[path][...] = g[path][...][perm]
        source = source[perm]
    g.create_array("meta/source", shape=source.shape, chunks=(r, 2), dtype="int64",
                   fill_value=-1)[...] = source


@pytest.mark.slow
def test_meta_source_keys_make_codes_follow_samples_not_rows(tmp_path, store):
    a, b = copy(store, tmp_path / "a.zarr"), copy(store, tmp_path / "b.zarr")
    source = np.concatenate([np.stack([np.full(n, k), np.arange(n)], axis=1)
                             for k, n in enumerate(SIZES)])
    perm = np.random.default_rng(0).permutation(source.shape[0])
    add_source(a, source)
    add_source(b, source, perm)  # the same samples in another order, as streaming may give
    for name in ("random", "stratified", "stratified_group", "ordered"):
        spec = SplitSpec(**{**METHODS[name].__dict__, "name": name})
        write_split(a, spec, overwrite=True)
        write_split(b, spec, overwrite=True)
        np.testing.assert_array_equal(codes(b, name), codes(a, name)[perm], err_msg=name)
    assert zarr.open_group(a, mode="r")["splits/random"].attrs["key"] == "meta/source"
    # keyed by source, not by row: differs from the row-keyed assignment of the same rows
    assert (codes(store, "random") != codes(a, "random")).any()


# --------------------------------------------------------------------------------- views --

@pytest.mark.slow
def test_views_are_the_arrays_at_the_indices(store, items):
    ds = chunkstore.open(store)
    c = codes(store)
    total = 0
    for code, part in enumerate(["train", "val", "test"]):
        v = ds.split(part)  # splits/default (declared as stratified-group above)
        idx = np.flatnonzero(c == code)
        np.testing.assert_array_equal(v.indices, idx)
        assert len(v) == idx.size and v.indices is v.indices  # cached
        x = concat(items, "strategic_features")
        np.testing.assert_array_equal(v.features.compute(), x[idx])
        for h in HEADS:
            for kind in ("labels", "masks"):
                got = getattr(v, kind)[h].compute()
                np.testing.assert_array_equal(got, concat(items, f"{kind}_{h}")[idx])
        np.testing.assert_array_equal(v.meta["group"].compute(), concat(items, "group")[idx])
        total += len(v)
    assert total == len(ds)
    fold = ds.split("kfold_group/fold2")
    assert fold.array == "kfold_group" and fold.scope == "kfold_group/fold2"
    np.testing.assert_array_equal(fold.indices, np.flatnonzero(codes(store, "kfold_group") == 2))
    from chunkstore.splits.views import split_view

    assert split_view(ds, "fold2", splits="kfold_group").indices.tolist() == fold.indices.tolist()
    assert "'train' of splits/default" in repr(ds.split("train"))


def test_view_stats_delegate_to_the_split_scope(store):
    ds = chunkstore.open(store)
    with pytest.raises(ReadError, match="'val'"):  # not computed yet: the stats module says so
        ds.split("val").stats()


def test_view_errors_name_what_exists(store):
    ds = chunkstore.open(store)
    with pytest.raises(SplitError, match=r"split 'dev' is not in 'splits/default', whose "
                                         r"names are \['train', 'val', 'test'\]"):
        ds.split("dev")
    with pytest.raises(SplitError, match="no split array 'splits/nope'"):
        ds.split("nope/train")


# ------------------------------------------------------------------ CLI and bad input --

def test_cli_writes_and_prints_sizes_groups_and_balance(tmp_path, store, capsys):
    s = copy(store, tmp_path / "s.zarr")
    rc = main(["split", s, "--method", "stratified-group", "--by", "target", "--fractions",
               "train=0.8,val=0.1,test=0.1", "--seed", "3", "--split-set", "sg"])
    out = capsys.readouterr().out
    assert rc == 0 and "splits/sg" in out and "class balance of head 'target'" in out
    rows = np.bincount(codes(s, "sg"), minlength=3)
    for part, n in zip(["train", "val", "test"], rows, strict=True):
        assert f"{part}" in out and f"{n:,}" in out
    assert main(["split", s, "--method", "kfold", "--k", "5", "--group", "--split-set", "cv"]) == 0
    assert np.unique(codes(s, "cv")).tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("args, message", [
    (["--fractions", "train=0.8,val=0.3"], "fractions must sum to 1"),
    (["--fractions", "train=1.2,val=-0.2"], "fractions must be >= 0"),
    (["--fractions", "train"], "NAME=FRACTION"),
    (["--method", "stratified", "--by", "colour"], "unknown head 'colour'"),
    (["--method", "stratified"], "needs 'by'"),
    (["--method", "kfold", "--k", "1"], "kfold needs 2 <= k"),
    (["--method", "kfold"], "kfold needs 2 <= k"),
    (["--method", "kfold", "--k", "3", "--fractions", "a=1"], "not used with --method kfold"),
    (["--method", "ordered", "--by", "meta/time"], "order key 'meta/time' is not"),
    (["--split-set", "default"], "already exists"),
])
def test_cli_bad_input_is_a_clear_error_and_the_store_is_unchanged(small, capsys, args,
                                                                    message):
    s, before = small, snapshot(small)
    assert main(["split", s, *args]) == 1
    assert message in capsys.readouterr().err
    assert snapshot(s) == before


def test_grouped_split_needs_meta_group(tmp_path, items):
    s = build(tmp_path, items[:10], name="nog",
              source={"kind": "npz", "paths": str(tmp_path / "nog" / "*.npz"),
                      "group_key": None})
    before = snapshot(s)
    for spec in (SplitSpec(method="group"), SplitSpec(method="kfold", k=3, group=True,
                                                      fractions=kfold_fractions(3))):
        with pytest.raises(SplitError, match="needs meta/group"):
            write_split(s, spec)
    assert snapshot(s) == before
    with pytest.raises(SplitError, match="has no split array 'splits/default' \\(it has none\\)"):
        chunkstore.open(s).split("train")
    # declared in the config: refused before ingest writes anything
    cfg = config(tmp_path / "c.yaml", store=tmp_path / "new.zarr",
                       paths=str(tmp_path / "nog" / "*.npz"),
                       source={"kind": "npz", "paths": str(tmp_path / "nog" / "*.npz"),
                               "group_key": None},
                       splits={"default": {"method": "group"}})
    with pytest.raises(ConfigError, match="key 'splits.default.method'.*needs meta/group"):
        ingest(cfg, progress=False)
    assert not (tmp_path / "new.zarr").exists()


def test_incomplete_store_is_refused(tmp_path, small):
    s = copy(small, tmp_path / "s.zarr")
    from chunkstore.store.layout import update_attrs

    update_attrs(s, status="incomplete")
    with pytest.raises(SplitError, match="incomplete"):
        write_split(s, SplitSpec())


# -------------------------------------------------------------------- declared in config --

@pytest.mark.slow
def test_config_splits_rerun_writes_new_ones_and_refuses_changed_ones(tmp_path, items):
    base = {"default": {"method": "group", "fractions": {"train": 0.9, "test": 0.1}}}
    s = build(tmp_path, items[:30], splits=base)
    before = snapshot(s)
    cfg = tmp_path / "s.yaml"
    # a newly declared split on a complete store: written, nothing else touched
    config(cfg, store=Path(s), paths=str(tmp_path / "s" / "*.npz"), ingest={"chunk_rows": 32},
           splits={**base, "cv": {"method": "kfold", "k": 3}})
    ingest(cfg, progress=False)
    assert np.unique(codes(s, "cv")).tolist() == [0, 1, 2]
    after = snapshot(s)
    assert {k: v for k, v in after.items() if not k.startswith("splits/cv")} == before
    # a changed declaration: refused without --overwrite, rewritten with it
    changed = {"default": {**base["default"], "seed": 7}}
    config(cfg, store=Path(s), paths=str(tmp_path / "s" / "*.npz"), ingest={"chunk_rows": 32},
           splits=changed)
    with pytest.raises(SplitError, match="was written with .*chunkstore split .* --split-set "
                                         "default --method group --fractions train=0.9,test=0.1 "
                                         "--seed 7 --overwrite"):
        ingest(cfg, progress=False)
    assert snapshot(s) == after
    ingest(cfg, progress=False, overwrite=True)
    assert zarr.open_group(s, mode="r")["splits/default"].attrs["seed"] == 7


def test_config_splits_do_not_change_the_store_hash(tmp_path):
    from chunkstore.config import Config

    d = {"store": "x.zarr", "schema": {"features": 2, "heads": {"a": 3}},
         "source": {"kind": "synthetic", "n_samples": 10}}
    plain = Config.from_dict(d)
    with_splits = Config.from_dict({**d, "splits": {"default": {"method": "stratified",
                                                                "by": "a"}}})
    assert plain.content_sha256(8, 1) == with_splits.content_sha256(8, 1)
    assert with_splits.splits[0].by == "a"
    assert Config.from_dict(with_splits.to_dict()).splits == with_splits.splits
    for bad, message in [({"method": "stratified", "by": "b"}, "unknown head 'b'"),
                         ({"fractions": {"a": 0.5}}, "must sum to 1"),
                         ({"method": "kfold", "k": 3, "fractions": {"a": 1}}, "not fractions"),
                         ({"colour": 1}, "unknown key 'colour'")]:
        with pytest.raises(ConfigError, match=message):
            Config.from_dict({**d, "splits": {"s": bad}})


@pytest.mark.cluster
def test_distributed_scheduler_gives_the_same_codes(tmp_path, store):
    from distributed import LocalCluster

    s = copy(store, tmp_path / "s.zarr")
    with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster:
        write_split(s, SplitSpec(**{**METHODS["stratified_group"].__dict__, "name": "d"}),
                    scheduler=cluster.scheduler_address)
    np.testing.assert_array_equal(codes(s, "d"), codes(s))


@pytest.mark.slow
def test_streaming_built_stores_key_random_and_stratified_splits_by_source(tmp_path,
                                                                        producers_path):
    """Streaming ingest records (item, row) in meta/source; the codes follow the samples."""
    from producers import HEADS as PRODUCER_HEADS
    from producers import process

    items = [(k, n) for k, n in enumerate([5, 17, 3, 30, 9, 12, 1, 25, 8, 40])]
    by_sample = []
    for workers in (1, 2):
        store = tmp_path / f"w{workers}.zarr"
        ingest({"store": str(store), "schema": {"features": 4, "heads": PRODUCER_HEADS},
                "source": {"kind": "python", "group": True, "path": [producers_path]},
                "ingest": {"chunk_rows": 8, "workers": workers},
                "splits": {"default": {"method": "random"},
                           "strat": {"method": "stratified", "by": "move"}}},
               items=items, process=process, progress=False)
        g = zarr.open_group(str(store), mode="r")
        assert g["splits/default"].attrs["key"] == "meta/source"
        src = [tuple(r) for r in g["meta/source"][:].tolist()]
        by_sample.append({name: dict(zip(src, codes(str(store), name).tolist(), strict=True))
                          for name in ("default", "strat")})
    assert by_sample[0] == by_sample[1]
