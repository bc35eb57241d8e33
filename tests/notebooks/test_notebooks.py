"""Notebooks: stored clean (no outputs, a `parameters` cell first), and the quickstart runs under papermill."""
import json
import os
import re
from pathlib import Path

import nbformat
import pytest

from ferlib.testing import notebook_text

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_there_are_notebooks():
    assert any(p.name == "00_quickstart.ipynb" for p in NOTEBOOKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_without_outputs_and_with_parameters_cell(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code, "no code cells"
    assert "parameters" in code[0].get("metadata", {}).get("tags", []), "first code cell is not tagged 'parameters'"
    dirty = [i for i, c in enumerate(code) if c.get("outputs") or c.get("execution_count")]
    assert not dirty, f"code cells {dirty} carry outputs: clear them before committing"
    lines = [ln for c in code for ln in "".join(c["source"]).splitlines()]
    assert not any(ln.lstrip().startswith(("def ", "class ")) for ln in lines), "define functions in ferlib, not here"


@pytest.mark.slow
def test_quickstart_runs_headless(tmp_path, monkeypatch):
    papermill = pytest.importorskip("papermill")
    monkeypatch.setenv("FERLIB_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("FERLIB_RESULTS", str(tmp_path / "results"))
    out = tmp_path / "00.ipynb"
    papermill.execute_notebook(str(NOTEBOOKS[0]), str(out), parameters={"max_steps": 3}, kernel_name="python3",
                               cwd=str(NOTEBOOKS[0].parent), progress_bar=False)
    run = tmp_path / "results" / "runs" / "quickstart"
    for name in ("confusion.png", "confusion.svg", "tsne.png", "curves.png", "predictions.npz", "metrics.jsonl"):
        assert (run / name).stat().st_size > 0, name
    text = "".join(o.get("text", "") for c in nbformat.read(out, 4).cells if c.cell_type == "code" for o in c.outputs)
    assert "logistic regression on raw pixels" in text and "CNN test accuracy" in text
    # no warning a user cannot act on (issue 24): none in any output cell, stderr included
    shown = notebook_text(nbformat.read(out, 4))
    assert not re.search(r"\w*Warning\b|warnings\.warn", shown), re.findall(r".*Warning.*", shown)
