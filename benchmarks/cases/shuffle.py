"""Shuffle quality vs window size, speed and memory (issue 18 item 3)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .. import fixtures
from ..harness import CODE, Context

TITLE = "Loader shuffle quality vs window_chunks: ratio to a random permutation, speed, memory"
DEFAULT_ROWS = 204_800
BATCH, CHUNK, FEATURES = 256, 1024, 128
WINDOWS = [None, 8, 16, 32, 64]  # None: the default, a window sized by bytes
ABOUT = f"""\
Two synthetic stores of `rows` rows x {FEATURES} float32 features in chunks of {CHUNK:,} rows
(`chunkstore.testing.episodes`): **episode** -- rows ordered by episode (~one chunk each,
lognormal lengths); `action` (12 classes) held for runs of ~64 rows, `outcome` (2 classes) and
`map` (12 classes) constant per episode; **class-sorted** -- the same rows sorted by `action`
(the worst case). Ratio = the loader's distinct classes per batch of {BATCH} over a seeded
random permutation's, worst of the epoch's mean and its first, middle and last 10%, min over
epochs 0-2 (1.00 = as random; the bar is 0.95). Ratios come from the epoch's plan
(`shuffle_report(decode=False)`, the elastic order); batches/s and peak RSS from one
process iterating 2 epochs of `ds.loader(batch_size={BATCH}, window_chunks=K)` (defaults
otherwise: threads 2, prefetch 1), after one warm-up epoch. "default" is `window_chunks=None`:
as many chunks as fit 224 MiB of decoded features (the whole store here: {FEATURES} features
are 0.5 MiB a chunk)."""


def build(rows: int, order: str) -> Path:
    def make(tmp: Path) -> None:
        script = (
            "import sys; from pathlib import Path; import chunkstore\n"
            "from chunkstore.testing import write_config, write_items\n"
            "from chunkstore.testing.episodes import HEADS, episode_items\n"
            "tmp, rows, order = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]\n"
            f"items = episode_items(max(1, rows // {CHUNK}), {CHUNK}, n_features={FEATURES},"
            " order=order)\n"
            "cfg = write_config(tmp / 'c.yaml', store=tmp / 'store.zarr', paths=write_items("
            f"tmp / 'b', items), n_features={FEATURES}, heads=HEADS, ingest={{'chunk_rows': "
            f"{CHUNK}, 'workers': 2}})\n"
            "if __name__ == '__main__':\n"
            "    chunkstore.ingest(cfg, progress=False)\n")
        (tmp / "build.py").write_text(script)
        subprocess.run([sys.executable, str(tmp / "build.py"), str(tmp), str(rows), order],
                       cwd=CODE[0], check=True)

    return fixtures.cached(f"shuffle-{order}-{rows}", make) / "store.zarr"


def step(store: str, window_chunks: int | None, epochs: int) -> dict[str, Any]:
    import chunkstore

    loader = chunkstore.open(store).loader(batch_size=BATCH, window_chunks=window_chunks)
    sum(1 for _ in loader)  # warm-up
    t0, k = time.perf_counter(), 0
    for e in range(1, epochs + 1):
        loader.set_epoch(e)
        k += sum(1 for _ in loader)
    return {"batches_per_s": k / (time.perf_counter() - t0)}


def quality(store: Path, window_chunks: int | None) -> dict[str, float]:
    import chunkstore
    from chunkstore.report.shuffle import SEGMENTS, shuffle_report

    ds = chunkstore.open(str(store))
    worst: dict[str, float] = {}
    for epoch in range(3):
        r = shuffle_report(ds, batch_size=BATCH, epoch=epoch, decode=False,
                           window_chunks=window_chunks)
        for h in r.loader.distinct_classes:
            low = min(r.ratio(h, k) for k in ["mean", *SEGMENTS])
            worst[h] = min(worst.get(h, 1e9), low)
    return worst


def run(ctx: Context) -> dict[str, Any]:
    rows, epochs = [], 1 if ctx.smoke else 2
    for order in ("episode", "class"):
        store = build(ctx.rows, order)
        for k in WINDOWS:
            q = quality(store, k)
            r = ctx.best({"loader": lambda k=k, store=store, order=order: ctx.step(
                f"{order} window {k}", "shuffle:step", store=str(store), window_chunks=k,
                epochs=epochs)}, key=lambda r: -r.result["batches_per_s"])["loader"]
            rows.append({"store": "episode" if order == "episode" else "class-sorted",
                         "window_chunks": "default" if k is None else k,
                         "action ratio": q["action"],
                         "outcome ratio": q["outcome"], "map ratio": q["map"],
                         "meets 0.95": all(v >= 0.95 for v in q.values()),
                         "batches/s": r.result["batches_per_s"], **r.fields("process")})
    return {"tables": [{"rows": rows}], "targets": [],
            "notes": ["memory grows linearly with the window: 1 + prefetch decoded windows "
                      "(features; labels and masks are kept decoded whole) plus a few batches"]}
