from __future__ import annotations

from pathlib import Path

import pytest

from chunkstore.config import load_config
from chunkstore.errors import ConfigError

GOOD = """
store: out.zarr
schema:
  features: 3
  heads: {a: 4, b: {classes: 2, label_dtype: int8}}
source: {kind: synthetic, n_samples: 10}
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_good_config_parses_and_round_trips(tmp_path):
    cfg = load_config(write(tmp_path, GOOD))
    assert cfg.schema.feature_names == ("f0", "f1", "f2")
    assert [(h.name, h.classes, h.label_dtype) for h in cfg.schema.heads] == [
        ("a", 4, "int16"), ("b", 2, "int8")]
    assert cfg.ingest.workers is None and cfg.compression.cname == "lz4"
    again = type(cfg).from_dict(cfg.to_dict(), file=cfg.file)
    assert again.to_dict() == cfg.to_dict()
    # workers never change the content hash; the schema does
    assert cfg.content_sha256(8, 1) == again.content_sha256(8, 1) != cfg.content_sha256(16, 1)


@pytest.mark.parametrize("text, message", [
    (GOOD + "extra: 1\n", "key 'extra': unknown key 'extra'"),
    (GOOD.replace("features: 3", "features: 0"), "key 'schema.features': expected an integer >= 1"),
    (GOOD.replace("features: 3", "features: three"), "key 'schema.features': expected an integer"),
    (GOOD.replace("a: 4,", "a: -1,"), "key 'schema.heads.a': expected an integer >= 1, found -1"),
    (GOOD.replace("a: 4,", "a: 4, a: 5,"), "duplicate key 'a'"),
    (GOOD.replace("store: out.zarr\n", ""), "key 'store': missing required key"),
    (GOOD.replace("n_samples: 10", "n_samples: 10, colour: red"),
     "key 'source.colour': unknown key 'colour'"),
    (GOOD.replace("kind: synthetic", "kind: csv"), "unknown source kind 'csv'"),
    (GOOD + "ingest: {workers: many}\n", "key 'ingest.workers': expected an integer"),
    (GOOD + "compression: {cname: snappy}\n", "key 'compression.cname': expected one of"),
    (GOOD + "ingest: {nan_policy: maybe}\n", "key 'ingest.nan_policy'"),
    (GOOD.replace("features: 3", "features: {count: 2, names: [x, y, z]}"),
     "count is 2 but 3 names are given"),
    (GOOD.replace("features: 3", "features: {names: [x, x]}"), "duplicate feature name 'x'"),
    (GOOD.replace("b: {classes: 2, label_dtype: int8}", "b: {classes: 300, label_dtype: int8}"),
     "300 classes do not fit label_dtype int8"),
    ("store: [unclosed", "is not valid YAML"),
    ("- a\n- b\n", "expected a mapping"),
])
def test_bad_config_names_file_and_key(tmp_path, text, message):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert message in str(e.value)
    assert str(p) in str(e.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "nope.yaml")


def test_yaml_tags_are_refused(tmp_path):
    p = write(tmp_path, GOOD + "x: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)


def test_repo_configs_parse():
    root = Path(__file__).parents[2] / "configs"
    for name in ("demo.yaml", "large.yaml"):
        cfg = load_config(root / name)
        assert cfg.schema.n_features == 893 and len(cfg.schema.heads) == 7
