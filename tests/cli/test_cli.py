"""`python -m ferlib train` and `python -m ferlib evaluate` (in-process main(); tiny synthetic runs)."""
import json

import numpy as np
import pytest

from ferlib.cli import evaluate as evaluate_cli
from ferlib.cli import train as train_cli

TINY_SET = ["--set", "input_size=32", "--set", "model_kwargs.width=8",
            "--set", "dataset_kwargs={n_train: 48, n_test: 24, progress: false}"]


def test_help_describes_every_option():
    text = train_cli.build_parser().format_help()
    for flag in ("--model", "--dataset", "--data-root", "--recipe", "--epochs", "--batch-size", "--max-steps",
                 "--run-dir", "--seed", "--deterministic", "--resume", "--checkpoint-every-steps", "--device",
                 "--val-fraction", "--compile", "--precision", "--accumulate", "--set", "--cache", "--ema"):
        assert flag in text, flag
    assert all(a.help for a in train_cli.build_parser()._actions)
    text = evaluate_cli.build_parser().format_help()
    for flag in ("--run-dir", "--split", "--tta", "--checkpoint"):
        assert flag in text, flag


def test_set_parses_yaml_values_and_dotted_keys():
    got = train_cli.parse_set(["lr=1e-4", "model_kwargs.width=8", "train_transforms=[hflip]", "sam=true",
                               "model_kwargs.lam=0.5", "schedule=null"])
    assert got == {"lr": 1e-4, "model_kwargs": {"width": 8, "lam": 0.5}, "train_transforms": ["hflip"],
                   "sam": True, "schedule": None}
    with pytest.raises(SystemExit, match="key=value"):
        train_cli.parse_set(["lr"])


def test_train_then_evaluate_reproduces_the_selected_metrics(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert train_cli.main(["--model", "baseline", "--dataset", "synthetic", "--data-root", str(tmp_path / "d"),
                           "--epochs", "2", "--batch-size", "16", "--run-dir", str(run_dir), "--device", "cpu",
                           "--cache", str(tmp_path / "cache"), "--no-progress", *TINY_SET]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    summary = json.loads((run_dir / "summary.json").read_text())
    assert line["selected_on"] == summary["selected_on"] == "test_selected"
    assert summary["test_selected"]["accuracy"] == line["metrics"]["accuracy"]
    assert list((tmp_path / "cache").iterdir()), "--cache built no cache"
    assert evaluate_cli.main(["--run-dir", str(run_dir), "--device", "cpu", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "confusion matrix" in out and "macro avg" in out
    ev = json.loads((run_dir / "eval_test.json").read_text())
    for k in ("accuracy", "mean_class_accuracy", "macro_f1", "n"):
        assert ev[k] == pytest.approx(summary["test_selected"][k]), k
    assert np.array(ev["confusion_matrix"]).sum() == 24
    with np.load(run_dir / "predictions.npz") as a, np.load(run_dir / "predictions_test.npz") as b:
        np.testing.assert_allclose(a["logits"], b["logits"], rtol=1e-5, atol=1e-6)
        assert (a["targets"] == b["targets"]).all() and list(a["classes"]) == list(b["classes"])
    evaluate_cli.main(["--run-dir", str(run_dir), "--device", "cpu", "--no-progress", "--tta"])
    tta = json.loads((run_dir / "eval_test_tta.json").read_text())
    assert tta["tta"] is True and tta["n"] == 24
    with np.load(run_dir / "predictions_test_tta.npz") as b, np.load(run_dir / "predictions.npz") as a:
        assert not np.allclose(a["logits"], b["logits"])  # the flip changed something


def test_demo_names_the_data_folder_it_uses(tmp_path, monkeypatch, capsys):
    # FERLIB_DATA moves the synthetic set; the demo's first line must say where it is, not "data/synthetic/"
    import ferlib.data
    import ferlib.notebooks
    from ferlib.cli import demo

    monkeypatch.setenv("FERLIB_DATA", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("FERLIB_RESULTS", str(tmp_path / "results"))
    monkeypatch.setattr(ferlib.data, "load_dataset", lambda *a, **k: None)
    monkeypatch.setattr(ferlib.notebooks, "execute", lambda name: tmp_path / f"{name}.ipynb")
    assert demo.main([]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first == f"the synthetic RAF-DB-format set: {tmp_path / 'elsewhere' / 'synthetic'} (generated on the first run only) ..."
