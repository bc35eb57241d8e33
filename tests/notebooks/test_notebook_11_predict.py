"""Notebook 11 (faces in a photo) runs headless with papermill on its defaults; the parameters cells of 01, 02, 10
and 11 parse under papermill (--help-notebook) without warnings; 02 says where a missing dataset goes."""
import ast
import logging
import shutil

import nbformat
import pytest

from ferlib.paths import data_dir, project_root

NB = project_root() / "notebooks"
ANNOTATED = ["01_prepare_data", "02_explore_data", "10_results", "11_predict"]


def parameters_cell(name):
    nb = nbformat.read(NB / f"{name}.ipynb", as_version=4)
    return next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))


def assigned_names(source: str) -> list[str]:
    names = []
    for node in ast.parse(source).body:
        if isinstance(node, ast.AnnAssign):
            names.append(node.target.id)
        elif isinstance(node, ast.Assign):
            names += [t.id for t in node.targets]
    return names


@pytest.mark.parametrize("name", ANNOTATED)
def test_parameters_cell_parses_without_warnings(name, caplog):
    from papermill.translators import PythonTranslator

    cell = parameters_cell(name)
    with caplog.at_level(logging.WARNING, logger="papermill"):
        params = PythonTranslator.inspect(cell)
    assert "Unable to parse" not in caplog.text, caplog.text
    assert [p.name for p in params] == assigned_names(cell.source)  # every parameter is seen, in order
    for p in params:
        assert p.inferred_type_name not in ("None", ""), p
        assert p.help and not p.help.startswith("type:"), p


def test_the_parse_check_can_fail(caplog):
    """The old form with '=' in its help line is dropped by papermill, with the warning the test looks for."""
    from papermill.translators import PythonTranslator

    cell = nbformat.v4.new_code_cell('data_root = None  # type: Optional[str]  (None = data/synthetic)\nseed = 0  # s')
    with caplog.at_level(logging.WARNING, logger="papermill"):
        params = PythonTranslator.inspect(cell)
    assert "Unable to parse" in caplog.text and [p.name for p in params] != assigned_names(cell.source)


def _execute(name, tmp_path, **params):
    from ferlib.notebooks import execute

    return nbformat.read(execute(NB / f"{name}.ipynb", params, output_dir=tmp_path), as_version=4)


def _text(nb) -> str:
    from ferlib.testing import notebook_text

    return notebook_text(nb)


@pytest.mark.slow
def test_02_missing_dataset_says_where_it_goes(tmp_path, monkeypatch):
    import papermill

    monkeypatch.setenv("FERLIB_DATA", str(tmp_path / "data"))
    with pytest.raises(papermill.PapermillExecutionError) as e:
        _execute("02_explore_data", tmp_path, dataset="rafdb")
    assert e.value.ename == "DataNotFoundError", (e.value.ename, e.value.evalue)
    assert str(tmp_path / "data" / "rafdb") in e.value.evalue and "data/README.md" in e.value.evalue


@pytest.mark.slow
def test_11_defaults_train_the_quickstart_model_and_classify_the_shipped_photo(tmp_path, monkeypatch):
    monkeypatch.setenv("FERLIB_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("FERLIB_RESULTS", str(tmp_path / "results"))
    src = data_dir() / "synthetic" / "rafdb"
    if (src / "synthetic.json").is_file():  # the project's generated set (else the notebook generates it)
        shutil.copytree(src, tmp_path / "data" / "synthetic" / "rafdb")
    nb = _execute("11_predict", tmp_path, max_steps=2)
    text = _text(nb)
    assert (tmp_path / "results" / "runs" / "quickstart" / "best.pt").is_file()
    assert "not a classifier of real expressions" in text
    assert "grace_hopper.jpg, 1 face(s)" in text  # the PhotoPrediction summary
    pngs = sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
    assert pngs >= 2  # the annotated photo and the probability bars
    assert "FileUpload" in text or any("application/vnd.jupyter.widget-view+json" in o.get("data", {})
                                       for c in nb.cells for o in c.get("outputs", []))


@pytest.mark.slow
def test_10_ends_with_released_checkpoints_reported_vs_measured(tmp_path, monkeypatch):
    import json

    import pandas as pd

    from ferlib.weights.registry import list_weights

    monkeypatch.setenv("FERLIB_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("FERLIB_RESULTS", str(tmp_path / "results"))
    (tmp_path / "results" / "released").mkdir(parents=True)
    (tmp_path / "results" / "released" / "emonet_rafdb_lam0.5_rafdb.json").write_text(
        json.dumps({"measured": 90.1, "n": 3068, "split": "test", "date": "2026-11-27 07:00:00"}))
    (tmp_path / "runs").mkdir()
    nb = _execute("10_results", tmp_path, runs_dir=str(tmp_path / "runs"), complexity_papers=[], cross_dataset=[])
    last = nb.cells[-1]
    assert "released_checkpoints_table()" in last.source and "90.1" in _text(nbformat.v4.new_notebook(cells=[last]))
    table = pd.read_csv(tmp_path / "results" / "tables" / "released_checkpoints.csv")
    assert set(table["weights"]) == set(list_weights(released=True))
    row = table[table.weights == "emonet_rafdb_lam0.5"].iloc[0]
    assert row.reported == 91.3 and row.measured == 90.1 and row.gap == pytest.approx(-1.2)
