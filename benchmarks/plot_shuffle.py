"""The README's window/quality/memory plot: ``python -m benchmarks.plot_shuffle [OUT.png]``.

Builds the two synthetic stores of the ``shuffle`` case with one feature (the labels do not
depend on the feature count), computes the worst-segment ratio of distinct classes per batch
to a random permutation for each head and window size from the loader's plan (deterministic,
no decoding), and draws it against window_chunks with the decoded-window memory of the
default settings (1 + prefetch = 2 windows) for 893 float32 features on a second axis, and
marks the default window (224 MiB: 64 chunks of 893 float32 features). When ``results/shuffle.json``
exists, its measured batches/s are printed alongside.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from .cases.shuffle import BATCH, CHUNK
from .harness import BENCH

WINDOWS = [4, 8, 16, 32, 64, 128]
EPISODES = 200


def ratios(store: str) -> dict[str, list[float]]:
    import chunkstore
    from chunkstore.report.shuffle import SEGMENTS, shuffle_report

    ds = chunkstore.open(store)
    out: dict[str, list[float]] = {}
    for k in WINDOWS:
        worst: dict[str, float] = {}
        for epoch in range(3):
            r = shuffle_report(ds, batch_size=BATCH, epoch=epoch, decode=False, window_chunks=k)
            for h in r.loader.distinct_classes:
                low = min(r.ratio(h, s) for s in ["mean", *SEGMENTS])
                worst[h] = min(worst.get(h, 9.0), low)
        for h, v in worst.items():
            out.setdefault(h, []).append(v)
    return out


def build(tmp: Path, order: str) -> str:
    import chunkstore
    from chunkstore.testing import write_config, write_items
    from chunkstore.testing.episodes import HEADS, episode_items

    items = episode_items(EPISODES, CHUNK, n_features=1, order=order)
    cfg = write_config(tmp / f"{order}.yaml", store=tmp / f"{order}.zarr", n_features=1,
                       paths=write_items(tmp / order, items), heads=HEADS,
                       ingest={"chunk_rows": CHUNK})
    chunkstore.ingest(cfg, progress=False)
    return str(tmp / f"{order}.zarr")


def main(out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tmp = Path(tempfile.mkdtemp())
    curves = {order: ratios(build(tmp, order)) for order in ("episode", "class")}
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    styles = {"episode": "-", "class": "--"}
    for order, heads in curves.items():
        for h, ys in heads.items():
            label = f"{'class-sorted' if order == 'class' else 'episode'} store, {h}"
            ax.plot(WINDOWS, ys, styles[order], marker="o", label=label)
            print(order, h, " ".join(f"{k}:{y:.3f}" for k, y in zip(WINDOWS, ys, strict=True)))
    ax.axhline(0.95, color="grey", linestyle=":", label="5% bar")
    ax.set_xscale("log", base=2)
    ax.set_xticks(WINDOWS, [str(k) for k in WINDOWS])
    ax.set_xlabel("window_chunks")
    ax.set_ylabel("distinct classes per batch / random (worst segment)")
    chunk_mb = CHUNK * 893 * 4 / 2**20
    default = int(224 / chunk_mb)
    ax.axvline(default, color="black", linestyle="-.", alpha=0.5)
    ax.text(default * 1.04, 0.62, f"default: 224 MiB\n= {default} chunks of\n893 float32",
            fontsize=7, alpha=0.7)
    mem = ax.twinx()
    line = mem.plot(WINDOWS, [2 * k * chunk_mb for k in WINDOWS], color="black", alpha=0.35,
                    label="memory (right axis)")
    mem.set_ylabel("2 decoded windows, MiB (893 float32 features)", alpha=0.6)
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles + line, labels + ["memory, right axis"], fontsize=7, loc="lower right")
    ax.set_title(f"Shuffle quality vs window (batch {BATCH}, chunks of {CHUNK:,} rows)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    results = BENCH / "results" / "shuffle.json"
    if results.exists():
        for row in json.loads(results.read_text())["tables"][0]["rows"]:
            print(row["store"], row["window_chunks"], f"{row['batches/s']:.0f} batches/s")
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/img/shuffle_tradeoff.png")
