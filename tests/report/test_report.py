"""chunkstore report: every plot is a non-empty PNG and index.html shows them with the summary."""

from __future__ import annotations

from pathlib import Path

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
