"""Packed token sequences: chunkstore streaming vs Hugging Face ``datasets`` (issue 19)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..harness import REPO, Context, info, summary, target, tree_bytes

TITLE = "Token sequences: text -> packed 1,024-token rows (issue 19)"
DEFAULT_ROWS = 1_000_000  # documents: more than the stdlib has, i.e. all of it
SEQ_LEN = 1024
VOCAB = 8192
BATCH = 32
READ_BATCHES = 300
SHARD_SIZE = "200MB"
# The measured run uses uint16 token ids; TEXT_FEATURE_DTYPE=float32 compares a float store.
DTYPE = os.environ.get("TEXT_FEATURE_DTYPE", "uint16")
ABOUT = f"""\
Corpus: the Python standard library's `.py` files (sorted; `site-packages` excluded; `--rows`
limits the number of documents), exact duplicates and empty files skipped by sha256 on both
sides (the same code). Tokenizer: one byte-level BPE ({VOCAB:,} tokens, `tokenizers`) trained
once before the measured runs and used by both sides. Both pack each document's tokens + an
end-of-document token into rows of {SEQ_LEN:,}, padding the last row of a shard (chunkstore) or
of a 1,000-document `map` batch (datasets). 2 processes each side. (a) `chunkstore ingest
configs/text.yaml`-style config with `examples/pack_text.py` (streaming placement, {DTYPE}
features, 256-row chunks, `meta/source` = (document, first token offset) from the packer). (b)
`datasets`: `Dataset.from_generator` (text) -> `map` tokenize (batched, num_proc=2) -> `map`
pack (batched, num_proc=2) -> `save_to_disk` (max_shard_size={SHARD_SIZE}); `datasets`' cache
lives in the case's work dir and is counted separately. Reads: {READ_BATCHES} shuffled batches
of {BATCH} x {SEQ_LEN:,} tokens; (a) the chunkstore loader (chunk-order shuffle + within-window
shuffle, 2 threads), (b) `load_from_disk(...).with_format("numpy")` indexed by a random
permutation; both start a new shuffled epoch when one ends. `batches/s` is the rate after the
first batch (training's steady state); `first batch s` is open-to-first-batch, also shown as a
whole-run ratio."""


def _pack_text() -> Any:
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    import examples.pack_text as pt

    return pt


def settings_env(work: Path, docs: int) -> dict[str, str]:
    return {"PACK_TEXT_WORK": str(work / "tok"), "PACK_TEXT_MAX_DOCS": str(docs),
            "PACK_TEXT_SEQ_LEN": str(SEQ_LEN), "PACK_TEXT_VOCAB": str(VOCAB),
            "PACK_TEXT_BYTES": "", "TOKENIZERS_PARALLELISM": "false"}


def hf_pack(work: str, out: str, cache: str, docs: int) -> dict[str, Any]:
    """(b): the usual `datasets` pipeline, same documents, tokenizer and packing."""
    os.environ["HF_DATASETS_CACHE"] = cache
    import datasets
    from tokenizers import Tokenizer

    datasets.disable_progress_bars()
    pt = _pack_text()
    os.environ.update(settings_env(Path(work).parent, docs))
    kept, _ = pt.select_documents(pt.Settings.from_env())
    paths = [d["path"] for d in kept]
    tokenizer = str(Path(work) / "tokenizer.json")

    def texts() -> Any:
        for p in paths:
            yield {"text": pt.read_text(p)}

    ds = datasets.Dataset.from_generator(texts, cache_dir=cache)
    tok = Tokenizer.from_file(tokenizer)
    eod, pad = tok.token_to_id(pt.EOD), tok.token_to_id(pt.PAD)
    ds = ds.map(_tokenize, batched=True, num_proc=2, remove_columns=["text"],
                fn_kwargs={"tokenizer": tokenizer})
    ds = ds.map(_group, batched=True, batch_size=1000, num_proc=2, remove_columns=["ids"],
                fn_kwargs={"eod": eod, "pad": pad})
    ds.save_to_disk(out, max_shard_size=SHARD_SIZE)
    return {"rows": len(ds), "documents": len(paths)}


def _tokenize(batch: dict[str, list[Any]], tokenizer: str) -> dict[str, list[Any]]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(tokenizer)
    tok.encode_special_tokens = True
    return {"ids": [e.ids for e in tok.encode_batch(batch["text"])]}


def _group(batch: dict[str, list[Any]], eod: int, pad: int) -> dict[str, list[Any]]:
    rows, _ = _pack_text().pack([np.asarray(i, dtype=np.int64) for i in batch["ids"]], 0,
                                SEQ_LEN, eod, pad)
    return {"input_ids": rows.tolist()}


def _timed(batches: Any) -> dict[str, Any]:
    """Open-to-first-batch seconds, then the rate of the next READ_BATCHES - 1 batches."""
    t0 = time.perf_counter()
    rows, first, n = 0, 0.0, 0
    for n, b in enumerate(batches, start=1):
        rows += len(b)
        if n == 1:
            first = time.perf_counter() - t0
        if n == READ_BATCHES:
            break
    total = time.perf_counter() - t0
    return {"rows": rows, "batches": n, "seconds": total, "first_batch": first,
            "steady_rate": (n - 1) / max(total - first, 1e-9)}


def read_chunkstore(store: str) -> dict[str, Any]:
    import chunkstore

    def batches() -> Any:  # the loader re-shuffles for every epoch until READ_BATCHES
        ds = chunkstore.open(store)
        for epoch in range(10**6):
            for b in ds.loader(batch_size=BATCH, shuffle=True, drop_last=True, seed=epoch):
                yield np.asarray(b["features"])

    return _timed(batches())


def read_hf(path: str) -> dict[str, Any]:
    import datasets

    def batches() -> Any:
        ds = datasets.load_from_disk(path).with_format("numpy")
        for epoch in range(10**6):
            order = np.random.default_rng(epoch).permutation(len(ds))
            for k in range(len(ds) // BATCH):
                yield ds[order[k * BATCH:(k + 1) * BATCH]]["input_ids"]

    return _timed(batches())


def _config(w: Path) -> Path:
    import yaml

    cfg = {"store": str(w / "text.zarr"),
           "schema": {"features": {"count": SEQ_LEN, "dtype": DTYPE,
                                   **({"vocab_size": VOCAB} if DTYPE != "float32" else {})},
                      "heads": {}},
           "source": {"kind": "python", "path": [str(REPO)], "group": True, "provenance": True,
                      "items": "examples.pack_text:list_shards",
                      "process": "examples.pack_text:pack_shard"},
           "ingest": {"workers": 2, "chunk_rows": 256}}
    path = w / "text.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def run(ctx: Context) -> dict[str, Any]:
    pt, w = _pack_text(), ctx.work
    env = settings_env(w, ctx.rows)
    os.environ.update(env)
    items = pt.prepare(pt.Settings.from_env())  # trains the shared tokenizer once, unmeasured
    cfg = _config(w)
    best = ctx.best({
        "a": lambda: ctx.cli("(a) chunkstore", "ingest", cfg, "--quiet", "--overwrite",
                             clean=w / "text.zarr", env=env),
        "b": lambda: ctx.step("(b) datasets", "text:hf_pack", clean=w / "hf", env=env,
                              work=str(w / "tok"), out=str(w / "hf"), cache=str(w / "hf_cache"),
                              docs=ctx.rows),
        "ra": lambda: ctx.step("(a) reads", "text:read_chunkstore", store=str(w / "text.zarr")),
        "rb": lambda: ctx.step("(b) reads", "text:read_hf", path=str(w / "hf"))})
    s = summary(w / "text.zarr")
    rows_a, rows_b = s["rows"], best["b"].result["rows"]
    disk_a, disk_b = tree_bytes(w / "text.zarr"), tree_bytes(w / "hf")
    rate = {k: best[k].result["steady_rate"] for k in ("ra", "rb")}
    whole = {k: best[k].result["batches"] / best[k].result["seconds"] for k in ("ra", "rb")}
    rows = [{"method": "(a) chunkstore: pack_text -> streaming ingest", "sequences": rows_a,
             **best["a"].fields(), "disk MiB": disk_a / 2**20},
            {"method": "(b) datasets: map tokenize + pack -> save_to_disk", "sequences": rows_b,
             **best["b"].fields(), "disk MiB": disk_b / 2**20,
             "cache MiB": tree_bytes(w / "hf_cache") / 2**20},
            {"method": "(a) reads: chunkstore loader", "batches/s": rate["ra"],
             "first batch s": best["ra"].result["first_batch"], **best["ra"].fields()},
            {"method": "(b) reads: load_from_disk, random permutation", "batches/s": rate["rb"],
             "first batch s": best["rb"].result["first_batch"], **best["rb"].fields()}]
    return {"tables": [{"rows": rows}], "targets": [
        target("(a) peak RSS / (b) peak RSS, process trees", best["a"].peak_rss /
               best["b"].peak_rss, "<=", 0.25),
        target("(a) wall / (b) wall", best["a"].wall / best["b"].wall, "<=", 1.0),
        target("training reads after the first batch, (a) batches/s / (b)",
               rate["ra"] / rate["rb"], ">=", 2.0),
        info(f"{READ_BATCHES} batches from open, (a) batches/s / (b)", whole["ra"] / whole["rb"]),
        info("(a) bytes on disk / (b)", disk_a / disk_b)],
        "notes": [f"{len(items)} shards; {rows_a:,} sequences (a), {rows_b:,} (b) (they differ "
                  "only by where the last partial row of a shard / map batch is padded)",
                  f"feature dtype {DTYPE}"]}
