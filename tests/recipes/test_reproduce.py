"""Reproduce by default: the literal command is the paper's run, from the paper's starting weights, in its
precision; smoke limits belong to the synthetic entries; missing weights stop a run before any data is read."""
import json
import subprocess
import sys
import warnings

import pytest
import torch

from ferlib.engine import training
from ferlib.engine.training import DataOptions, FromScratchWarning, RunDirOptions, train
from ferlib.recipes import list_recipes, load_card, load_recipe
from ferlib.testing import FIXTURES_DIR, _REPO, install_weights, reference_state
from ferlib.weights import WeightsNotFoundError

# Spawns processes or trains end to end: the slow tier, so that make test-fast stays quick.
pytestmark = pytest.mark.slow

RAF = FIXTURES_DIR / "rafdb" / "basic"
PAPERS = ("fermam", "mmfrm", "emonet", "grefel", "mfer")
#: The files each paper's RAF-DB run starts from (and the submodule each one loads into).
STARTS = {"fermam": {"ir50_ms1m": "ir_back", "mobilefacenet_landmark": "face_landback"},
          "mmfrm": {"mobilefacenet_landmark": "landmark"},
          "emonet": {"mobilenet_v2_imagenet": "(whole model)"},
          "grefel": {"ir50_ms1m": "vit.ir", "mobilefacenet_landmark": "vit.landmark"},
          "mfer": {}}


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty weights home and results folder: no starting-weights file is on this 'machine'."""
    monkeypatch.setenv("FERLIB_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FERLIB_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("FERLIB_RESULTS", str(tmp_path / "results"))
    return tmp_path / "home"


def _raf_counts():
    from ferlib.data import load_dataset

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return len(load_dataset("rafdb", RAF, "train")), len(load_dataset("rafdb", RAF, "test"))


@pytest.mark.parametrize("paper", PAPERS)
def test_dry_run_plans_the_papers_full_recipe(paper, home, tmp_path):
    card = load_recipe(paper, "rafdb")
    n_train, n_test = _raf_counts()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = train(paper, "rafdb", data=RAF, run=tmp_path / "run", dry_run=True)
    on_disk = json.loads((tmp_path / "run" / "plan.json").read_text())
    assert on_disk == json.loads(json.dumps(plan, default=str))
    assert (on_disk["model"], on_disk["dataset"]) == (card.model, "rafdb")
    assert (on_disk["epochs"], on_disk["batch_size"], on_disk["max_steps"]) == (card.epochs, card.batch_size, None)
    assert on_disk["precision"] == "fp32" and on_disk["eval_split"] == "test"
    assert (on_disk["train_images"], on_disk["eval_images"]) == (n_train, n_test)
    assert {r["entry"]: r["target"] for r in on_disk["pretrained"]} == STARTS[paper]
    assert all(r["found"] is False for r in on_disk["pretrained"])          # reported, not raised
    assert (on_disk["missing_weights"] is None) == (paper == "mfer")
    assert not (tmp_path / "run" / "config.yaml").exists()                  # nothing trained


@pytest.mark.parametrize("paper", [p for p in PAPERS if STARTS[p]])
def test_missing_weights_stop_the_run_before_any_data_is_read(paper, home, tmp_path, monkeypatch):
    def no_data(*a, **k):
        raise AssertionError("the data was read before the weights were checked")

    monkeypatch.setattr(training, "load_recipe_splits", no_data)
    with pytest.raises(WeightsNotFoundError) as err:
        train(paper, "rafdb", data=RAF, run=tmp_path / "run")
    msg = str(err.value)
    from ferlib.weights import get_weights

    for entry in STARTS[paper]:
        assert get_weights(entry).filename in msg and str(home / "pretrained") in msg
    assert "pretrained False" in msg and 'section "Pretrained weights"' in msg
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("paper", PAPERS)
def test_pretrained_false_starts_the_cards_training_with_a_warning(paper, home, tmp_path, monkeypatch):
    seen = {}

    def fake_fit(model, loss, recipe, train_ds, val_ds, run_dir, resume, options, callbacks, start, **kw):
        seen.update(recipe=recipe, options=options, start=start, n_eval=len(val_ds))
        run_dir.mkdir(parents=True, exist_ok=True)  # train() holds the run's lock inside it already
        return {"selected_on": options.selected_on}

    monkeypatch.setattr(training, "fit", fake_fit)
    monkeypatch.setattr(training, "create_model", lambda name, **kw: torch.nn.Linear(1, 1))
    with pytest.warns(FromScratchWarning, match="paper's number is not expected|not released"):
        train(paper, "rafdb", tmp_path / "run", DataOptions(RAF, cache=False), pretrained=False)
    card = load_recipe(paper, "rafdb")
    assert (seen["recipe"].epochs, seen["recipe"].batch_size) == (card.epochs, card.batch_size)
    assert seen["options"].max_steps is None and seen["options"].precision == "fp32" and seen["start"] == []
    assert seen["n_eval"] == _raf_counts()[1]


def test_real_dataset_entries_carry_no_smoke_limit_and_state_their_start():
    for paper in list_recipes():
        for dataset in load_card(paper)["datasets"]:
            r = load_recipe(paper, dataset)
            if dataset != "synthetic":
                assert r.max_steps is None, (paper, dataset)
            if paper in PAPERS and dataset != "synthetic":
                assert r.precision == "fp32" and r.pretrained_note, (paper, dataset)
                assert {i["weights"]: i["into"] or "(whole model)" for i in r.pretrained} == STARTS[paper]
    # the CPU demos bound their training by a subset of the data, not max_steps, so that they evaluate on the
    # whole test split (issue 24: >= 300 images, every class)
    assert all(load_recipe(p, "synthetic").max_steps is None for p in PAPERS)


def test_pretrained_true_loads_the_card_files_into_the_model_that_trains(home, tmp_path, monkeypatch):
    """EMO-Net's card start (torchvision's ImageNet MobileNetV2 layout) reaches the model train() fits; then
    load_run rebuilds the run from its checkpoint alone, after the file is gone."""
    import torchvision

    from ferlib.engine import load_run

    torch.manual_seed(5)
    tv = install_weights(monkeypatch, home, "mobilenet_v2_imagenet",
                         torchvision.models.mobilenet_v2(weights=None).state_dict())
    seen = {}
    real_fit = training.fit

    def spy(model, *a, **k):
        seen["w"] = model.features[0][0].weight.detach().clone()
        return real_fit(model, *a, **k)

    monkeypatch.setattr(training, "fit", spy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = train("emonet", "rafdb", tmp_path / "run", DataOptions(RAF, cache=False), pretrained=True, max_steps=1,
                    epochs=1, batch_size=8, progress=False, input_size=64,
                    transform_kwargs={"eval_resize": 72})
    torch.testing.assert_close(seen["w"], tv["features.0.0.weight"])
    assert res.summary["complete"] is False and res.summary["limited_by"][0] == "max_steps"
    config = (tmp_path / "run" / "config.yaml").read_text()
    assert "mobilenet_v2_imagenet" in config and "precision: fp32" in config
    (home / "pretrained" / "mobilenet_v2-b0353104.pth").unlink()
    model, recipe = load_run(tmp_path / "run")
    best = torch.load(tmp_path / "run" / "best.pt", weights_only=True)["model"]
    torch.testing.assert_close(model.state_dict()["features.0.0.weight"], best["features.0.0.weight"])


def test_load_run_of_a_run_with_backbone_starts_needs_no_file(home, tmp_path, monkeypatch):
    """MMFRM started from the landmark file: load_run must not look for it again."""
    from ferlib.engine import load_run

    install_weights(monkeypatch, home, "mobilefacenet_landmark",
                    reference_state("mobilefacenet_keys.txt", model="mobilefacenet"), wrap=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train("mmfrm", "rafdb", tmp_path / "run", DataOptions(RAF, cache=False), max_steps=1, epochs=1, batch_size=8,
              progress=False, input_size=32)
    (home / "pretrained" / "mobilefacenet_model_best.pth.tar").unlink()
    model, recipe = load_run(tmp_path / "run")
    assert recipe.pretrained[0]["weights"] == "mobilefacenet_landmark"
    best = torch.load(tmp_path / "run" / "best.pt", weights_only=True)["model"]
    torch.testing.assert_close(model.state_dict()["landmark.conv_23.conv.conv.weight"],
                               best["landmark.conv_23.conv.conv.weight"])


def test_cli_dry_run_and_one_line_errors(home, tmp_path):
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "ferlib", "train", "--model", "fermam", "--dataset", "rafdb", "--data-root", str(RAF),
           "--run-dir", str(tmp_path / "run")]
    dry = subprocess.run(cmd + ["--dry-run"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert "260 epochs" in dry.stdout and "MISSING" in dry.stdout and "fp32" in dry.stdout
    plan = json.loads((tmp_path / "run" / "plan.json").read_text())
    assert plan["epochs"] == 260 and plan["batch_size"] == 300 and plan["max_steps"] is None
    real = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert real.returncode == 2 and real.stderr.startswith("error: fermam on rafdb starts from pretrained weights")
    assert "Traceback" not in real.stderr and "ir50.pth" in real.stderr
    bad = subprocess.run(cmd + ["--epochs", "0"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert bad.returncode == 2 and "--epochs: must be at least 1" in bad.stderr


def test_cli_pretrained_values():
    from ferlib.cli.train import parse_pretrained

    assert parse_pretrained("card") == parse_pretrained("True") == "card"
    assert parse_pretrained("false") is False and parse_pretrained("none") is False
    assert parse_pretrained("emonet_rafdb_lam0.5") == "emonet_rafdb_lam0.5"


def test_a_fresh_run_never_replaces_a_previous_one_unless_asked(home, tmp_path):
    kw = dict(max_steps=1, epochs=1, progress=False, input_size=32, model_kwargs={"width": 8})
    train("baseline", "synthetic", tmp_path / "run", **kw)
    best = (tmp_path / "run" / "best.pt").read_bytes()
    from ferlib.engine.policy import RunExistsError

    with pytest.raises(RunExistsError, match="overwrite=True"):
        train("baseline", "synthetic", RunDirOptions(tmp_path / "run", resume=False), **kw)
    assert (tmp_path / "run" / "best.pt").read_bytes() == best
    train("baseline", "synthetic", RunDirOptions(tmp_path / "run", resume=False, overwrite=True), seed=1, **kw)
    assert (tmp_path / "run" / "best.pt").read_bytes() != best


@pytest.mark.slow
def test_notebook_dry_run_on_real_format_data_and_parameter_check(home, tmp_path):
    papermill = pytest.importorskip("papermill")
    from ferlib.notebooks import execute

    execute(_REPO / "notebooks" / "03_train_fermam.ipynb",
            dict(dataset="rafdb", data_root=str(RAF), dry_run=True, run_name="nb03dry"), output_dir=tmp_path)
    plan = json.loads((tmp_path / "results" / "runs" / "nb03dry" / "plan.json").read_text())
    assert (plan["epochs"], plan["batch_size"], plan["max_steps"], plan["precision"]) == (260, 300, None, "fp32")
    assert [r["entry"] for r in plan["pretrained"]] == ["ir50_ms1m", "mobilefacenet_landmark"]
    with pytest.raises(papermill.PapermillExecutionError, match="parameter epochs must be int or None"):
        execute(_REPO / "notebooks" / "05_train_emonet.ipynb", dict(epochs="abc"), output_dir=tmp_path / "b")


def test_check_parameters_reads_the_annotations():
    from typing import Optional, Union

    from ferlib.notebooks import ParameterError, check_parameters

    ns = {"__annotations__": {"epochs": Optional[int], "pretrained": Union[bool, str], "lr": float},
          "epochs": None, "pretrained": "card", "lr": 1}
    check_parameters(ns)
    for bad, match in (({"epochs": "abc"}, "epochs must be int or None"), ({"epochs": 0}, "epochs must be at least 1"),
                       ({"epochs": True}, "epochs must be int"), ({"pretrained": 3}, "pretrained must be bool or str")):
        with pytest.raises(ParameterError, match=match):
            check_parameters({**ns, **bad})


def test_imagefolder_trains_through_the_cli_with_a_base_recipe(home, tmp_path):
    tree = FIXTURES_DIR / "ferplus" / "imagefolder"
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "ferlib", "train", "--model", "emonet", "--dataset", "imagefolder", "--data-root",
           str(tree), "--base-recipe", "rafdb", "--pretrained", "false", "--max-steps", "1", "--epochs", "1",
           "--batch-size", "8", "--no-cache", "--run-dir", str(tmp_path / "run"), "--set", "input_size=32",
           "--set", "transform_kwargs.eval_resize=36"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    import yaml

    cfg = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    classes = sorted(p.name for p in (tree / "train").iterdir() if p.is_dir())
    assert cfg["recipe"]["base_recipe"] == "rafdb" and cfg["recipe"]["num_classes"] == len(classes)
    assert cfg["data"]["train"]["classes"] == classes
    assert cfg["recipe"]["lr"] == load_recipe("emonet", "rafdb").lr and cfg["recipe"]["reported"] == {}


def test_resume_never_restarts_silently_nor_mixes_recipes(home, tmp_path):
    from ferlib.engine.policy import ResumeError

    kw = dict(max_steps=1, epochs=1, progress=False, input_size=32, model_kwargs={"width": 8})
    with pytest.raises(ResumeError, match="holds no last.pt"):
        train("baseline", "synthetic", RunDirOptions(tmp_path / "none", resume="must"), **kw)
    assert not (tmp_path / "none").exists()
    train("baseline", "synthetic", run=tmp_path / "run", **kw)
    best = (tmp_path / "run" / "best.pt").read_bytes()
    with pytest.raises(ResumeError, match=r"another recipe \(lr: .* in the run, 0.5 now"):
        train("baseline", "synthetic", RunDirOptions(tmp_path / "run", resume="must"), lr=0.5, **kw)
    for name in ("last.pt", "last.pt.prev"):
        p = tmp_path / "run" / name
        if p.exists():
            p.write_bytes(p.read_bytes()[:100])       # truncated
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ResumeError, match="cannot resume .*unreadable.*Found: .*best.pt"):
            train("baseline", "synthetic", RunDirOptions(tmp_path / "run", resume="must"), **kw)
        with pytest.raises(ResumeError):                # 'auto' does not restart over a previous run either
            train("baseline", "synthetic", RunDirOptions(tmp_path / "run", resume="auto"), **kw)
    assert (tmp_path / "run" / "best.pt").read_bytes() == best


def test_cli_resume_into_nothing_is_one_line_error(home, tmp_path):
    from ferlib.cli.train import main

    with pytest.raises(SystemExit) as exit_:
        main(["--model", "baseline", "--dataset", "synthetic", "--run-dir", str(tmp_path / "x"), "--resume"])
    assert exit_.value.code == 2


@pytest.mark.parametrize("extra, message", [
    (["--set", "lr=abc"], "error: recipe field lr must be a number, got 'abc'"),
    (["--set", "input_size=0"], "error: recipe field input_size must be at least 8, got 0"),
    (["--set", "num_classes=3"], "error: rafdb: the data has 7 classes"),
    (["--device", "cuda"], "error: device 'cuda' asked for, but this machine has no CUDA device"),
    (["--precision", "fp16", "--device", "cpu"], "error: precision fp16 (with a GradScaler) needs a CUDA device"),
])
def test_cli_validates_options_before_training_in_one_line(extra, message, home, tmp_path, capsys):
    if "cuda" in extra and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    from ferlib.cli.train import main

    with pytest.raises(SystemExit) as exit_:
        main(["--model", "emonet", "--dataset", "rafdb", "--data-root", str(RAF), "--pretrained", "false",
              "--no-cache", "--run-dir", str(tmp_path / "run")] + extra)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and err[-1].startswith(message) and not any("Traceback" in e for e in err)
    assert not (tmp_path / "run" / "config.yaml").exists()


def test_a_synthetic_run_never_writes_into_a_users_data_folder(home, tmp_path):
    from ferlib.data import DataNotFoundError
    from ferlib.engine.training import load_split

    mine = tmp_path / "my_photos"
    mine.mkdir()
    (mine / "holiday.jpg").write_bytes(b"not touched")
    with pytest.raises(DataNotFoundError, match="not a ferlib synthetic set"):
        load_split(load_recipe("baseline", "synthetic"), "test", mine)
    assert sorted(p.name for p in mine.iterdir()) == ["holiday.jpg"]


def test_lost_or_damaged_metrics_never_change_the_selected_checkpoint(home, tmp_path):
    kw = dict(run=tmp_path / "run", epochs=2, progress=False, input_size=32, model_kwargs={"width": 8},
              dataset_kwargs={"n_train": 64, "n_test": 32})
    first = train("baseline", "synthetic", epochs=1, **{k: v for k, v in kw.items() if k != "epochs"})
    metrics = tmp_path / "run" / "metrics.jsonl"
    metrics.write_text(metrics.read_text() + "{not json\n")          # a damaged line
    with pytest.warns(UserWarning, match="dropped a damaged line"):
        res = train("baseline", "synthetic", **kw)                  # resumes (more epochs are allowed)
    best = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    assert res.summary["selected_epoch"] == best["state"]["best_epoch"]
    assert res.summary["selected"]["accuracy"] == pytest.approx(best["metrics"]["accuracy"])
    assert first.summary["epochs_run"] == 1 and res.summary["epochs_run"] == 2
