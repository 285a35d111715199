"""Execute notebooks/quickstart.ipynb top to bottom (offline, SmolLM2, small token budget)."""

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"


@pytest.mark.smollm2
def test_quickstart_notebook_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("TL_UNLEARN_NB_TOKENS", "512")
    monkeypatch.setenv("TL_UNLEARN_NB_EXAMPLES", "24")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "top induction heads" in text and "max difference" in text
    assert "clean IOI logit diff" in text and "faithfulness" in text
    figures = [o for o in outputs if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert len(figures) >= 3
    assert os.environ.get("TL_UNLEARN_NB_TOKENS") == "512"
