"""Config validation by pydantic models: messages, frozen values, JSON Schema, stable hashes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from chunkstore.config import IngestOptions, config_json_schema, load_config
from chunkstore.core.schema import HeadSection, Schema, Where
from chunkstore.errors import ConfigError
from chunkstore.sources import source_class

CONFIGS = Path(__file__).parent.parent / "configs"
GOOD = """
store: out.zarr
schema:
  features: 3
  heads: {a: 4, b: {classes: 2, label_dtype: int8}}
source: {kind: synthetic, n_samples: 10, item_rows: [2, 5]}
"""


def load(tmp_path: Path, text: str):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    return p, load_config(p)


@pytest.mark.parametrize("text, message", [
    (GOOD + "ingest: {workers: 2, wrokers: 3}\n",
     "key 'ingest.wrokers': unknown key 'wrokers'; allowed keys here are ['blosc_threads', "),
    (GOOD + "stats: {correlation: maybe}\n",
     "key 'stats.correlation': expected true or false, found str 'maybe'"),
    (GOOD + "compression: {clevel: 12}\n", "key 'compression.clevel': expected an integer <= 9, "
                                           "found 12"),
    (GOOD.replace("store: out.zarr\n", ""), "key 'store': missing required key"),
    (GOOD + "ingest: {scheduler: processes, nan_policy: sometimes}\n",
     "key 'ingest.nan_policy': expected one of 'allow' or 'error', found str 'sometimes'"),
    (GOOD.replace("b: {classes: 2,", "b: {classes: 0,"),
     "key 'schema.heads.b.classes': expected an integer >= 1, found 0"),
    (GOOD.replace("b: {classes: 2,", "b: {classes: 2, colour: red,"),
     "key 'schema.heads.b.colour': unknown key 'colour'"),
    (GOOD.replace("item_rows: [2, 5]", "item_rows: [2, x]"),
     "key 'source.item_rows[1]': expected an integer, found str 'x'"),
    (GOOD.replace("item_rows: [2, 5]", "item_rows: [5, 2]"),
     "key 'source.item_rows': min 5 is larger than max 2"),
    (GOOD.replace("n_samples: 10", "n_samples: 10.5"),
     "key 'source.n_samples': expected an integer, found float 10.5"),
    (GOOD + "splits: {s: {method: stratified, by: zz}}\n", "key 'splits.s.by': unknown head 'zz'"),
    (GOOD + "splits: {s: {method: shuffle}}\n", "key 'splits.s.method': expected one of "),
    (GOOD.replace("kind: synthetic, n_samples: 10, item_rows: [2, 5]", "n_samples: 10"),
     "key 'source.kind': missing required key"),
])
def test_one_error_names_file_and_dotted_key(tmp_path, text, message):
    with pytest.raises(ConfigError) as e:
        load(tmp_path, text)
    assert message in str(e.value)
    assert str(e.value).startswith(f"config {str(tmp_path / 'bad.yaml')!r}, key ")


def test_long_values_are_cut_in_messages(tmp_path):
    with pytest.raises(ConfigError) as e:
        load(tmp_path, GOOD + f"ingest: {{workers: {'x' * 5000}}}\n")
    assert "key 'ingest.workers': expected an integer" in str(e.value)
    assert len(str(e.value)) < 400 and "..." in str(e.value)


def test_source_options_name_the_where_they_are_given():
    schema = Schema.from_dict({"features": 2, "heads": {"a": 3}})
    opts = source_class("npz").Options
    with pytest.raises(ConfigError, match=r"config 't\.yaml', key 'source\.label_key': must "
                                          r"contain '\{head\}'"):
        opts.from_dict({"paths": "b/*.npz", "label_key": "labels"}, Where("t.yaml", "source"),
                       schema)
    with pytest.raises(ConfigError, match=r"key 'source\.paths': missing required key"):
        opts.from_dict({}, Where("t.yaml", "source"), schema)


def test_models_are_frozen(tmp_path):
    _, cfg = load(tmp_path, GOOD)
    with pytest.raises(ValidationError, match="frozen"):
        cfg.source.options.n_samples = 5  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.ingest.workers = 3  # type: ignore[misc]
    with pytest.raises(ValidationError):
        HeadSection(classes=3).classes = 4  # type: ignore[misc]
    # copies are made with dataclasses.replace (ingest) and validated again
    assert dataclasses.replace(cfg.ingest, scheduler="tcp://x:1").scheduler == "tcp://x:1"
    with pytest.raises(ValidationError):
        dataclasses.replace(cfg.ingest, workers=0)


def test_json_schema_accepts_the_repo_configs_and_refuses_unknown_keys():
    jsonschema = pytest.importorskip("jsonschema")
    schema = config_json_schema()
    assert schema["properties"]["source"]["discriminator"]["propertyName"] == "kind"
    validator = jsonschema.Draft202012Validator(schema)
    for name in ("demo.yaml", "streaming.yaml"):
        data = yaml.safe_load((CONFIGS / name).read_text())
        assert list(validator.iter_errors(data)) == [], name
    data = yaml.safe_load((CONFIGS / "demo.yaml").read_text())
    for bad in ({**data, "colour": 1},
                {**data, "source": {**data["source"], "colour": 1}},
                {**data, "source": {**data["source"], "kind": "csv"}},
                {**data, "ingest": {"workers": 0}}):
        assert list(validator.iter_errors(bad)), bad


def test_content_hash_is_unchanged_for_the_demo_config():
    # The value the hand-written validators gave (commit 209df07): a change here would make
    # every existing store refuse to resume.
    # Issue 13 turned ingest-time correlation off by default, which changes the stats section
    # of a config that does not set it; `stats: {correlation: true}` gives the old hash back,
    # so a store ingested before resumes with that line added.
    cfg = load_config(CONFIGS / "demo.yaml")
    assert cfg.content_sha256(1024, 4) == (
        "652e18762f7712830f504c014bf27317f64beb741813cefcfd554c91bd332846")
    old = type(cfg).from_dict({**cfg.to_dict(), "stats": {"correlation": True}}, file=cfg.file)
    assert old.content_sha256(1024, 4) == (
        "f1ac219bebda514229dfe2872f69417c77b98c22606c25a54ff4fdf76a973c60")
    again = type(cfg).from_dict(cfg.to_dict(), file=cfg.file)
    assert again.content_sha256(1024, 4) == cfg.content_sha256(1024, 4)


def test_auto_means_none_and_round_trips():
    opts = IngestOptions.from_dict({"workers": "auto", "chunk_rows": 64}, Where("t", "ingest"))
    assert opts.workers is None and opts.chunk_rows == 64
    assert opts.to_dict()["workers"] == "auto"
