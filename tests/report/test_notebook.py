"""notebooks/explore.ipynb runs top to bottom in a real Jupyter kernel on a small store."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).parents[2] / "notebooks" / "explore.ipynb"
KERNEL = "chunkstore-test"


@pytest.fixture
def kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A kernelspec running this interpreter (the venv's), found through JUPYTER_PATH."""
    spec = tmp_path / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": KERNEL, "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    return KERNEL


@pytest.mark.slow
@pytest.mark.notebook
def test_notebook_runs_top_to_bottom(tmp_path, analysed_store, kernel, monkeypatch):
    monkeypatch.setenv("CHUNKSTORE_STORE", analysed_store)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # The first code cells use plain zarr only: no chunkstore import before part 2.
    first = [c.source for c in nb.cells if c.cell_type == "code"][:3]
    assert not any("import chunkstore" in s or "from chunkstore" in s for s in first)
    client = NotebookClient(nb, kernel_name=kernel, timeout=120, allow_errors=False,
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # a failing cell raises CellExecutionError
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "160 samples x 6 features, status complete" in text
    assert "splits/default:" in text and "top mutual information" in text
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 3  # distributions, correlation, class balance
