"""Every notebook's parameters cell is in the form papermill parses: ``papermill --help-notebook`` lists
each parameter with its type and logs no "Unable to parse line" warning (which, at run time, turns into
"Passed unknown parameter" and reads as if the value were ignored)."""
import logging
from pathlib import Path

import papermill
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))


def parameter_lines(path: Path) -> list[str]:
    """The assignment lines of the cell tagged ``parameters`` (what a user can pass with ``-p``)."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"{path.name}: {len(cells)} cells tagged parameters"
    return [ln for ln in cells[0].source.splitlines() if "=" in ln and not ln.lstrip().startswith(("#", "from "))]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_help_notebook_lists_every_parameter_with_a_type_and_no_warning(path, caplog):
    from click.testing import CliRunner
    from papermill.cli import papermill as papermill_cli

    with caplog.at_level(logging.WARNING, logger="papermill"):
        params = papermill.inspect_notebook(str(path))
        shown = CliRunner().invoke(papermill_cli, ["--help-notebook", str(path)]).output
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warned == [], warned
    names = [ln.split("=")[0].split(":")[0].strip() for ln in parameter_lines(path)]
    assert list(params) == names  # none dropped by the parser
    untyped = [n for n, p in params.items() if p["inferred_type_name"] in ("None", "")]
    assert untyped == [], f"{path.name}: no type for {untyped}"
    for name, p in params.items():
        assert f"{name}: {p['inferred_type_name']}" in shown


def test_train_options_maps_the_shared_parameters_and_fills_the_run_name():
    from ferlib.engine import DataOptions, RunDirOptions
    from ferlib.notebooks import train_options

    namespace = {"__annotations__": {"dataset": str, "data_root": object, "epochs": object, "seed": int,
                                     "run_name": str, "feature_loss": object, "dry_run": bool, "resume": bool},
                 "dataset": "rafdb", "data_root": None, "epochs": 3, "seed": 1, "dry_run": True, "resume": True,
                 "run_name": "mfer_{dataset}_{feature_loss}", "feature_loss": None, "unrelated": 5}
    assert train_options(namespace, loss_kwargs={"feature_loss": "lgm"}) == {
        "epochs": 3, "seed": 1, "run": RunDirOptions(run_name="mfer_rafdb_none", resume=True),
        "data": DataOptions(data_root=None), "loss_kwargs": {"feature_loss": "lgm"}}


def test_train_options_leaves_out_switches_set_to_none():
    from ferlib.notebooks import train_options

    namespace = {"__annotations__": {"epochs": object}, "epochs": None}
    options = train_options(namespace, model_kwargs={"num_anchors": 10, "lam": None},
                            loss_kwargs={"lambda_anchor": None, "lambda_center": None})
    assert options == {"epochs": None, "model_kwargs": {"num_anchors": 10}}
    assert train_options(namespace, loss_kwargs={"lambda_center": 0.0}) == {
        "epochs": None, "loss_kwargs": {"lambda_center": 0.0}}
