"""ferlib.run_dir: the run directory's one writer and reader (round trips, atomic writes, the one aggregator),
and train() writing config.yaml and summary.json once each, complete (tiny synthetic runs on CPU)."""
import json
import math
import os

import numpy as np
import pandas as pd
import pytest
import yaml

from ferlib import run_dir as R
from ferlib.run_dir import RunDir

TINY = dict(dataset_kwargs={"n_train": 48, "n_test": 24, "progress": False}, batch_size=16,
            model_kwargs={"width": 8}, input_size=32, progress=False)


def _no_temporaries(path):
    return [p.name for p in path.iterdir() if ".tmp" in p.name]


# ---------------------------------------------------------------------------------------------
# RunDir on its own
# ---------------------------------------------------------------------------------------------

def test_round_trips(tmp_path):
    rd = RunDir(tmp_path / "run")
    cfg = {"recipe": {"paper": "baseline", "mean": (0.5, 0.5, 0.5)}, "data": {"source": {"data_root": tmp_path}}}
    rd.write_config(cfg)
    assert rd.config() == {"recipe": {"paper": "baseline", "mean": [0.5, 0.5, 0.5]},
                           "data": {"source": {"data_root": str(tmp_path)}}}   # YAML-plain: tuples → lists, paths → str
    rd.start_metrics()
    rows = [{"epoch": 1, "step": 3, "eval_accuracy": 0.5}, {"epoch": 2, "step": 6, "eval_accuracy": 0.75}]
    for row in rows:
        rd.append_metrics(row)
    assert rd.metrics() == rows
    summary = {"epochs_run": 2, "selected": {"accuracy": 0.75}, "complete": True, "limited_by": []}
    rd.write_summary(summary)
    assert rd.summary() == summary
    logits, targets = np.arange(12, dtype=np.float32).reshape(4, 3), np.array([0, 1, 2, 1])
    feats = np.ones((4, 5), dtype=np.float32)
    rd.save_predictions({"logits": logits, "targets": targets, "features": feats}, ["a", "b", "c"])
    p = rd.predictions()
    np.testing.assert_array_equal(p["logits"], logits)
    np.testing.assert_array_equal(p["targets"], targets)
    np.testing.assert_array_equal(p["features"], feats)
    assert list(p["classes"]) == ["a", "b", "c"]
    rd.write_plan({"run_dir": tmp_path, "epochs": 3})
    assert json.loads((rd / R.PLAN).read_text()) == {"run_dir": str(tmp_path), "epochs": 3}
    assert sorted(rd.files) == sorted([R.METRICS, R.PREDICTIONS, R.SUMMARY])
    assert _no_temporaries(rd.path) == []


def test_writes_are_atomic_and_leave_no_temporary(tmp_path, monkeypatch):
    rd = RunDir(tmp_path)
    rd.write_summary({"epochs_run": 1})
    replaced = []
    real = os.replace

    def spy(src, dst):
        replaced.append((os.path.basename(src), os.path.basename(dst)))
        assert os.path.dirname(os.path.abspath(src)) == os.path.dirname(os.path.abspath(dst))  # same file system
        return real(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    rd.write_summary({"epochs_run": 2})
    rd.write_config({"a": 1})
    rd.save_predictions({"logits": np.zeros((1, 2)), "targets": np.zeros(1), "features": np.zeros((1, 2))}, ["x", "y"])
    assert [dst for _, dst in replaced] == [R.SUMMARY, R.CONFIG, R.PREDICTIONS]
    assert all(src != dst for src, dst in replaced)          # written elsewhere first, then renamed
    assert _no_temporaries(tmp_path) == []

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        rd.write_summary({"epochs_run": 3})
    assert rd.summary() == {"epochs_run": 2}                  # a failed write leaves the previous file whole


def test_metrics_reader_skips_a_damaged_line_and_truncate_keeps_seen_epochs(tmp_path):
    rd = RunDir(tmp_path)
    (tmp_path / R.METRICS).write_text('{"epoch": 1, "step": 2}\n{"epoch": 2, "st\n{"epoch": 3, "step": 6}\n')
    assert [r["epoch"] for r in rd.metrics()] == [1, 3]
    with pytest.warns(UserWarning, match="damaged line"):
        rd.truncate_metrics(2)
    assert rd.metrics() == [{"epoch": 1, "step": 2}]
    assert _no_temporaries(tmp_path) == []


def test_absent_files(tmp_path):
    rd = RunDir(tmp_path / "nothing")
    assert rd.config() == {} and rd.metrics() == [] and rd.files == []
    assert not rd.is_complete(1)
    with pytest.raises(FileNotFoundError, match="train the run first"):
        rd.predictions()
    with pytest.raises(FileNotFoundError):
        rd.summary()
    assert R.find_runs(tmp_path / "nothing") == []


def test_is_complete_and_find_runs(tmp_path):
    a, b, c = (RunDir(tmp_path / n) for n in ("a", "sub/b", "c"))
    a.write_summary({"epochs_run": 2, "steps": 5})
    a.write_config({})
    b.write_summary({"epochs_run": 1, "steps": 9})
    b.write_config({})
    c.write_summary({"epochs_run": 2})                         # no config.yaml: not a run
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / R.SUMMARY).write_text("{broken")
    assert R.find_runs(tmp_path) == [a.path, b.path]
    assert a.is_complete(2) and not a.is_complete(3) and a.is_complete(3, max_steps=5)
    assert not a.is_complete(3, max_steps=6) and not RunDir(tmp_path / "d").is_complete(1)


def test_summarise_labels_the_split_and_respects_select_from_epoch(tmp_path):
    rd = RunDir(tmp_path)
    assert rd.summarise("accuracy", "val") == {"selected_on": "val"}     # no epoch yet
    for e, acc in enumerate((0.9, 0.5, 0.7), 1):
        rd.append_metrics({"epoch": e, "step": 2 * e, "eval_accuracy": acc})
    s = rd.summarise("accuracy", "val", select_from_epoch=2)
    assert s["selected_epoch"] == 3 and s["val_selected"] == {"accuracy": 0.7} and s["val_last"] == {"accuracy": 0.7}
    assert rd.summarise("accuracy")["test_selected"] == {"accuracy": 0.9}


# ---------------------------------------------------------------------------------------------
# The one aggregator
# ---------------------------------------------------------------------------------------------

def test_aggregate_against_hand_computed_mean_and_std():
    runs = pd.DataFrame({"paper": ["p", "p", "p", "q"], "variant": ["card"] * 4, "seed": [0, 1, 2, 0],
                         "acc": [0.85, 0.80, 0.75, 0.6], "other": [np.nan] * 4, "smoke": [False, True, False, False]})
    t = R.aggregate(runs, ("paper", "variant", "missing_key"), ("acc", "other"), any_of=("smoke",))
    assert list(t.columns) == ["paper", "variant", "n_seeds", "smoke", "acc_mean", "acc_std", "acc",
                               "other_mean", "other_std", "other"]
    p = t.set_index("paper")
    mean = (0.85 + 0.80 + 0.75) / 3
    std = math.sqrt(sum((x - mean) ** 2 for x in (0.85, 0.80, 0.75)) / 2)   # sample std, ddof 1
    assert p.loc["p", "acc_mean"] == pytest.approx(mean) and p.loc["p", "acc_std"] == pytest.approx(std)
    assert p.loc["p", "acc"] == "0.8000 ± 0.0500" and p.loc["p", "n_seeds"] == 3 and p.loc["p", "smoke"]
    assert math.isnan(p.loc["q", "acc_std"]) and p.loc["q", "acc"] == "0.6000" and not p.loc["q", "smoke"]
    dropped = R.aggregate(runs, ("paper",), ("acc", "other", "absent"), drop_empty=True)
    assert "other_mean" not in dropped and "absent" not in dropped and "acc" in dropped


def test_aggregate_order_first_appearance_or_sorted():
    runs = pd.DataFrame({"v": ["b", "a", "b"], "acc": [0.1, 0.2, 0.3]})
    assert list(R.aggregate(runs, ("v",), ("acc",))["v"]) == ["b", "a"]
    assert list(R.aggregate(runs, ("v",), ("acc",), sort=True)["v"]) == ["a", "b"]


def test_tables_and_ablations_share_the_aggregator(monkeypatch):
    from ferlib import ablations, tables

    calls = []
    real = R.aggregate
    monkeypatch.setattr(R, "aggregate", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    monkeypatch.setattr(tables, "aggregate", R.aggregate)
    runs = pd.DataFrame({"sweep": ["s"], "paper": ["p"], "variant": ["v"], "accuracy_last": [0.5]})
    ablations.sweep_table(runs)
    table = pd.DataFrame({"paper": ["p"], "dataset": ["d"], "data": [""], "variant": ["card"], "epochs": [1],
                          "precision": ["fp32"], "status": ["smoke"], "accuracy_last": [0.5],
                          "accuracy_test_selected": [0.6], "accuracy_val_selected": [np.nan],
                          "mean_class_accuracy": [0.4]})
    out = tables.summary_table(table)
    assert len(calls) == 2 and bool(out["partial"].item()) and out["accuracy_test_selected"].item() == "0.6000"


# ---------------------------------------------------------------------------------------------
# train() writes each file once, complete
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def syn_root(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


@pytest.fixture
def writes(monkeypatch):
    """Counts RunDir's whole-file writes by file name, and checks config.yaml is complete when first written."""
    counts = {}
    real_config, real_summary = RunDir.write_config, RunDir.write_summary

    def config(self, cfg):
        counts[R.CONFIG] = counts.get(R.CONFIG, 0) + 1
        assert "source" in cfg["data"], "config.yaml written without data.source"
        return real_config(self, cfg)

    def summary(self, s):
        counts[R.SUMMARY] = counts.get(R.SUMMARY, 0) + 1
        return real_summary(self, s)

    monkeypatch.setattr(RunDir, "write_config", config)
    monkeypatch.setattr(RunDir, "write_summary", summary)
    return counts


def test_train_writes_config_and_summary_once(syn_root, tmp_path, writes):
    from ferlib.engine import train

    run = train("baseline", "synthetic", data=syn_root, run=tmp_path / "r", epochs=1, **TINY)
    assert writes == {R.CONFIG: 1, R.SUMMARY: 1}
    cfg = RunDir(run.run_dir).config()
    assert cfg["data"]["source"] == {"data_root": str(syn_root.resolve()), "cache": "auto"}
    on_disk = RunDir(run.run_dir).summary()
    assert on_disk == json.loads(json.dumps(run.summary))          # what train returns is what it wrote
    # fewer epochs than the card: not the paper's run, recorded in the one write
    assert on_disk["complete"] is False and on_disk["limited_by"][0].startswith("epochs 1 < the card's")
    assert on_disk["selected_on"] == "test_selected" and "test_at_val_selected" not in on_disk
    assert _no_temporaries(run.run_dir) == []

    writes.clear()
    again = train("baseline", "synthetic", data=syn_root, run=tmp_path / "r", epochs=1, **TINY)
    assert writes == {R.SUMMARY: 1}                                 # resumed (already complete): config.yaml stands
    assert again.summary["limited_by"] == on_disk["limited_by"]
    assert yaml.safe_load((run.run_dir / R.CONFIG).read_text()) == cfg


def test_validation_holdout_tests_best_before_the_one_summary_write(syn_root, tmp_path, writes):
    from ferlib.engine import DataOptions, train
    from ferlib.engine.checkpoint import load_checkpoint

    run = train("baseline", "synthetic", tmp_path / "v", DataOptions(syn_root, val_fraction=0.25), epochs=1,
                **TINY)
    assert writes == {R.CONFIG: 1, R.SUMMARY: 1}
    s = RunDir(run.run_dir).summary()
    assert s["selected_on"] == "val" and "val_selected" in s and "test_selected" not in s
    tav = s["test_at_val_selected"]
    assert tav["n"] == 24 and tav == json.loads(json.dumps(run.summary["test_at_val_selected"]))
    p = RunDir(run.run_dir).predictions()                            # predictions.npz: best.pt on the test split
    assert p["logits"].shape == (24, 7)
    acc = float((p["logits"].argmax(1) == p["targets"]).mean())
    assert acc == pytest.approx(tav["accuracy"])
    held_out = RunDir(run.run_dir).config()["data"]["eval"]["n"]
    assert held_out < 48 and load_checkpoint(run.run_dir / "best.pt")["metrics"]["n"] == held_out


def test_evaluation_and_ablation_records_round_trip_atomically(tmp_path):
    from ferlib.run_dir import RunDir

    rd = RunDir(tmp_path / "run")
    assert rd.evaluation("test") == {} and rd.ablation_spec() == {}
    rd.write_evaluation("test_tta", {"accuracy": 0.75, "classes": ("a", "b")})
    rd.write_ablation_spec({"digest": "abc123", "seed": 1})
    assert rd.evaluation("test_tta") == {"accuracy": 0.75, "classes": ["a", "b"]}
    assert rd.ablation_spec() == {"digest": "abc123", "seed": 1}
    (rd / "ablation.json").write_text('{"digest": "abc')  # damaged: the grid entry is run afresh, not an error
    assert rd.ablation_spec() == {}
    assert sorted(p.name for p in rd.path.iterdir()) == ["ablation.json", "eval_test_tta.json"]
