"""Shuffled batches: loader vs memmap gather, zarr oindex, torch and peers (issues 5, 14)."""

from __future__ import annotations

import statistics
import time
from typing import Any

from .. import fixtures
from ..harness import Context, target

TITLE = "Loader vs memmap gather, zarr oindex, torch, Lance and HF datasets (issues 5, 14)"
DEFAULT_ROWS = 547_000
BATCH = 256
ABOUT = """\
A batch = features + all 7 labels + all 7 masks of 256 shuffled rows of the `configs/large.yaml`
store (lz4 + bitshuffle). Each method is its own process: one warm-up epoch, then the median
batches/s of the timed epochs ((c): batches after one warm-up batch). (a) `ds.loader(
batch_size=256, shuffle=True)` (defaults: window sized by bytes, 224 MiB = 64 chunks of 893
float32 features, prefetch 1, threads 2); (a'') window_chunks=8 (the old default's window);
(a') window_chunks=32; (b) numpy memmap of `.npy` copies (page-cached), `arr[perm[i:i+256]]`;
(c) `arr.oindex[sorted random rows]` per array; (d) (a) in `torch.utils.data.DataLoader(
chunkstore.torch.IterableDataset, num_workers=2)` ((d'): 1 worker; the workers share each
window's decode); (e) the path the README recommends:
`chunkstore.torch.IterableDataset` iterated in the training process (the threaded loader,
tensors out); (f) Lance (`ds.take` of the same 256-row random batches, to numpy); (g) Hugging
Face `datasets` (Arrow file, `with_format("numpy")`, `ds[rows]`): (f) and (g) time
`PEER_BATCHES` batches after 20 warm-up ones (`benchmarks/cases/peers.py` builds both from the
store). Chunks/batch: distinct 1,024-row chunks among a batch's rows (a uniform shuffle of
547,000 rows touches ~210). Rank corr.: Spearman correlation of epoch position vs store row (0 =
no global order left). RSS (a)/(b): peak RSS of the loader process over the memmap one's (which
maps the page-cached files)."""
PEER_BATCHES = 400


def step(store: str, method: str, epochs: int, memmap: str = "") -> dict[str, Any]:
    import numpy as np
    import zarr

    g = zarr.open_group(store, mode="r")
    names = fixtures.array_names(store)
    n, chunk = g["features"].shape[0], g["features"].chunks[0]
    if method in ("lance", "hf"):
        from . import peers

        epoch = peers.epochs(method, n, BATCH)
        it = (b for e in range(1, 1000) for b in epoch(e))
        for _ in range(20):
            next(it)
        t0, seen = time.perf_counter(), []
        for _ in range(PEER_BATCHES):
            seen.append(np.asarray(next(it)["index"]))
        rate = PEER_BATCHES / (time.perf_counter() - t0)
        return {"batches_per_s": rate, "chunks_per_batch": float(np.mean(
            [len(np.unique(b // chunk)) for b in seen[:64]])), "rank_corr": _rank(seen),
            "bytes": peers.bytes_on_disk(method, n)}
    if method == "oindex":
        rng, arrays = np.random.default_rng(0), [g[a] for a in names]
        batch = lambda: [a.oindex[np.sort(rng.choice(n, BATCH, replace=False))]  # noqa: E731
                         for a in arrays]
        batch()
        t0 = time.perf_counter()
        for _ in range(epochs):
            batch()
        return {"batches_per_s": epochs / (time.perf_counter() - t0), "chunks_per_batch": None}
    if method.startswith("loader"):
        import chunkstore

        window = int(method[6:]) if method[6:] else None
        loader = chunkstore.open(store).loader(batch_size=BATCH, shuffle=True, seed=0,
                                               window_chunks=window)
        epoch = lambda e: (loader.set_epoch(e), iter(loader))[1]  # noqa: E731
    elif method == "memmap":
        mm = {a: np.load(f"{memmap}/{a.replace('/', '__')}.npy", mmap_mode="r") for a in names}

        def epoch(e: int) -> Any:
            perm = np.random.default_rng(e).permutation(n)
            for i in range(0, n, BATCH):
                yield {"index": perm[i:i + BATCH], **{a: m[perm[i:i + BATCH]]
                                                      for a, m in mm.items()}}
    else:
        import torch
        from torch.utils.data import DataLoader

        from chunkstore.interop.torch import IterableDataset

        torch.set_num_threads(1)
        ds = IterableDataset(store, batch_size=BATCH, shuffle=True, seed=0)
        if method == "torch0":  # in process: the threaded loader, tensors out
            epoch = lambda e: (ds.set_epoch(e), iter(ds))[1]  # noqa: E731
        else:
            dl = DataLoader(ds, batch_size=None, num_workers=1 if method == "torch1" else 2,
                            persistent_workers=True)
            epoch = lambda e: (ds.set_epoch(e), iter(dl))[1]  # noqa: E731
    sum(1 for _ in epoch(0))  # warm-up
    rates, mixing, seen = [], [], []
    for e in range(1, epochs + 1):
        t0, k = time.perf_counter(), 0
        for b in epoch(e):
            k += 1
            if len(mixing) < 64:
                mixing.append(len(np.unique(np.asarray(b["index"]) // chunk)))
            if e == 1:
                seen.append(b["index"])
        rates.append(k / (time.perf_counter() - t0))
    return {"batches_per_s": statistics.median(rates), "chunks_per_batch": float(np.mean(mixing)),
            "rank_corr": _rank([np.asarray(i) for i in seen])}


def _rank(seen: list[Any]) -> float:
    """Spearman correlation of stream position vs store row (rows are distinct: ranks)."""
    import numpy as np

    rows = np.concatenate(seen).astype(np.float64)
    return float(np.corrcoef(np.argsort(np.argsort(rows)), np.arange(len(rows)))[0, 1])


def run(ctx: Context) -> dict[str, Any]:
    store, epochs = fixtures.large_store(ctx.rows), 1 if ctx.smoke else 3
    memmap = fixtures.memmap_files(ctx.rows)
    from ..harness import tree_bytes

    stored = tree_bytes(store)
    names = {"loader": "(a) chunkstore loader, shuffle", "loader8": "(a'') window_chunks=8",
             "loader32": "(a') window_chunks=32",
             "memmap": "(b) numpy memmap, random gather", "oindex": "(c) zarr oindex",
             "torch": "(d) loader in torch DataLoader, 2 workers",
             "torch1": "(d') loader in torch DataLoader, 1 worker",
             "torch0": "(e) chunkstore.torch.IterableDataset in process",
             "lance": "(f) Lance take", "hf": "(g) HF datasets, numpy format"}
    r = ctx.best({k: (lambda k=k, v=v: ctx.step(v, "loader:step", store=str(store), method=k,
                                           epochs=5 if k == "oindex" else epochs,
                                           memmap=str(memmap)))
                  for k, v in names.items()}, key=lambda r: -r.result["batches_per_s"])
    bps = {k: r[k].result["batches_per_s"] for k in names}
    rows = [{"method": v, "batches/s": bps[k], "rows/s": bps[k] * BATCH, **r[k].fields(),
             "vs (c)": bps[k] / bps["oindex"], "vs (b)": bps[k] / bps["memmap"],
             "chunks/batch": r[k].result["chunks_per_batch"],
             "rank corr.": r[k].result.get("rank_corr"),
             "MiB on disk": r[k].result.get("bytes", stored) / 2**20} for k, v in names.items()]
    rss = r["loader"].peak_rss / r["memmap"].peak_rss
    return {"tables": [{"rows": rows}], "targets": [
        target("(a) batches/s", bps["loader"], ">=", 1000, "{:,.0f}"),
        target("(a) / (c)", bps["loader"] / bps["oindex"], ">=", 100, "{:,.0f}"),
        target("(a) / (b)", bps["loader"] / bps["memmap"], ">=",
               1.2 if ctx.rows >= DEFAULT_ROWS else 1.0),
        target("peak RSS (a) / (b)", rss, "<=", 1 / 3),
        target("(e) / (b)", bps["torch0"] / bps["memmap"], ">=", 1.0),
        target("(a) / (f) Lance", bps["loader"] / bps["lance"], ">=", 1.0),
        target("(a) / (g) HF datasets", bps["loader"] / bps["hf"], ">=", 1.0)],
        "notes": ["peak RSS of (b) includes the page-cached file pages it maps; of (d) the two "
                  "worker processes"]}
