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


# ---------------------------------------------------------------- integer features, no heads
# (issue 19: token ids / categorical codes as features; a features-only store)

TOKENS = """
store: out.zarr
schema:
  features: {count: 8, dtype: uint16, vocab_size: 1000}
  heads: {}
source: {kind: synthetic, n_samples: 10}
"""


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int32", "int64"])
def test_integer_feature_dtypes_parse_and_round_trip(tmp_path, dtype):
    vocab = 200 if dtype == "uint8" else 1000
    cfg = load_config(write(tmp_path, TOKENS.replace("uint16", dtype).replace("1000",
                                                                              str(vocab))))
    s = cfg.schema
    assert (s.feature_dtype, s.vocab_size, s.heads, s.integer_features) == (dtype, vocab, (),
                                                                            True)
    again = type(cfg).from_dict(cfg.to_dict(), file=cfg.file)
    assert again.to_dict() == cfg.to_dict()
    assert again.schema.vocab_size == vocab
    assert again.content_sha256(8, 1) == cfg.content_sha256(8, 1)


def test_heads_may_be_omitted_and_mean_no_heads(tmp_path):
    omitted = load_config(write(tmp_path, TOKENS.replace("  heads: {}\n", "")))
    empty = load_config(write(tmp_path, TOKENS))
    assert omitted.schema.heads == () and omitted.to_dict() == empty.to_dict()
    assert omitted.content_sha256(8, 1) == empty.content_sha256(8, 1)


def test_vocab_size_changes_the_hash_and_is_absent_when_not_declared(tmp_path):
    a = load_config(write(tmp_path, TOKENS))
    b = load_config(write(tmp_path, TOKENS.replace("1000", "1001")))
    c = load_config(write(tmp_path, TOKENS.replace(", vocab_size: 1000", "")))
    assert a.content_sha256(8, 1) != b.content_sha256(8, 1) != c.content_sha256(8, 1)
    assert "vocab_size" not in c.to_dict()["schema"]["features"]
    assert c.schema.vocab_size is None and not load_config(
        write(tmp_path, GOOD)).schema.integer_features


@pytest.mark.parametrize("features, message", [
    ("{count: 8, dtype: float32, vocab_size: 10}", "vocab_size needs an integer dtype"),
    ("{count: 8, dtype: uint8, vocab_size: 257}", "vocab_size 257 does not fit dtype uint8"),
    ("{count: 8, dtype: uint16, vocab_size: 0}", "expected an integer >= 1, found 0"),
    ("{count: 8, dtype: int8}", "expected one of"),
    ("{count: 8, dtype: uint32}", "expected one of"),
])
def test_bad_integer_features_name_the_key(tmp_path, features, message):
    p = write(tmp_path, TOKENS.replace("{count: 8, dtype: uint16, vocab_size: 1000}", features))
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert message in str(e.value) and "schema.features" in str(e.value)


def test_misspelt_heads_key_is_still_refused(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'head'"):
        load_config(write(tmp_path, TOKENS.replace("  heads: {}", "  head: {a: 2}")))


def test_json_schema_publishes_integer_dtypes_vocab_size_and_optional_heads():
    from chunkstore.config import config_json_schema

    text = str(config_json_schema())
    for word in ("uint8", "uint16", "int32", "int64", "vocab_size"):
        assert word in text
    schema = config_json_schema()
    section = schema["$defs"]["SchemaSection"]
    assert section["required"] == ["features"]
