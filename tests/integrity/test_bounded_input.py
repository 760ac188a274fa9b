"""Hostile or huge configs are refused before anything is built, in bounded memory."""

from __future__ import annotations

import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from chunkstore.config import load_config
from chunkstore.errors import ConfigError
from chunkstore.runtime.budget import MAX_TASKS


def _bomb(levels: int, where: str) -> str:
    lines = ['a0: &a0 ["xxxxxxxxxx", "xxxxxxxxxx", "xxxxxxxxxx"]']
    for i in range(1, levels + 1):
        prev = f"*a{i - 1}"
        lines.append(f"a{i}: &a{i} [{', '.join([prev] * 9)}]")
    anchors = "\n".join(f"  {line}" for line in lines)
    return textwrap.dedent("""\
        store: s.zarr
        x-anchors:
        """) + anchors + textwrap.dedent(f"""
        schema: {{features: 4, heads: {{move: 3}}}}
        source: {{kind: synthetic, n_samples: 100}}
        {where}: *a{levels}
        """)


def _peak_mib_of(code: str) -> tuple[int, str]:
    """Run ``code`` in a fresh interpreter; (its peak RSS in MiB, its stdout). The peak is
    VmHWM of the new process image: getrusage's ru_maxrss survives exec on Linux, so a child
    of a big pytest process would report the parent's size."""
    out = subprocess.run([sys.executable, "-c", code + textwrap.dedent("""
        import re
        with open("/proc/self/status") as f:
            print(int(re.search(r"VmHWM:\\s+(\\d+)", f.read()).group(1)) // 1024)
        """)], capture_output=True, text=True, timeout=120)
    lines = out.stdout.strip().splitlines()
    return int(lines[-1]), "\n".join(lines[:-1])


@pytest.mark.parametrize("where", ["storage_options", "splits"])
def test_alias_bomb_is_refused_in_bounded_memory(tmp_path, where):
    path = tmp_path / "bomb.yaml"
    path.write_text(_bomb(9, where))
    assert len(path.read_bytes()) < 1200
    code = textwrap.dedent(f"""
        from chunkstore.config import load_config
        try:
            load_config({str(path)!r})
        except Exception as e:
            print(type(e).__name__, len(str(e)), str(e)[:300].replace(chr(10), ' '))
        """)
    peak, said = _peak_mib_of(code)
    assert said.startswith("ConfigError") and "refused" in said, said
    assert int(said.split()[1]) < 3000  # the message itself is short
    assert peak < 400, f"peak RSS {peak} MiB"


def test_many_aliases_are_refused(tmp_path):
    refs = ", ".join(["*a"] * 100)
    path = tmp_path / "c.yaml"
    path.write_text(f"store: s.zarr\nx: &a 1\ny: [{refs}]\n")
    with pytest.raises(ConfigError, match="more than 64 aliases"):
        load_config(path)


def test_a_few_aliases_are_fine(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("store: s.zarr\nschema: {features: 4, heads: &h {move: 3}}\n"
                    "source: {kind: synthetic, n_samples: 100}\n")
    assert load_config(path).schema.n_features == 4


@pytest.mark.parametrize(("yaml_text", "key"), [
    ("schema: {features: 1000000000, heads: {move: 3}}\nsource: {kind: synthetic, "
     "n_samples: 100}", "schema.features"),
    ("schema: {features: 100000, heads: {move: 3}}\nstats: {correlation: true}\n"
     "source: {kind: synthetic, n_samples: 100}", "stats.correlation"),
    ("schema: {features: 4, heads: {move: 3}}\nsource: {kind: synthetic, "
     "n_samples: 10000000000000}", "source.n_samples"),
    ("schema: {features: 4, heads: {move: 100000000}}\nsource: {kind: synthetic, "
     "n_samples: 100}", "schema.heads.move"),
])
def test_huge_declared_sizes_are_refused_before_building(tmp_path, yaml_text, key):
    path = tmp_path / "c.yaml"
    path.write_text(f"store: {tmp_path / 's.zarr'}\n{yaml_text}\n")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(path)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB
    assert not (tmp_path / "s.zarr").exists()


def test_plan_too_long_or_too_big_for_disk_is_refused_before_the_store(tmp_path):
    from chunkstore import ingest

    cfg = {"store": str(tmp_path / "s.zarr"), "schema": {"features": 4, "heads": {"m": 3}},
           "source": {"kind": "synthetic", "n_samples": (MAX_TASKS + 1) * 1,
                      "item_rows": [100000, 100000]},
           "ingest": {"chunk_rows": 1, "task_chunks": 1}}
    with pytest.raises(ConfigError, match="ingest.task_chunks"):
        ingest(cfg, progress=False)
    assert not Path(tmp_path / "s.zarr").exists()
