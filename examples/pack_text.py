"""A real text pipeline for the ``python`` source: documents in, packed token sequences out.

The corpus is, by default, the Python standard library's own ``.py`` files (real text on every
machine; ``site-packages`` excluded), in sorted path order. Two steps, both deterministic:

1. ``list_shards()`` — called once, in the coordinator: lists the documents, skips empty files
   and exact duplicates (sha256 of the bytes; the first in path order is kept), trains a
   byte-level BPE with the ``tokenizers`` library on the kept documents (or uses a plain byte
   vocabulary), saves the tokenizer and ``documents.json`` into the work directory, and cuts the
   document list into shards of consecutive documents (~``shard_mib`` of text each). Returns one
   small item per shard. A rerun (resume) with the same corpus and settings reuses the saved
   tokenizer instead of training again.
2. ``pack_shard(item)`` — called once per shard, in worker processes: tokenizes its documents,
   appends the end-of-document token after each, concatenates them and cuts the stream into
   rows of ``sequence_len`` tokens (rows cross document boundaries, as packing does). The
   shard's last row is completed with the pad token, so rows never span two shards and shards
   pack in parallel. ``group`` = the document of each row's first token (``meta/group``, so a
   grouped split keeps the rows that start in one document together).

Provenance: ``pack_shard`` returns each row's ``source`` = (document, offset of the row's first
token in that document), which the store keeps as ``meta/source`` (the config says
``provenance: true``); the end-of-document token after document ``d`` has offset
``len(tokens(d))`` in ``d``. ``meta/group`` = the document (the first column). Document ids are
positions in ``documents.json``; :func:`provenance` reads them back for store rows.

Settings come from environment variables (the python source calls ``list_shards()`` without
arguments), or from the command line of this file, which sets them and runs the ingest:
``PACK_TEXT_CORPUS`` (a directory; default the stdlib), ``PACK_TEXT_MAX_DOCS``,
``PACK_TEXT_MAX_MIB`` (limit the corpus), ``PACK_TEXT_BYTES=1`` (byte vocabulary: ids 0-255,
EOD 256, PAD 257), ``PACK_TEXT_VOCAB`` (BPE vocabulary, default 8192), ``PACK_TEXT_SEQ_LEN``
(default 1024; must equal ``schema.features.count``), ``PACK_TEXT_SHARD_MIB`` (default 1),
``PACK_TEXT_WORK`` (default ``data/text.zarr.work``, beside the store).

    python examples/pack_text.py configs/text.yaml [--bytes] [--max-docs N] [--max-mib M]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import sysconfig
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

EOD, PAD = "<|endoftext|>", "<|pad|>"
BYTE_EOD, BYTE_PAD = 256, 257
SKIP_PARTS = {"site-packages", "dist-packages", "__pycache__"}


@dataclass(frozen=True)
class Settings:
    corpus: str
    max_docs: int | None
    max_mib: float | None
    byte_vocab: bool
    vocab_size: int
    sequence_len: int
    shard_mib: float
    work: str

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ.get
        docs, mib = env("PACK_TEXT_MAX_DOCS"), env("PACK_TEXT_MAX_MIB")
        return cls(corpus=env("PACK_TEXT_CORPUS") or sysconfig.get_paths()["stdlib"],
                   max_docs=int(docs) if docs else None, max_mib=float(mib) if mib else None,
                   byte_vocab=env("PACK_TEXT_BYTES", "") not in ("", "0"),
                   vocab_size=int(env("PACK_TEXT_VOCAB", "8192")),
                   sequence_len=int(env("PACK_TEXT_SEQ_LEN", "1024")),
                   shard_mib=float(env("PACK_TEXT_SHARD_MIB", "1")),
                   work=env("PACK_TEXT_WORK") or "data/text.zarr.work")


# ---------------------------------------------------------------------------- step 1: items

def corpus_files(root: str, suffix: str = ".py") -> list[Path]:
    """Every ``*.py`` under ``root`` in sorted path order (installed packages excluded)."""
    base = Path(root)
    found = [p for p in base.rglob(f"*{suffix}")
             if p.is_file() and not SKIP_PARTS & set(p.relative_to(base).parts)]
    return sorted(found, key=lambda p: p.relative_to(base).as_posix())


def select_documents(s: Settings) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Kept documents (path, sha256, bytes) and skipped ones (with the reason), in order.

    Only one digest per document is held (an on-disk set would do for billions of documents).
    """
    kept: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    first: dict[str, int] = {}
    total = 0
    for path in corpus_files(s.corpus):
        if s.max_docs is not None and len(kept) >= s.max_docs:
            break
        data = path.read_bytes()
        if s.max_mib is not None and total + len(data) > s.max_mib * 2**20:
            break
        digest = hashlib.sha256(data).hexdigest()
        if not data:
            skipped.append({"path": str(path), "reason": "empty"})
        elif digest in first:
            skipped.append({"path": str(path), "reason": "duplicate",
                            "duplicate_of": first[digest]})
        else:
            first[digest] = len(kept)
            kept.append({"path": str(path), "sha256": digest, "bytes": len(data)})
            total += len(data)
    return kept, skipped


def read_text(path: str) -> str:
    """A document as text; undecodable bytes become U+FFFD (deterministically)."""
    return Path(path).read_bytes().decode("utf-8", errors="replace")


def train_tokenizer(docs: list[dict[str, Any]], vocab_size: int, out: Path) -> None:
    """A byte-level BPE trained on the documents; EOD and PAD are ids 0 and 1."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOD, PAD],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator((read_text(d["path"]) for d in docs), trainer=trainer)
    tmp = out.with_suffix(".tmp")
    tok.save(str(tmp))
    os.replace(tmp, out)


def shard_bounds(docs: list[dict[str, Any]], shard_bytes: float) -> list[tuple[int, int]]:
    """Consecutive document ranges of about ``shard_bytes`` of text each."""
    bounds, start, size = [], 0, 0
    for i, d in enumerate(docs):
        size += d["bytes"]
        if size >= shard_bytes:
            bounds.append((start, i + 1))
            start, size = i + 1, 0
    if start < len(docs):
        bounds.append((start, len(docs)))
    return bounds


def write_json(path: Path, value: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value, indent=1))
    os.replace(tmp, path)


def prepare(s: Settings) -> list[dict[str, Any]]:
    """Step 1 for explicit settings: dedup, tokenizer, ``documents.json``, shard items."""
    work = Path(s.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    docs, skipped = select_documents(s)
    if not docs:
        raise ValueError(f"no documents under {s.corpus!r} (after skipping {len(skipped)})")
    key = hashlib.sha256(json.dumps([asdict(s), [d["sha256"] for d in docs]]).encode()
                         ).hexdigest()
    tokenizer = "bytes" if s.byte_vocab else str(work / "tokenizer.json")
    manifest = work / "documents.json"
    old = json.loads(manifest.read_text()) if manifest.exists() else {}
    if not s.byte_vocab and (old.get("key") != key or not Path(tokenizer).exists()):
        train_tokenizer(docs, s.vocab_size, Path(tokenizer))
    write_json(manifest, {"key": key, "settings": asdict(s), "tokenizer": tokenizer,
                          "documents": docs, "skipped": skipped})
    return [{"shard": k, "docs": [a, b], "work": str(work), "tokenizer": tokenizer,
             "sequence_len": s.sequence_len}
            for k, (a, b) in enumerate(shard_bounds(docs, s.shard_mib * 2**20))]


def list_shards() -> list[dict[str, Any]]:
    """``source.items``: step 1 with the settings from the environment."""
    return prepare(Settings.from_env())


# ---------------------------------------------------------------------------- step 2: process

class Vocabulary:
    """Token ids of a document; ``eod``/``pad`` ids; ``size`` (schema.features.vocab_size)."""

    def __init__(self, tokenizer: str) -> None:
        self.tok: Any = None
        if tokenizer == "bytes":
            self.eod, self.pad, self.size = BYTE_EOD, BYTE_PAD, 258
        else:
            from tokenizers import Tokenizer

            self.tok = Tokenizer.from_file(tokenizer)
            self.tok.encode_special_tokens = True  # "<|endoftext|>" in a document is text
            self.eod, self.pad = self.tok.token_to_id(EOD), self.tok.token_to_id(PAD)
            self.size = self.tok.get_vocab_size()

    def encode(self, path: str) -> np.ndarray:
        if self.tok is None:
            return np.frombuffer(Path(path).read_bytes(), dtype=np.uint8).astype(np.int64)
        return np.asarray(self.tok.encode(read_text(path)).ids, dtype=np.int64)


@lru_cache(maxsize=4)
def vocabulary(tokenizer: str) -> Vocabulary:
    return Vocabulary(tokenizer)


@lru_cache(maxsize=4)
def documents(work: str) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = json.loads((Path(work) / "documents.json").read_text()
                                            )["documents"]
    return docs


def pack(token_lists: list[np.ndarray], first_doc: int, length: int, eod: int, pad: int
         ) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``length`` tokens, and (document, offset) of each row's first token.

    Pure: each document's tokens then ``eod``, concatenated; the last row padded with ``pad``.
    """
    sizes = np.array([len(t) + 1 for t in token_lists], dtype=np.int64)
    starts = np.concatenate(([0], np.cumsum(sizes)))
    stream = np.full(int(-(-starts[-1] // length)) * length, pad, dtype=np.int64)
    for t, a in zip(token_lists, starts[:-1], strict=True):
        stream[a:a + len(t)] = t
        stream[a + len(t)] = eod
    first = np.arange(0, len(stream), length, dtype=np.int64)
    doc = np.searchsorted(starts, first, side="right") - 1
    where = np.stack([doc + first_doc, first - starts[doc]], axis=1)
    return stream.reshape(-1, length), where


def pack_shard(item: dict[str, Any]) -> dict[str, Any]:
    """``source.process``: one shard's documents as packed rows (see the module doc)."""
    vocab = vocabulary(item["tokenizer"])
    a, b = item["docs"]
    docs = documents(item["work"])[a:b]
    rows, where = pack([vocab.encode(d["path"]) for d in docs], a, item["sequence_len"],
                       vocab.eod, vocab.pad)
    return {"features": rows, "labels": {}, "masks": {}, "group": where[:, 0], "source": where}


def provenance(store: str, rows: slice | np.ndarray | None = None) -> np.ndarray:
    """(n, 2) int64 (document, offset of the first token) of store rows (all by default).

    A thin reader of ``meta/source``; the document is an index into ``documents.json``'s
    ``documents`` in the work directory.
    """
    import zarr

    src = zarr.open_group(store, mode="r")["meta/source"]
    return np.asarray(src[:] if rows is None else src.get_orthogonal_selection(
        (rows, slice(None))), dtype=np.int64)


# ---------------------------------------------------------------------------- command line

def main(argv: list[str] | None = None) -> int:
    import yaml

    import chunkstore

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("config", help="e.g. configs/text.yaml")
    p.add_argument("--bytes", action="store_true", help="byte vocabulary instead of BPE")
    p.add_argument("--max-docs", type=int)
    p.add_argument("--max-mib", type=float)
    p.add_argument("--corpus", help="directory of .py files (default: the stdlib)")
    p.add_argument("--work", help="tokenizer and documents.json (default beside the store: "
                   "<store>.work)")
    p.add_argument("--workers", type=int)
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    cfg = yaml.safe_load(Path(args.config).read_text())
    features = cfg["schema"]["features"]
    env = {"PACK_TEXT_SEQ_LEN": str(features["count"]),
           "PACK_TEXT_WORK": args.work or str(cfg["store"]).rstrip("/") + ".work",
           "PACK_TEXT_BYTES": "1" if args.bytes else "",
           "PACK_TEXT_CORPUS": args.corpus or "",
           "PACK_TEXT_MAX_DOCS": str(args.max_docs or ""),
           "PACK_TEXT_MAX_MIB": str(args.max_mib or "")}
    if not args.bytes and features.get("vocab_size"):
        env["PACK_TEXT_VOCAB"] = str(features["vocab_size"])
    os.environ.update(env)
    summary = chunkstore.ingest(args.config, workers=args.workers, overwrite=args.overwrite)
    print(summary.format())
    print(f"work directory   {env['PACK_TEXT_WORK']} (tokenizer, documents.json)")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
