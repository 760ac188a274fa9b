"""Growing a store: append 10% vs a full ingest of 110%; 20 x 1% appends vs one ingest (issue 15).

Run (full size; the lead runs it, not the tests):

    python -m benchmarks run grow                       # 547,000 rows
    python -m benchmarks run grow --rows 20000 --repeats 1 --idle-wait 0   # smoke run
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

from .. import fixtures
from ..harness import MIB, Context, info, target, tree_bytes

TITLE = "Append 10% vs ingest 110%; 20 x 1% appends vs one ingest (issue 15)"
DEFAULT_ROWS = 547_000
BATCH = 256
SMALL_APPENDS = 20
EPOCHS = 5  # timed loader epochs, after a warm-up epoch
ABOUT = f"""\
Input: the npz batch files of `configs/large.yaml`'s synthetic rows (500 rows a file). (a)
`chunkstore ingest` of all files (110%); (b) `chunkstore append` of the last 1/11 of the files
(10% of the first part) to a store of the first 10/11 (a hard-linked copy of a store ingested
once, untimed): cost proportional to the new rows is a ratio (b)/(a) <= 0.15. (c) a store of the
first {100 - SMALL_APPENDS}% of the files grown by {SMALL_APPENDS} appends of 1% each, vs (d) one
ingest of all files: bytes on disk (journal excluded) and loader batches/s
(`ds.loader(batch_size={BATCH}, shuffle=True)`, {EPOCHS} epochs after a warm-up epoch) within 5%."""


def _files(rows: int) -> list[str]:
    return sorted(str(p) for p in fixtures.npz_batches(rows).glob("*.npz"))


def _config(path: Path, store: Path, files: list[str]) -> Path:
    return fixtures.write_config(path, store, {"kind": "npz", "paths": files},
                                 ingest=fixtures.LARGE["ingest"])


def _cli(*args: Any) -> None:
    import sys

    subprocess.run([sys.executable, "-m", "chunkstore.cli", *map(str, args), "--quiet"],
                   check=True, stdout=subprocess.DEVNULL)


def _base(ctx: Context, name: str, files: list[str]) -> Path:
    """A store of ``files``, ingested once (untimed) under the case's work directory."""
    store = ctx.work / f"{name}-{ctx.rows}.zarr"
    done = ctx.work / f"{name}-{ctx.rows}.done"
    if not done.exists():
        subprocess.run(["rm", "-rf", str(store)], check=True)
        _cli("ingest", _config(ctx.work / f"{name}.yaml", store, files))
        done.write_text("ok")
    return store


def _copy(src: Path, dst: Path) -> Path:
    """A hard-linked copy: zarr and the journal replace files (rename), never edit them."""
    subprocess.run(["rm", "-rf", str(dst)], check=True)
    subprocess.run(["cp", "-al", str(src), str(dst)], check=True)
    return dst


def loader_step(store: str) -> dict[str, Any]:
    import chunkstore

    loader = chunkstore.open(store).loader(batch_size=BATCH, shuffle=True, seed=0)
    loader.set_epoch(0)
    for _ in loader:  # warm-up epoch
        pass
    t0, n = time.perf_counter(), 0
    for epoch in range(1, 1 + EPOCHS):  # one ~0.6 s epoch moved by 10-15% between runs
        loader.set_epoch(epoch)
        for _ in loader:
            n += 1
    return {"batches_per_s": n / (time.perf_counter() - t0), "batches": n}


def _many_small(ctx: Context, files: list[str]) -> Path:
    """The store grown by SMALL_APPENDS appends of 1% each (built once, untimed)."""
    store = ctx.work / f"small-appends-{ctx.rows}.zarr"
    done = ctx.work / f"small-appends-{ctx.rows}.done"
    if done.exists():
        return store
    per = max(1, len(files) // 100)
    first = len(files) - per * SMALL_APPENDS
    _copy(_base(ctx, "base80", files[:first]), store)
    for k in range(SMALL_APPENDS):
        part = files[first + k * per: first + (k + 1) * per if k < SMALL_APPENDS - 1 else None]
        _cli("append", _config(ctx.work / f"small-{k}.yaml", store, part))
    done.write_text("ok")
    return store


def run(ctx: Context) -> dict[str, Any]:
    files = _files(ctx.rows)
    first = round(len(files) * 10 / 11)
    base = _base(ctx, "base", files[:first])
    whole = ctx.work / "whole.zarr"
    grown = ctx.work / "grown.zarr"
    full_cfg = _config(ctx.work / "whole.yaml", whole, files)
    r = ctx.best({
        "ingest": lambda: ctx.cli("(a) ingest 110%", "ingest", full_cfg, "--quiet", clean=whole),
        "append": lambda: (_copy(base, grown), ctx.cli(
            "(b) append 10%", "append", _config(ctx.work / "tail.yaml", grown, files[first:]),
            "--quiet"))[1],
    })
    small = _many_small(ctx, files)
    one = _base(ctx, "one-ingest", files)
    lr = ctx.best({
        "small": lambda: ctx.step("(c) loader, 20 x 1% appends", "grow:loader_step",
                                  store=str(small)),
        "one": lambda: ctx.step("(d) loader, one ingest", "grow:loader_step", store=str(one)),
    }, key=lambda run: -run.result["batches_per_s"])
    bytes_small, bytes_one = tree_bytes(small), tree_bytes(one)
    rate_small = lr["small"].result["batches_per_s"]
    rate_one = lr["one"].result["batches_per_s"]
    rows = [{"method": "(a) ingest 110%", "wall s": r["ingest"].wall, **r["ingest"].fields()},
            {"method": "(b) append 10%", "wall s": r["append"].wall, **r["append"].fields()},
            {"method": "(c) 20 x 1% appends", "MiB on disk": bytes_small / MIB,
             "loader batches/s": rate_small},
            {"method": "(d) one ingest", "MiB on disk": bytes_one / MIB,
             "loader batches/s": rate_one}]
    return {"tables": [{"rows": rows}], "targets": [
        target("append 10% / ingest 110% (wall)", r["append"].wall / r["ingest"].wall, "<=", 0.15),
        target("bytes (c) / (d)", bytes_small / bytes_one, "<=", 1.05),
        target("loader batches/s (c) / (d)", rate_small / rate_one, ">=", 0.95),
        info("rows appended in (b)", float(sum(1 for _ in files[first:]) * 500), "{:,.0f}")]}
