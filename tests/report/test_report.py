"""chunkstore report: every plot is a non-empty PNG and index.html shows them with the summary."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from chunkstore.cli import main
from chunkstore.report.plots import PLOTS, write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def store(analysed_store: str) -> str:
    return analysed_store


@pytest.mark.slow
def test_report_writes_every_plot_and_the_html_shows_them(store, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["report", store, "--out", str(out), "--features", "4"]) == 0
    assert "index.html" in capsys.readouterr().out
    page = (out / "index.html").read_text()
    for name in PLOTS:
        png = out / f"{name}.png"
        data = png.read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 1000, name
        assert f"src='{name}.png'" in page
    assert "Not drawn" not in page
    assert "status           complete" in page and "top MI move" in page


@pytest.mark.slow
def test_report_of_a_split_scope(store, tmp_path):
    summary = write_report(store, str(tmp_path / "r"), features=3, scope="train")
    assert [p.name for p in summary.plots] == list(PLOTS)
    assert all(p.file for p in summary.plots)


def test_report_skips_plots_whose_statistics_are_absent(ingested_store, tmp_path):
    store = ingested_store  # ingest only: moments, counts, correlation
    summary = write_report(store, str(tmp_path / "r"))
    skipped = {p.name: p.note for p in summary.plots if p.file is None}
    assert set(skipped) == {"distributions", "split_sizes", "mutual_info"}
    assert "chunkstore split" in skipped["split_sizes"]
    page = Path(summary.index).read_text()
    assert page.count("Not drawn:") == 3 and "src='class_balance.png'" in page
    assert (tmp_path / "r" / "correlation.png").read_bytes().startswith(PNG_SIGNATURE)


# ------------------------------------------------------- features-only stores (issue 19)

def test_report_of_a_store_without_heads(tmp_path):
    from chunkstore import ingest
    from chunkstore.stats.compute import compute_stats

    store = str(tmp_path / "s.zarr")
    ingest({"store": store, "schema": {"features": 5},  # heads omitted: features only
            "source": {"kind": "synthetic", "n_samples": 300, "seed": 1},
            "ingest": {"workers": 1, "chunk_rows": 64}}, progress=False)
    compute_stats(store, progress=False)
    summary = write_report(store, str(tmp_path / "r"), features=3)
    notes = {p.name: p.note for p in summary.plots if p.file is None}
    assert [p.name for p in summary.plots] == list(PLOTS)  # float features: no value_counts
    assert set(notes) == {"class_balance", "mask_coverage", "mutual_info", "split_sizes"}
    assert all("no heads" in notes[n] for n in ("class_balance", "mask_coverage",
                                                "mutual_info"))
    for name in ("distributions", "correlation"):
        assert (tmp_path / "r" / f"{name}.png").read_bytes().startswith(PNG_SIGNATURE)


def test_value_counts_figure_draws_the_rank_frequency(tmp_path):
    from chunkstore.report.plots import _pyplot, value_counts_figure

    plt = _pyplot()
    counts = np.bincount(np.random.default_rng(0).zipf(1.5, 5000) % 500, minlength=600)
    fig = value_counts_figure(plt, counts, "all")
    assert not isinstance(fig, str)
    assert fig.axes[1].get_title() == "top 20 values"
    fig.savefig(tmp_path / "v.png", dpi=60)
    plt.close(fig)
    assert (tmp_path / "v.png").read_bytes().startswith(PNG_SIGNATURE)
    assert "counts no values" in value_counts_figure(plt, np.zeros(4, np.int64), "train")
