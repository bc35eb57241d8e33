"""ferlib.ablations: presets, option checks, skip-when-complete, mean ± std over seeds."""
import json
import math

import pandas as pd
import pytest

from ferlib import ablations as A

TINY = {"n_train": 96, "n_test": 48, "progress": False}
LS_GRID = {"paper": "baseline", "name": "ls", "axis": "label smoothing",
           "variants": {"ls=0": {"loss_kwargs": {"label_smoothing": 0.0}},
                        "ls=0.1": {"loss_kwargs": {"label_smoothing": 0.1}}}}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


@pytest.fixture
def env(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("FERLIB_DATA", str(data_dir))
    monkeypatch.setenv("FERLIB_RESULTS", str(tmp_path / "results"))
    return tmp_path / "results"


def test_presets_cover_the_issue():
    lam = [v.value for v in A.PRESETS["emonet_lambda"].variants]
    assert min(lam) == 0.3 and max(lam) == 0.8 and 0.5 in lam and 0.6 in lam
    assert all(v.overrides == {"model_kwargs": {"lam": v.value}} for v in A.PRESETS["emonet_lambda"].variants)
    assert [v.label for v in A.PRESETS["mmfrm_rfloss"].variants] == ["off", "as_coded", "intended"]
    assert [v.overrides["loss_kwargs"]["feature_loss"] for v in A.PRESETS["mfer_feature_loss"].variants] == [None, "lgm", "dsf"]
    g = {v.label: v.overrides for v in A.PRESETS["grefel_losses"].variants}
    assert g["ce_only"] == {"loss_kwargs": {"lambda_anchor": 0.0, "lambda_center": 0.0}}
    assert g["anchors=5"] == {"model_kwargs": {"num_anchors": 5}}
    ls = A.PRESETS["fermam_label_smoothing"].variants
    assert {"lsce_weight", "smoothing"} <= {k for v in ls for k in v.overrides.get("loss_kwargs", {})}
    assert set(A.GROUPS["all"]) == set(A.PRESETS)


def test_every_preset_expands():
    entries, skipped = A.expand("all", "synthetic", seeds=[0, 1])
    n_variants = sum(len(s.variants) for s in A.PRESETS.values())
    assert skipped == [] and len(entries) == 2 * n_variants   # every preset option exists in its model
    assert {e.seed for e in entries} == {0, 1}


def test_missing_options_are_skipped_with_a_note():
    sweep = A.Sweep("t", "emonet", (A.Variant("ok", {"model_kwargs": {"lam": 0.5}}),
                                    A.Variant("bogus", {"model_kwargs": {"no_such_option": 1}})))
    entries, skipped = A.expand(sweep, "synthetic", [3])
    assert [(e.variant, e.seed) for e in entries] == [("ok", 3)]
    assert skipped == ["t/bogus: model 'emonet' has no option 'no_such_option' yet"]
    bad_loss = A.Sweep("r", "mmfrm", (A.Variant("weird", {"loss_kwargs": {"variant": "weird"}}),))
    assert "loss 'ce_rfloss' rejects" in A.expand(bad_loss, "synthetic")[1][0]
    no_card = A.Sweep("n", "nopaper", (A.Variant("x", {}),))
    assert "no recipe" in A.expand(no_card, "synthetic")[1][0]
    assert A.model_accepts("grefel", "num_anchors") and not A.model_accepts("emonet", "no_such_option")
    # GReFEL forwards **kwargs to POSTER: the meta-device build catches what the signature cannot
    deep = A.Sweep("g", "grefel", (A.Variant("b", {"model_kwargs": {"no_such_option": 1}}),
                                   A.Variant("v", {"model_kwargs": {"variant": "zzz"}})))
    notes = A.expand(deep, "synthetic")[1]
    assert "unexpected keyword argument 'no_such_option'" in notes[0]
    assert notes[1].startswith("g/v: model 'grefel' rejects {'variant': 'zzz'}")


def test_grid_spec_forms():
    assert [s.name for s in A.resolve_sweeps(["emonet_lambda", LS_GRID])] == ["emonet_lambda", "ls"]
    sw = A.sweep_from_dict({"paper": "baseline", "variants": [{"label": "a", "overrides": {"lr": 0.1}, "value": 1}]})
    assert sw.name == "custom" and sw.variants[0] == A.Variant("a", {"lr": 0.1}, 1)
    with pytest.raises(KeyError, match="unknown ablation grid"):
        A.resolve_sweeps("nope")
    with pytest.raises(ValueError, match="'paper' and 'variants'"):
        A.resolve_sweeps({"paper": "baseline"})


def test_is_complete(tmp_path):
    assert not A.is_complete(tmp_path, 3)
    (tmp_path / "summary.json").write_text(json.dumps({"epochs_run": 2, "steps": 5}))
    assert not A.is_complete(tmp_path, 3)
    assert A.is_complete(tmp_path, 2)
    assert A.is_complete(tmp_path, 3, max_steps=5)
    assert not A.is_complete(tmp_path, 3, max_steps=6)


def test_aggregate_mean_std_exact():
    runs = pd.DataFrame({"sweep": ["s"] * 4, "paper": ["p"] * 4, "variant": ["b", "b", "a", "b"],
                         "seed": [0, 1, 0, 2], "accuracy_last": [0.5, 0.7, 0.4, 0.6],
                         "accuracy_selected": [0.6, 0.8, 0.45, 0.7]})
    t = A.aggregate(runs).set_index("variant")
    assert list(t.index) == ["b", "a"]                           # first-appearance order
    assert t.loc["b", "n_seeds"] == 3
    assert t.loc["b", "accuracy_last_mean"] == pytest.approx(0.6)
    assert t.loc["b", "accuracy_last_std"] == pytest.approx(0.1)  # sample std (ddof 1)
    assert t.loc["b", "accuracy_selected"] == "0.7000 ± 0.1000"
    assert math.isnan(t.loc["a", "accuracy_last_std"]) and t.loc["a", "accuracy_last"] == "0.4000"
    assert "accuracy_test_at_val_selected" not in t              # absent metrics are left out


@pytest.mark.slow
def test_grid_runs_skips_complete_and_reruns_changed(env):
    kw = dict(epochs=1, max_steps=1, seeds=[0], dataset_kwargs=TINY)
    first = A.run_grid("synthetic", LS_GRID, **kw)
    assert list(first.runs["status"]) == ["ran", "ran"]
    assert list(first.table["variant"]) == ["ls=0", "ls=0.1"]
    for name in ("ablation_ls_synthetic.csv", "ablation_ls_synthetic_runs.csv"):
        assert len(pd.read_csv(env / "tables" / name)) == 2
    for ext in ("png", "svg"):
        assert (env / "figures" / f"ablation_ls_synthetic.{ext}").stat().st_size > 1000
    run0 = env / "runs" / "ablations" / "synthetic" / "ls" / "ls=0__s0"
    mtime = (run0 / "summary.json").stat().st_mtime_ns

    again = A.run_grid("synthetic", LS_GRID, plot=False, **kw)
    assert list(again.runs["status"]) == ["skipped", "skipped"]
    assert (run0 / "summary.json").stat().st_mtime_ns == mtime
    pd.testing.assert_frame_equal(again.table, first.table)

    changed = {**LS_GRID, "variants": {"ls=0": {"loss_kwargs": {"label_smoothing": 0.2}}}}
    third = A.run_grid("synthetic", changed, plot=False, **kw)
    assert list(third.runs["status"]) == ["ran"]                 # same label, new overrides: trained afresh
    cfg = (run0 / "config.yaml").read_text()
    assert "label_smoothing: 0.2" in cfg


@pytest.mark.slow
def test_real_paper_preset_entry(env):
    """One EMO-Net λ entry of the preset, one step: the override reaches the model."""
    import torch

    entry = next(e for e in A.expand("emonet_lambda", "synthetic")[0] if e.value == 0.5)
    run_dir, status = A.run_entry(entry, "synthetic", epochs=1, max_steps=1, dataset_kwargs=TINY)
    assert status == "ran" and run_dir.name == "lam=0.5__s0"
    best = torch.load(run_dir / "best.pt", weights_only=True)
    assert best["recipe"]["model_kwargs"]["lam"] == 0.5
    assert A.run_entry(entry, "synthetic", epochs=1, max_steps=1, dataset_kwargs=TINY)[1] == "skipped"


def test_grid_with_nothing_to_run(env):
    res = A.run_grid("synthetic", {"paper": "nopaper", "name": "none", "variants": {"x": {}}})
    assert res.runs.empty and "accuracy_selected" in res.runs and "status" in res.runs
    assert res.files == [] and len(res.skipped) == 1 and res.skipped[0].startswith("none/x: no recipe")


@pytest.mark.slow
def test_grid_selected_on_validation(env):
    grid = {"paper": "baseline", "name": "val", "variants": {"card": {}}}
    res = A.run_grid("synthetic", grid, epochs=1, max_steps=1, seeds=[0], dataset_kwargs=TINY, val_fraction=0.25)
    row = res.runs.iloc[0]
    assert row.selected_on == "val" and 0.0 <= row.accuracy_test_at_val_selected <= 1.0
    assert res.table["accuracy_test_at_val_selected"].item() == f"{row.accuracy_test_at_val_selected:.4f}"
