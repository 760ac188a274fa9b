"""Loader benchmark (issue 5): shuffled batches of 256 rows from the 547,000-row lz4 store.

Every method reads, per batch, the features and all labels and all masks of 256 rows:

(a)  ``chunkstore``'s loader, ``ds.loader(batch_size=256, shuffle=True)`` (defaults:
     ``window_chunks=8, prefetch=2, threads=2``);
(a') the same with ``window_chunks=32`` (better mixing, more memory);
(b)  a numpy memmap of the same arrays (``.npy`` files under ``benchmarks/work/``, page-cached),
     random gather per batch: ``{name: arr[perm[i:i + 256]]}`` over a fresh permutation per
     epoch -- the format users switch to for speed;
(c)  naive zarr: ``arr.oindex[random rows]`` for each array of the store;
(d)  (a) inside ``torch.utils.data.DataLoader(chunkstore.torch.IterableDataset(...),
     batch_size=None, num_workers=2, persistent_workers=True)`` (tensors, labels as int64).

Each method runs in its own process (so its memory is measured alone), after warm-up (one
epoch for (a), (b), (d), one batch for (c)); batches/s is measured over ``--epochs`` further
epochs ((c): ``--oindex-batches`` batches) and the median epoch is reported. *Chunks per batch*
is the mean number of distinct store chunks (of 1,024 rows) among a batch's rows: how well the
shuffle mixes (a uniform shuffle touches ~210 of the 535 chunks).

The store is built with ``chunkstore ingest configs/large.yaml`` when absent or incomplete (a
few minutes); the memmap files are written from it once. Run with ``--help`` for the options.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SECTION = "bench_loader"
TITLE = "## Loader (issue 5)"
BATCH = 256
TARGET_BPS, TARGET_VS_OINDEX, TARGET_VS_MEMMAP = 1000.0, 100.0, 1.0


def array_names(store: str) -> list[str]:
    import zarr

    g = zarr.open_group(store, mode="r")
    return ["features", *(f"{k}/{h}" for k in ("labels", "masks") for h in g[k].array_keys())]


def mixing(indices: list[np.ndarray], chunk_rows: int) -> float:
    return float(np.mean([len(np.unique(i // chunk_rows)) for i in indices]))


# --------------------------------------------------------------------------------------------
# the measured methods, each run in its own process: prints one JSON line
# --------------------------------------------------------------------------------------------

def timed_epochs(make_epoch: Any, epochs: int) -> dict[str, Any]:
    """Warm up with one epoch, then time ``epochs`` epochs; batches/s of each."""
    n_warm = sum(1 for _ in make_epoch(0))
    rates, batches, idx = [], 0, []
    for e in range(1, epochs + 1):
        t0, n = time.perf_counter(), 0
        for b in make_epoch(e):
            n += 1
            if e == 1 and n <= 64:
                idx.append(np.asarray(b["index"]))
        rates.append(n / (time.perf_counter() - t0))
        batches += n
    return {"warmup_batches": n_warm, "batches": batches, "rates": rates,
            "batches_per_s": statistics.median(rates), "index_sample": idx}


def run_loader(store: str, epochs: int, window_chunks: int) -> dict[str, Any]:
    import chunkstore

    ds = chunkstore.open(store)
    loader = ds.loader(batch_size=BATCH, shuffle=True, seed=0, window_chunks=window_chunks)

    def epoch(e: int) -> Any:
        loader.set_epoch(e)
        return iter(loader)

    out = timed_epochs(epoch, epochs)
    out["chunks_per_batch"] = mixing(out.pop("index_sample"), ds.chunk_rows)
    return out


def run_memmap(store: str, mm_dir: str, epochs: int) -> dict[str, Any]:
    import zarr

    arrays = {n: np.load(os.path.join(mm_dir, n.replace("/", "__") + ".npy"), mmap_mode="r")
              for n in array_names(store)}
    n_rows = len(arrays["features"])
    chunk_rows = zarr.open_array(store, path="features", mode="r").chunks[0]

    def epoch(e: int) -> Any:
        perm = np.random.default_rng(e).permutation(n_rows)
        for i in range(0, n_rows, BATCH):
            idx = perm[i:i + BATCH]
            batch = {n: a[idx] for n, a in arrays.items()}
            batch["index"] = idx
            yield batch

    out = timed_epochs(epoch, epochs)
    out["chunks_per_batch"] = mixing(out.pop("index_sample"), chunk_rows)
    return out


def run_oindex(store: str, batches: int) -> dict[str, Any]:
    import zarr

    g = zarr.open_group(store, mode="r")
    arrays = {n: g[n] for n in array_names(store)}
    n_rows = arrays["features"].shape[0]
    rng = np.random.default_rng(0)

    def batch() -> None:
        idx = np.sort(rng.choice(n_rows, BATCH, replace=False))  # zarr wants sorted rows
        for a in arrays.values():
            a.oindex[idx]

    batch()  # warm-up
    t0 = time.perf_counter()
    for _ in range(batches):
        batch()
    rate = batches / (time.perf_counter() - t0)
    return {"batches": batches, "rates": [rate], "batches_per_s": rate,
            "chunks_per_batch": float("nan")}


def run_torch(store: str, epochs: int, workers: int) -> dict[str, Any]:
    import torch
    from torch.utils.data import DataLoader

    from chunkstore.interop.torch import IterableDataset

    torch.set_num_threads(1)
    ds = IterableDataset(store, batch_size=BATCH, shuffle=True, seed=0)
    dl = DataLoader(ds, batch_size=None, num_workers=workers, persistent_workers=True)

    def epoch(e: int) -> Any:
        ds.set_epoch(e)  # persistent workers keep their copy: the order repeats, which is fine
        return iter(dl)

    out = timed_epochs(epoch, epochs)
    out["chunks_per_batch"] = mixing(out.pop("index_sample"), 1024)
    return out


def child(args: argparse.Namespace) -> int:
    method = args.method
    if method == "loader":
        out = run_loader(args.store, args.epochs, args.window_chunks)
    elif method == "memmap":
        out = run_memmap(args.store, args.memmap_dir, args.epochs)
    elif method == "oindex":
        out = run_oindex(args.store, args.oindex_batches)
    elif method == "torch":
        out = run_torch(args.store, args.epochs, args.workers)
    else:
        raise SystemExit(f"unknown method {method!r}")
    import resource

    me = resource.getrusage(resource.RUSAGE_SELF)
    out["self_cpu"] = me.ru_utime + me.ru_stime
    print(json.dumps(out))
    return 0


# --------------------------------------------------------------------------------------------
# setup: the store and the memmap files
# --------------------------------------------------------------------------------------------

def ensure_store(store: str, config: str, say: Any) -> None:
    import zarr

    try:
        status = zarr.open_group(store, mode="r").attrs["chunkstore"]["status"]
    except Exception:  # noqa: BLE001 - absent or not a store: build it
        status = "absent"
    if status != "complete":
        say(f"store {store} is {status}: running `chunkstore ingest {config}` (a few minutes)")
        subprocess.run([sys.executable, "-m", "chunkstore.cli", "ingest", config, "--quiet"],
                       cwd=REPO, check=True)


def ensure_memmap(store: str, mm_dir: str, say: Any) -> None:
    """One ``.npy`` per array of the store, written chunk range by chunk range."""
    import zarr

    os.makedirs(mm_dir, exist_ok=True)
    g = zarr.open_group(store, mode="r")
    stamp = os.path.join(mm_dir, "source.json")
    want = {"store": os.path.abspath(store), "created": g.attrs["chunkstore"]["created"]}
    if os.path.exists(stamp) and json.load(open(stamp)) == want:
        return
    say(f"writing the memmap baseline files to {mm_dir}")
    for name in array_names(store):
        a = g[name]
        path = os.path.join(mm_dir, name.replace("/", "__") + ".npy")
        m = np.lib.format.open_memmap(path + ".tmp", mode="w+", dtype=a.dtype, shape=a.shape)
        step = a.chunks[0] * 32
        for i in range(0, a.shape[0], step):
            m[i:i + step] = a[i:i + step]
        m.flush()
        del m
        os.replace(path + ".tmp", path)
    with open(stamp, "w") as fh:
        json.dump(want, fh)


# --------------------------------------------------------------------------------------------
# the parent: run each method measured, print and record the table
# --------------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--store", default=str(REPO / "data" / "large.zarr"))
    p.add_argument("--config", default=str(REPO / "configs" / "large.yaml"),
                   help="ingested to build --store when it is absent or incomplete")
    p.add_argument("--memmap-dir", default=str(HERE / "work" / "loader_memmap"))
    p.add_argument("--epochs", type=int, default=3, help="timed epochs after the warm-up one")
    p.add_argument("--oindex-batches", type=int, default=5)
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers for (d)")
    p.add_argument("--results", default=str(HERE / "RESULTS.md"))
    p.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md")
    p.add_argument("--max-wait", type=float, default=120.0,
                   help="seconds to wait for an idle machine before each method")
    p.add_argument("--method", help=argparse.SUPPRESS)
    p.add_argument("--window-chunks", type=int, default=8, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.method:
        return child(args)
    sys.path.insert(0, str(HERE))
    from common import (
        git_state,
        machine_info,
        markdown_table,
        mib,
        now_iso,
        package_versions,
        run_measured,
        write_section,
    )

    def say(msg: str) -> None:
        print(f"[bench_loader] {msg}", file=sys.stderr, flush=True)

    ensure_store(args.store, args.config, say)
    ensure_memmap(args.store, args.memmap_dir, say)
    base = [sys.executable, str(Path(__file__).resolve()), "--store", args.store,
            "--memmap-dir", args.memmap_dir, "--epochs", str(args.epochs),
            "--oindex-batches", str(args.oindex_batches), "--workers", str(args.workers)]
    methods = [
        ("(a) chunkstore loader, shuffle", ["--method", "loader"]),
        ("(a') loader, window_chunks=32", ["--method", "loader", "--window-chunks", "32"]),
        ("(b) numpy memmap, random gather", ["--method", "memmap"]),
        ("(c) zarr oindex, random rows", ["--method", "oindex"]),
        (f"(d) loader in torch DataLoader, {args.workers} workers", ["--method", "torch"]),
    ]
    load_before = os.getloadavg()
    results = {}
    for label, extra in methods:
        say(f"running {label}")
        # takes the benchmarks' shared measuring lock, then waits for an idle machine
        run = run_measured(base + extra, cwd=REPO, idle_wait=args.max_wait, log=say).check()
        out = json.loads(run.stdout.strip().splitlines()[-1])
        other = run.other_cpu_seconds / (run.wall_seconds * (os.cpu_count() or 1))
        results[label] = {"run": run, "out": out, "other": other}
        say(f"{label}: {out['batches_per_s']:,.1f} batches/s, peak RSS "
            f"{mib(run.peak_rss_total):,.0f} MiB, other load {other:.0%}")

    a, b, c = (results[m[0]]["out"]["batches_per_s"] for m in methods[:1] + methods[2:4])
    rows = []
    for label, _ in methods:
        r = results[label]
        bps = r["out"]["batches_per_s"]
        rows.append([label, f"{bps:,.1f}", f"{bps * BATCH:,.0f}",
                     f"{mib(r['run'].peak_rss_total):,.0f}", f"{bps / c:,.0f}x",
                     f"{bps / b:.2f}", f"{r['out']['chunks_per_batch']:.1f}",
                     f"{r['other']:.0%}"])
    table = markdown_table(["method", "batches/s", "rows/s", "peak RSS MiB", "vs (c)",
                            "vs (b)", "chunks/batch", "other load"], rows)
    verdict = markdown_table(["target", "measured", "wanted", "result"], [
        ["(a) batches/s", f"{a:,.0f}", f">= {TARGET_BPS:,.0f}",
         "PASS" if a >= TARGET_BPS else "MISS"],
        ["(a) / (c)", f"{a / c:,.0f}x", f">= {TARGET_VS_OINDEX:.0f}x",
         "PASS" if a / c >= TARGET_VS_OINDEX else "MISS"],
        ["(a) / (b)", f"{a / b:.2f}", f">= {TARGET_VS_MEMMAP:.2f}",
         "PASS" if a / b >= TARGET_VS_MEMMAP else "MISS"],
    ])
    print(table)
    print()
    print(verdict)
    if args.no_write:
        return 0
    m = machine_info()
    pk = package_versions(["numpy", "zarr", "numcodecs", "torch", "psutil"])
    cmd = "python benchmarks/bench_loader.py" + "".join(
        f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    body = f"""{TITLE}

Written by `benchmarks/bench_loader.py` on {now_iso()}; rerun it to update this section.

**Machine:** {m['nproc']} CPUs ({m['cpu_model']}), {m['ram_bytes'] / 2**30:.1f} GiB RAM, \
{m['os']}, Python {m['python']}. **Packages:** {', '.join(f'{k} {v}' for k, v in pk.items())}. \
**chunkstore:** {git_state(REPO, ['chunkstore'])}. **Load average before:** \
{' '.join(f'{x:.2f}' for x in load_before)}.

**Command:** `{cmd}`

**Data:** `{os.path.relpath(args.store, REPO)}`, 547,000 rows x 893 float32 features, 7 heads
(labels int16, masks int8, 206 mask columns), chunks of 1,024 rows, Blosc lz4 + bitshuffle +
crc32c. A batch = features + all 7 labels + all 7 masks of 256 rows.

{table}

{verdict}

How it was measured: each method runs in its own process after waiting (up to
{args.max_wait:.0f} s) for the machine to be idle; batches/s is the median of {args.epochs}
timed epochs after one warm-up epoch ((c): {args.oindex_batches} batches after one). *Peak RSS*
is the largest sum of RSS over the method's process tree (for (b) it includes the page-cached
file pages the memmap maps; for (d) the two worker processes). *Chunks/batch* is the mean
number of distinct 1,024-row chunks among a batch's rows (a uniform shuffle touches ~210).
*Other load* is the machine's busy CPU during the run not used by the method (a shared
machine: figures with high other load are pessimistic). See the script's docstring.
"""
    write_section(args.results, SECTION, body)
    say(f"wrote the {SECTION} section of {args.results}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
