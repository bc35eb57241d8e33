"""Notebooks 01 (prepare) and 02 (explore) run headless with papermill: synthetic default and AffectNet fixture."""
import json
import re
from pathlib import Path

import nbformat
import pytest

from ferlib.paths import project_root
from ferlib.testing import FIXTURES_DIR

NB = project_root() / "notebooks"


@pytest.mark.parametrize("name", ["01_prepare_data", "02_explore_data"])
def test_stored_without_outputs_and_tagged(name):
    nb = nbformat.read(NB / f"{name}.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", [])
    assert all(not c.outputs and c.execution_count is None for c in code)
    assert not any("def " in c.source for c in code)
    assigned = [line for line in code[0].source.splitlines() if " = " in line]
    assert assigned and all(re.match(r"^\w+: [\w\[\], ]+ = .+  # \S", line) for line in assigned)  # annotated, with help


def _run(name, tmp_path, **params):
    import papermill

    out = tmp_path / f"{name}.out.ipynb"
    papermill.execute_notebook(str(NB / f"{name}.ipynb"), str(out), parameters=params, kernel_name="python3",
                               cwd=str(tmp_path), progress_bar=False)
    return nbformat.read(out, as_version=4)


def _text(nb) -> str:
    from ferlib.testing import notebook_text

    return notebook_text(nb)


def _images(nb) -> int:
    return sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))


@pytest.mark.slow
def test_01_default_synthetic(tmp_path):
    nb = _run("01_prepare_data", tmp_path, cache_dir=str(tmp_path / "cache"))
    text = _text(nb)
    assert "synthetic" in text and "nothing skipped" in text
    assert len(list((tmp_path / "cache").glob("rafdb-*-s112-*/images.npy"))) == 2


@pytest.mark.slow
def test_01_affectnet_fixture(tmp_path):
    nb = _run("01_prepare_data", tmp_path, dataset="affectnet", data_root=str(FIXTURES_DIR / "affectnet"),
              size=64, cache_dir=str(tmp_path / "cache"))
    text = _text(nb)
    assert "layout 'csv'" in text
    assert "code 8-10" in text and "missing" in text
    idx = [json.loads((p / "index.json").read_text()) for p in (tmp_path / "cache").glob("affectnet-*")]
    assert sorted(i["n"] for i in idx) == [23, 24]


@pytest.mark.slow
def test_02_default_synthetic(tmp_path):
    nb = _run("02_explore_data", tmp_path, per_class=3)
    assert _images(nb) >= 3  # balance bars, sample grid, static browser view
    assert "VBox" in _text(nb) or any("application/vnd.jupyter.widget-view+json" in o.get("data", {})
                                      for c in nb.cells for o in c.get("outputs", []))


@pytest.mark.slow
def test_02_affectnet_fixture(tmp_path):
    nb = _run("02_explore_data", tmp_path, dataset="affectnet", data_root=str(FIXTURES_DIR / "affectnet"),
              per_class=2)
    text = _text(nb)
    assert _images(nb) >= 3
    # the class-balance table's last row: the fixture's 24 train and 23 validation images after the skips
    assert re.search(r"^total\s+24\s+23\b", text, re.M), text[:2000]
