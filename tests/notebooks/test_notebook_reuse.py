"""``make notebooks`` can run again (issue 24 point 7): a training notebook run a second time with the same
settings reuses the finished run (nothing retrained) and redraws its figures; with other settings it stops with
one line naming the setting and the choices, in the notebook and on the command line."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from ferlib.testing import notebook_text

ROOT = Path(__file__).resolve().parents[2]
LIGHT = {"max_steps": 2, "run_name": "nb05_twice", "batch_size": 8}


def _stamps(run: Path) -> dict:
    return {n: (run / n).stat().st_mtime_ns for n in ("best.pt", "last.pt", "metrics.jsonl", "summary.json",
                                                    "config.yaml", "predictions.npz")}


@pytest.mark.slow
def test_a_training_notebook_run_twice_retrains_nothing_the_second_time(tmp_path, monkeypatch):
    pytest.importorskip("papermill")
    from ferlib.notebooks import execute

    monkeypatch.setenv("FERLIB_RESULTS", str(tmp_path / "results"))
    run = tmp_path / "results" / "runs" / "nb05_twice"
    first = notebook_text(nbformat.read(execute("05_train_emonet", LIGHT, output_dir=tmp_path / "first"), 4))
    assert "already complete" not in first and "done: 1 epochs, 2 steps" in first
    assert not re.search(r"\w+Warning\b", first), re.findall(r".*Warning.*", first)  # nothing a user cannot act on
    before = _stamps(run)
    (run / "confusion.png").unlink()  # the second run draws the figures again

    second = notebook_text(nbformat.read(execute("05_train_emonet", LIGHT, output_dir=tmp_path / "second"), 4))
    assert f"already complete: reusing {run}" in second
    assert "done:" not in second and "epoch 1/" not in second  # no training output at all
    assert _stamps(run) == before  # nothing written by the engine
    assert (run / "confusion.png").stat().st_size > 0
    summary = json.loads((run / "summary.json").read_text())
    assert f"accuracy {summary['selected']['accuracy']:.4f}" in second
    assert not re.search(r"\w+Warning\b", second), re.findall(r".*Warning.*", second)

    # other settings: one line naming the setting and the choices, in the notebook ...
    import papermill

    with pytest.raises(papermill.PapermillExecutionError) as err:
        execute("05_train_emonet", {**LIGHT, "max_steps": 3}, output_dir=tmp_path / "third")
    assert err.value.ename == "RecipeChangedError"
    shown = err.value.traceback  # what the notebook's error output shows: the one line, no frames
    assert len(shown) == 1 and "Traceback" not in shown[0] and "File " not in shown[0]
    assert "max_steps: 2 in that run, 3 now" in shown[0]
    for choice in ("-p resume True", "-p overwrite True", "-p run_name"):
        assert choice in shown[0]
    assert _stamps(run) == before

    # ... and from python -m ferlib notebooks run (make notebooks): one error line, exit 2
    env = {**os.environ, "FERLIB_RESULTS": str(tmp_path / "results"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "ferlib", "notebooks", "run", "05_train_emonet", "-p", "max_steps", "1", "-p",
           "run_name", "nb05_twice", "-p", "batch_size", "8"]
    cli = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert cli.returncode == 2, cli.stderr[-2000:]
    assert "Traceback" not in cli.stderr
    last = cli.stderr.strip().splitlines()[-1]
    assert last.startswith("error: 05_train_emonet: RecipeChangedError: ") and "max_steps: 2 in that run, 1 now" in last
    assert _stamps(run) == before


def test_the_cli_lets_other_notebook_errors_keep_their_traceback():
    from ferlib.cli.notebooks import stopped_on_users_error

    class Stopped(Exception):
        def __init__(self, ename, evalue):
            super().__init__(evalue)
            self.ename, self.evalue = ename, evalue

    assert stopped_on_users_error(Stopped("RecipeChangedError", "x holds a finished run")) == (
        "RecipeChangedError: x holds a finished run")
    assert stopped_on_users_error(Stopped("ParameterError", "parameter epochs must be int")) is not None
    assert stopped_on_users_error(Stopped("ZeroDivisionError", "division by zero")) is None
    assert stopped_on_users_error(ValueError("no ename")) is None


def test_reuse_compares_the_settings_and_names_each_difference(tmp_path):
    """The comparison itself, on a config.yaml written by hand (no training)."""
    import yaml

    from ferlib.engine.policy import RecipeChangedError, UnfinishedRunError, decide
    from ferlib.engine.reuse import run_settings
    from ferlib.recipes import load_recipe

    def reusable_run(run_dir, settings, **kw):  # the finished run's summary when decide() reuses it, else None
        decision = decide(run_dir, reuse=settings, **kw)
        assert (decision.action == "reuse") == (decision.summary is not None)
        return decision.summary

    recipe = load_recipe("emonet", "synthetic")
    run = tmp_path / "run"
    run.mkdir()
    cfg = {"recipe": recipe.to_dict(), "fit": {"seed": 0, "max_steps": 4, "selected_on": "test_selected",
                                               "accumulate": 1, "ema": None, "eval_tta": False},
           "plan": {"start": []}}
    (run / "config.yaml").write_text(yaml.safe_dump(json.loads(json.dumps(cfg, default=str))))
    for name in ("best.pt", "last.pt", "predictions.npz"):
        (run / name).write_bytes(b"x")
    assert reusable_run(tmp_path / "empty", run_settings(recipe, (), 0, 4)) is None
    with pytest.raises(UnfinishedRunError, match="did not finish.*-p resume True"):
        reusable_run(run, run_settings(recipe, (), 0, 4))
    summary = {"epochs_run": 1, "epochs_planned": recipe.epochs, "steps_run": 4, "max_steps": 4, "selected": {}}
    (run / "summary.json").write_text(json.dumps(summary))
    assert reusable_run(run, run_settings(recipe, (), 0, 4)) == summary
    assert reusable_run(run, run_settings(recipe.replace(notes="reworded"), (), 0, 4)) == summary
    with pytest.raises(RecipeChangedError) as err:
        reusable_run(run, run_settings(recipe.replace(lr=0.5), (), 1, 4))
    msg = str(err.value)
    assert f"lr: {recipe.lr!r} in that run, 0.5 now" in msg and "seed: 0 in that run, 1 now" in msg
    assert "-p resume True" not in msg  # a resume refuses another learning rate: not offered
    assert err.value._render_traceback_() == [f"RecipeChangedError: {msg}"]
    assert reusable_run(run, run_settings(recipe.replace(lr=0.5), (), 0, 4), overwrite=True) is None
    assert decide(run, overwrite=True, reuse=run_settings(recipe.replace(lr=0.5), (), 0, 4)).remove == (
        "last.pt", "best.pt", "predictions.npz", "summary.json")
    (run / "summary.json").write_text(json.dumps({**summary, "stopped": True}))
    with pytest.raises(UnfinishedRunError):
        reusable_run(run, run_settings(recipe, (), 0, 4))


def test_executing_a_notebook_prints_no_kernel_warning(tmp_path):
    """make notebooks' terminal output: the kernel runs with CurveZMQ transport encryption (ferlib.notebooks
    .kernel_config), so ipykernel prints no "running over TCP without encryption" warning per notebook."""
    pytest.importorskip("papermill")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("print('hello from the kernel')")]
    nbformat.write(nb, tmp_path / "hello.ipynb")
    code = (f"from ferlib.notebooks import execute; execute({str(tmp_path / 'hello.ipynb')!r}, "
            f"output_dir={str(tmp_path / 'out')!r})")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "WARNING" not in proc.stderr and "without encryption" not in proc.stderr, proc.stderr
    out = nbformat.read(tmp_path / "out" / "hello.ipynb", 4)
    assert out.cells[0].outputs[0]["text"] == "hello from the kernel\n"
