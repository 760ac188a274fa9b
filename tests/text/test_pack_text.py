"""The text packer (issue 19): a real corpus, real tokenizers, a real streaming ingest.

``meta/source`` of every row is (document, offset of its first token), checked by tokenizing
each document again; ``meta/group`` the document, so a grouped split keeps documents whole.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import chunkstore  # noqa: E402
from chunkstore.splits.write import run_split  # noqa: E402
from examples.pack_text import (  # noqa: E402
    BYTE_EOD,
    BYTE_PAD,
    Settings,
    corpus_files,
    pack,
    prepare,
    provenance,
)

DOCS = {
    "a.py": "def f(x):\n    return x + 1\n" * 7,
    "b/c.py": "# second document\nimport os\nprint(os.sep)\n",
    "b/dup.py": "def f(x):\n    return x + 1\n" * 7,       # same bytes as a.py: skipped
    "b/empty.py": "",                                      # skipped
    "d.py": "text = '<|endoftext|> is text here'\n" + "é" * 40,
    "e.py": "x = 1\n",
    "site-packages/z.py": "never read\n",                  # installed packages: excluded
    "notes.txt": "not a .py file\n",
}
KEPT = ["a.py", "b/c.py", "d.py", "e.py"]
L = 16


@pytest.fixture()
def corpus(tmp_path):
    root = tmp_path / "corpus"
    for name, text in DOCS.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    return root


def settings(tmp_path, corpus, byte_vocab, **kw):
    base = dict(corpus=str(corpus), max_docs=None, max_mib=None, byte_vocab=byte_vocab,
                vocab_size=300, sequence_len=L, shard_mib=60 / 2**20,  # ~60 bytes a shard
                work=str(tmp_path / "work"))
    return Settings(**{**base, **kw})


def tokens(work: Path, byte_vocab: bool, text: str) -> list[int]:
    """Each document's ids, from the saved tokenizer, independently of the packer."""
    if byte_vocab:
        return list(text.encode())
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(work / "tokenizer.json"))
    tok.encode_special_tokens = True
    return tok.encode(text).ids


def ingest(tmp_path, items, workers=2):
    cfg = {"store": str(tmp_path / "text.zarr"),
           "schema": {"features": {"count": L, "dtype": "uint16"}, "heads": {}},
           "source": {"kind": "python", "path": [str(REPO)], "group": True,
                      "provenance": True, "process": "examples.pack_text:pack_shard"},
           "ingest": {"workers": workers, "chunk_rows": 4}}
    chunkstore.ingest(cfg, items=items, progress=False)
    return zarr.open_group(str(tmp_path / "text.zarr"), mode="r")


def test_corpus_is_sorted_and_skips_installed_packages(corpus):
    got = [p.relative_to(corpus).as_posix() for p in corpus_files(str(corpus))]
    assert got == ["a.py", "b/c.py", "b/dup.py", "b/empty.py", "d.py", "e.py"]


def test_pack_is_exact_and_pads_only_the_last_row():
    docs = [np.arange(5), np.arange(10, 13), np.arange(20, 30)]
    rows, where = pack(docs, 7, 4, eod=-1, pad=-2)
    flat = rows.ravel().tolist()
    assert flat == [0, 1, 2, 3, 4, -1, 10, 11, 12, -1, *range(20, 30), -1, -2, -2, -2]
    # documents start at stream positions 0, 6, 10; the last row starts on doc 9's EOD,
    # which is at offset len(doc 9) = 10 of doc 9
    assert where.tolist() == [[7, 0], [7, 4], [8, 2], [9, 2], [9, 6], [9, 10]]


@pytest.mark.parametrize("byte_vocab", [True, False], ids=["bytes", "bpe"])
def test_store_holds_every_kept_document_once_in_order(tmp_path, corpus, byte_vocab):
    items = prepare(settings(tmp_path, corpus, byte_vocab))
    assert len(items) > 1  # several shards, packed in parallel
    work = tmp_path / "work"
    manifest = __import__("json").loads((work / "documents.json").read_text())
    assert [Path(d["path"]).relative_to(corpus).as_posix() for d in manifest["documents"]] \
        == KEPT
    assert {(Path(s["path"]).name, s["reason"]) for s in manifest["skipped"]} == {
        ("dup.py", "duplicate"), ("empty.py", "empty")}
    g = ingest(tmp_path, items)
    feats = g["features"][:].astype(np.int64)
    assert feats.shape[1] == L
    src = g["meta/source"][:]
    order = np.lexsort((src[:, 1], src[:, 0]))  # (document, offset): the packing order
    ids = [tokens(work, byte_vocab, DOCS[name]) for name in KEPT]
    eod, pad = (BYTE_EOD, BYTE_PAD) if byte_vocab else (0, 1)
    expected: list[int] = []
    for item in items:  # each shard: its documents, EOD after each, padded to whole rows
        a, b = item["docs"]
        stream = [t for d in ids[a:b] for t in (*d, eod)]
        expected += stream + [pad] * (-len(stream) % L)
    assert feats[order].ravel().tolist() == expected
    assert pad not in [t for d in ids for t in d] and eod not in [t for d in ids for t in d]

    np.testing.assert_array_equal(provenance(str(tmp_path / "text.zarr")), src)
    np.testing.assert_array_equal(provenance(str(tmp_path / "text.zarr"), slice(2, 5)), src[2:5])
    np.testing.assert_array_equal(g["meta/group"][:], src[:, 0])
    for row, (doc, offset) in zip(feats, src, strict=True):
        # the row is the document's tokens from `offset` on, then EOD, then the next
        # documents of its shard (or pads): re-tokenize and compare the whole row
        shard = next(it for it in items if it["docs"][0] <= doc < it["docs"][1])
        a, b = shard["docs"]
        stream = [t for d in ids[a:b] for t in (*d, eod)]
        start = sum(len(d) + 1 for d in ids[a:doc]) + offset
        assert offset <= len(ids[doc])
        tail = stream[start:start + L]
        assert row.tolist() == tail + [pad] * (L - len(tail))


def test_grouped_split_keeps_each_documents_rows_together(tmp_path, corpus):
    items = prepare(settings(tmp_path, corpus, True, shard_mib=1.0))  # one shard: long rows
    g = ingest(tmp_path, items)
    run_split(str(tmp_path / "text.zarr"), method="group", name="docs",
              fractions="train=0.5,val=0.25,test=0.25", overwrite=True)
    codes = g["splits/docs"][:]
    doc = g["meta/source"][:, 0]
    np.testing.assert_array_equal(g["meta/group"][:], doc)
    assert len(set(doc.tolist())) == len(KEPT)
    for d in set(doc.tolist()):
        assert len(set(codes[doc == d].tolist())) == 1, f"document {d} crosses splits"


def test_rerun_reuses_the_tokenizer_and_gives_the_same_items(tmp_path, corpus):
    s = settings(tmp_path, corpus, False)
    first = prepare(s)
    tok = tmp_path / "work" / "tokenizer.json"
    stamp = tok.stat().st_mtime_ns
    assert prepare(s) == first and tok.stat().st_mtime_ns == stamp
    fewer = prepare(settings(tmp_path, corpus, False, max_docs=2))
    assert fewer[-1]["docs"][1] == 2 and tok.stat().st_mtime_ns != stamp  # retrained


def test_limits_on_documents_and_bytes(tmp_path, corpus):
    items = prepare(settings(tmp_path, corpus, True, max_mib=250 / 2**20))
    assert items[-1]["docs"][1] == 2  # a.py (196 bytes) + c.py fit in 250 bytes, d.py not
