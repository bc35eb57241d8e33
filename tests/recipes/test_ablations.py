"""ferlib.ablations: the cards' sweeps, option checks, skip-when-complete, mean ± std over seeds."""
import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest

from ferlib import ablations as A
from ferlib import recipes
from ferlib.recipes import RecipeError

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


LK, MK = "loss_kwargs", "model_kwargs"
#: Every sweep the cards held when they moved out of ablations.py, written out by hand:
#: name -> (paper, group, [(label, value, overrides), ...]).
CARD_SWEEPS = {
    "emonet_lambda": ("emonet", "papers", [(f"lam={v}", v, {MK: {"lam": v}}) for v in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)]),
    "fermam_label_smoothing": ("fermam", "papers", [
        ("ce_only", "CE", {LK: {"lsce_weight": 0.0}}),
        ("w1_eps0.2", "1 / 0.2", {LK: {"lsce_weight": 1.0, "smoothing": 0.2}}),
        ("w2_eps0.1", "2 / 0.1", {LK: {"lsce_weight": 2.0, "smoothing": 0.1}}),
        ("w2_eps0.2", "2 / 0.2", {LK: {"lsce_weight": 2.0, "smoothing": 0.2}}),
        ("w2_eps0.3", "2 / 0.3", {LK: {"lsce_weight": 2.0, "smoothing": 0.3}}),
        ("w3_eps0.2", "3 / 0.2", {LK: {"lsce_weight": 3.0, "smoothing": 0.2}})]),
    "mmfrm_rfloss": ("mmfrm", "papers", [
        ("off", "off", {LK: {"variant": "off"}}),
        ("as_coded", "as_coded", {LK: {"variant": "as_coded"}}),
        ("intended", "intended", {LK: {"variant": "intended"}})]),
    "grefel_losses": ("grefel", "papers", [
        ("ce_only", "CE", {LK: {"lambda_anchor": 0.0, "lambda_center": 0.0}}),
        ("ce+anchor", "CE+A", {LK: {"lambda_anchor": 1.0, "lambda_center": 0.0}}),
        ("ce+center", "CE+C", {LK: {"lambda_anchor": 0.0, "lambda_center": 1.0}}),
        ("all", "CE+A+C", {LK: {"lambda_anchor": 1.0, "lambda_center": 1.0}}),
        ("anchors=1", 1, {MK: {"num_anchors": 1}}),
        ("anchors=5", 5, {MK: {"num_anchors": 5}}),
        ("anchors=10", 10, {MK: {"num_anchors": 10}})]),
    "mfer_feature_loss": ("mfer", "papers", [
        ("none", "none", {LK: {"feature_loss": None}}),
        ("lgm", "LGM", {LK: {"feature_loss": "lgm"}}),
        ("dsf", "DSF (approx.)", {LK: {"feature_loss": "dsf"}})]),
    "fermam_code_vs_paper": ("fermam", "code_vs_paper", [
        ("as_coded", "as coded", {}),
        ("ir_tokens=spatial", "spatial tokens", {MK: {"ir_tokens": "spatial"}}),
        ("ss2d_merge=vmamba", "VMamba merge", {MK: {"ss2d_merge": "vmamba"}}),
        ("asfr_input_gate=delta", "Δ⊙B gate", {MK: {"asfr_input_gate": "delta"}}),
        ("asfr_skip=param", "learned D skip", {MK: {"asfr_skip": "param"}}),
        ("shuffled_residual", "shuffled residual", {MK: {"shuffled_residual": True}}),
        ("cls_pool=mean", "mean pool", {MK: {"cls_pool": "mean"}}),
        ("landmark_bn_eval", "landmark BN eval", {MK: {"landmark_bn_train": False}}),
        ("conv_only", "conv only", {MK: {"conv_ssm_mode": "conv_only"}}),
        ("ssm_only", "SSM only", {MK: {"conv_ssm_mode": "ssm_only"}})]),
    "mmfrm_code_vs_paper": ("mmfrm", "code_vs_paper", [
        ("as_coded", "as coded", {}),
        ("landmark_eval", "landmark eval", {MK: {"landmark_mode": "eval"}}),
        ("landmark_follow", "landmark follows", {MK: {"landmark_mode": "follow"}}),
        ("train_landmark", "landmark trained", {MK: {"train_landmark": True}}),
        ("intended_rr_batch", "intended RR / B", {LK: {"variant": "intended", "normalizer": "batch"}})]),
    "grefel_code_vs_paper": ("grefel", "code_vs_paper", [
        ("grefel", "GReFEL", {}),
        ("arbex", "ARBEx (code)", {MK: {"variant": "arbex"}, "loss": "arbex_loss"}),
        ("batch_coupled_attention", "batch-coupled attn", {MK: {"batch_coupled_attention": True}}),
        ("anchor_init=zeros", "zero anchors", {MK: {"anchor_init": "zeros"}}),
        ("no_balanced_prediction", "no balancing", {MK: {"balanced_prediction": False}}),
        ("anchor_loss=arbex", "ARBEx anchor loss", {LK: {"anchor_loss": "arbex"}}),
        ("center_confidence", "confidence-weighted centre", {LK: {"center_confidence": True}})]),
    "mfer_code_vs_paper": ("mfer", "code_vs_paper", [
        ("lgm_w1", "LGM ×1", {LK: {"feature_loss": "lgm", "feature_loss_weight": 1.0}}),
        ("lgm_w0.001", "LGM ×0.001", {LK: {"feature_loss": "lgm", "feature_loss_weight": 0.001}})]),
}


def test_cards_hold_the_sweeps_they_had():
    assert set(A.PRESETS) == set(CARD_SWEEPS)
    for name, (paper, group, variants) in CARD_SWEEPS.items():
        sweep = A.PRESETS[name]
        assert (sweep.paper, sweep.group) == (paper, group), name
        got = [(v.label, v.value, v.overrides) for v in sweep.variants]
        assert got == variants, name
        # the exact types too: they enter the run's digest (1.0 and 1 would name different runs)
        assert json.dumps(got) == json.dumps(variants), name
    assert A.PRESETS["emonet_lambda"].variants[5].note == "as coded (hard-coded in the forward)"
    assert A.PRESETS["mfer_feature_loss"].figure and not any(s.figure for n, s in A.PRESETS.items()
                                                               if n != "mfer_feature_loss")
    assert A.PRESETS["emonet_lambda"].axis == "λ (shortcut weight)"
    assert [s.name for s in A.card_sweeps("grefel")] == ["grefel_losses", "grefel_code_vs_paper"]
    assert A.card_sweeps("baseline") == []


def test_groups_come_from_the_cards():
    papers = {n for n, (_, g, _) in CARD_SWEEPS.items() if g == "papers"}
    assert set(A.GROUPS["papers"]) == papers and len(papers) == 5
    assert set(A.GROUPS["code_vs_paper"]) == set(CARD_SWEEPS) - papers
    assert A.GROUPS["all"] == A.GROUPS["papers"] + A.GROUPS["code_vs_paper"] == tuple(A.list_presets())
    assert [s.name for s in A.resolve_sweeps("papers")] == list(A.GROUPS["papers"])


def test_figures_grid():
    """Notebook 09's runs: each paper's card run, or the sweep its card marks ``figure: true``."""
    sweeps = A.figure_sweeps(["baseline", "mfer"])
    assert [(s.name, s.paper, [v.label for v in s.variants]) for s in sweeps] == [
        ("baseline_card", "baseline", ["card"]), ("mfer_feature_loss", "mfer", ["none", "lgm", "dsf"])]
    assert sweeps[0].variants[0].overrides == {}
    assert [s.name for s in A.resolve_sweeps("figures")] == [
        "baseline_card", "emonet_card", "fermam_card", "grefel_card", "mfer_feature_loss", "mmfrm_card"]
    with pytest.raises(FileNotFoundError, match="no recipe card"):
        A.figure_sweeps(["nopaper"])


@pytest.mark.parametrize("name", sorted(CARD_SWEEPS))
def test_every_card_variant_builds_on_every_dataset_of_its_card(name):
    """The guarantee that replaced skipping missing options: every variant's recipe, model (meta device)
    and loss build for every dataset its paper's card has."""
    sweep = A.PRESETS[name]
    datasets = sorted(recipes.load_card(sweep.paper)["datasets"])
    assert "synthetic" in datasets and len(datasets) > 1
    for dataset in datasets:
        for variant in sweep.variants:
            assert A.check_variant(sweep, variant, dataset) is None, (dataset, variant.label)


CARD = """paper: newpaper
model: baseline
defaults: {{epochs: 1}}
datasets:
  synthetic: {{}}
ablations:
{sweeps}"""
GOOD_SWEEP = """  - name: {name}
    group: papers
    axis: lr
    variants:
      - {{label: lr=0.1, value: 0.1, note: "[ours]", overrides: {{lr: 0.1}}}}
      - {{label: lr=0.01, value: 0.01, overrides: {{lr: 0.01}}}}
"""


@pytest.fixture
def cards_dir(tmp_path, monkeypatch):
    """A copy of the real cards in a temporary folder that ferlib.recipes reads instead."""
    folder = tmp_path / "cards"
    shutil.copytree(recipes.CARDS_DIR, folder, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    monkeypatch.setattr(recipes, "CARDS_DIR", folder)
    return folder


def test_a_new_card_brings_its_sweeps_into_the_grid(cards_dir):
    (cards_dir / "newpaper.yaml").write_text(CARD.format(sweeps=GOOD_SWEEP.format(name="newpaper_lr")))
    recipe = recipes.load_recipe("newpaper", "synthetic")
    assert not hasattr(recipe, "ablations") and recipe.lr == 1e-3       # the section never reaches a Recipe
    presets = A.load_presets()
    assert list(presets)[:6] == ["emonet_lambda", "fermam_label_smoothing", "grefel_losses", "mfer_feature_loss",
                                 "mmfrm_rfloss", "newpaper_lr"]       # papers' group, cards in name order
    sweep = presets["newpaper_lr"]
    assert (sweep.paper, sweep.axis, sweep.group) == ("newpaper", "lr", "papers")
    assert sweep.variants == (A.Variant("lr=0.1", {"lr": 0.1}, 0.1, "[ours]"), A.Variant("lr=0.01", {"lr": 0.01}, 0.01))
    entries, skipped = A.expand(sweep, "synthetic", [0, 1])
    assert skipped == [] and [(e.variant, e.seed) for e in entries] == [
        ("lr=0.1", 0), ("lr=0.1", 1), ("lr=0.01", 0), ("lr=0.01", 1)]
    assert [s.name for s in A.figure_sweeps(["newpaper"])] == ["newpaper_card"]


def test_sweep_names_are_unique_over_the_cards(cards_dir):
    (cards_dir / "newpaper.yaml").write_text(CARD.format(sweeps=GOOD_SWEEP.format(name="emonet_lambda")))
    with pytest.raises(RecipeError, match="'emonet_lambda' is in both emonet.yaml and newpaper.yaml"):
        A.load_presets()


def _variant(text):
    return GOOD_SWEEP.format(name="s").replace("      - {label: lr=0.01, value: 0.01, overrides: {lr: 0.01}}\n", text)


@pytest.mark.parametrize("sweeps, why", [
    ("  name: s\n", "ablations must be a list of sweeps"),
    ("  - [s]\n", "a sweep is a mapping"),
    ("  - {group: papers, variants: [{label: a}]}\n", "a sweep needs a name"),
    (GOOD_SWEEP.format(name="s").replace("axis: lr", "axes: lr"), r"sweep 's': unknown keys \['axes'\]"),
    (GOOD_SWEEP.format(name="s") + GOOD_SWEEP.format(name="s"), "sweep 's': the name is used twice"),
    (GOOD_SWEEP.format(name="s").replace("group: papers", "group: paper"), "group must be one of"),
    (GOOD_SWEEP.format(name="s").replace("axis: lr", "figure: maybe"), "figure must be true or false"),
    (GOOD_SWEEP.format(name="s").split("    variants:")[0], "variants must be a non-empty list"),
    (_variant("      - {value: 1}\n"), "a variant is a mapping with a text label"),
    (_variant("      - {label: x, overides: {lr: 0.1}}\n"), r"variant 'x': unknown keys \['overides'\]"),
    (_variant("      - {label: lr=0.1}\n"), "variant 'lr=0.1' appears twice"),
    (_variant("      - {label: x, overrides: [lr, 0.1]}\n"), "variant 'x': overrides must be a mapping"),
    (_variant("      - {label: x, overrides: {learning_rate: 0.1}}\n"),
     r"variant 'x' overrides \['learning_rate'\], not recipe fields"),
    (_variant("      - {label: x, overrides: {dataset: rafdb}}\n"), r"overrides \['dataset'\], not recipe fields"),
])
def test_a_malformed_ablations_section_names_the_card(cards_dir, sweeps, why):
    path = cards_dir / "newpaper.yaml"
    path.write_text(CARD.format(sweeps=sweeps))
    for load in (lambda: recipes.load_recipe("newpaper", "synthetic"), lambda: A.card_sweeps("newpaper"),
                 A.load_presets):
        with pytest.raises(RecipeError, match=why) as err:
            load()
        assert str(path) in str(err.value)


def test_every_preset_expands():
    entries, skipped = A.expand("all", "synthetic", seeds=[0, 1])
    n_variants = sum(len(s.variants) for s in A.PRESETS.values())
    assert skipped == [] and len(entries) == 2 * n_variants   # every preset option exists in its model
    assert {e.seed for e in entries} == {0, 1}


def test_bad_overrides_fail_loudly_before_training():
    sweep = A.Sweep("t", "emonet", (A.Variant("ok", {"model_kwargs": {"lam": 0.5}}),
                                    A.Variant("bogus", {"model_kwargs": {"no_such_option": 1}})))
    with pytest.raises(A.AblationError, match="(?s)1 variant.*t/bogus: model 'emonet' rejects .*no_such_option"):
        A.expand(sweep, "synthetic", [3])
    assert A.check_variant(sweep, sweep.variants[0], "synthetic") is None
    bad_loss = A.Sweep("r", "mmfrm", (A.Variant("weird", {"loss_kwargs": {"variant": "weird"}}),))
    with pytest.raises(A.AblationError, match="r/weird: loss 'ce_rfloss' rejects"):
        A.expand(bad_loss, "synthetic")
    bad_field = A.Sweep("f", "baseline", (A.Variant("x", {"learning_rate": 0.1}),))
    with pytest.raises(A.AblationError, match=r"f/x: the recipe rejects .*unknown recipe fields \['learning_rate'\]"):
        A.expand(bad_field, "synthetic")
    no_card = A.Sweep("n", "nopaper", (A.Variant("x", {}),))
    assert "no recipe" in A.expand(no_card, "synthetic")[1][0]   # a paper without a card: left out, with a note
    no_entry = A.expand("emonet_lambda", "ferplus")               # a card without the dataset: left out too
    assert no_entry[0] == [] and len(no_entry[1]) == 6 and "no entry for dataset 'ferplus'" in no_entry[1][0]
    # GReFEL forwards **kwargs to POSTER: building the model says what it does not take, or refuses
    deep = A.Sweep("g", "grefel", (A.Variant("b", {"model_kwargs": {"no_such_option": 1}}),
                                   A.Variant("v", {"model_kwargs": {"variant": "zzz"}})))
    with pytest.raises(A.AblationError) as err:
        A.expand(deep, "synthetic")
    lines = str(err.value).splitlines()
    assert lines[0] == "2 variant(s) do not build on 'synthetic':"
    assert "g/b: model 'grefel' rejects" in lines[1] and "unexpected keyword argument 'no_such_option'" in lines[1]
    assert lines[2].startswith("  g/v: model 'grefel' rejects model_kwargs {'variant': 'zzz'")


def test_grid_spec_forms():
    assert [s.name for s in A.resolve_sweeps(["emonet_lambda", LS_GRID])] == ["emonet_lambda", "ls"]
    assert A.resolve_sweeps(A.PRESETS["mmfrm_rfloss"]) == [A.PRESETS["mmfrm_rfloss"]]
    sw = A.sweep_from_dict({"paper": "baseline", "variants": [{"label": "a", "overrides": {"lr": 0.1}, "value": 1}]})
    assert sw.name == "custom" and sw.variants[0] == A.Variant("a", {"lr": 0.1}, 1)
    with pytest.raises(KeyError, match="unknown ablation grid"):
        A.resolve_sweeps("nope")
    with pytest.raises(ValueError, match="'paper' and 'variants'"):
        A.resolve_sweeps({"paper": "baseline"})


def test_sweep_table_mean_std_exact_and_verdict():
    runs = pd.DataFrame({"sweep": ["s"] * 4, "paper": ["p"] * 4, "variant": ["b", "b", "a", "b"],
                         "seed": [0, 1, 0, 2], "accuracy_last": [0.5, 0.7, 0.4, 0.6],
                         "accuracy_selected": [0.6, 0.8, 0.45, 0.7]})
    t = A.sweep_table(runs).set_index("variant")
    assert list(t.index) == ["b", "a"]                           # first-appearance order
    assert t.loc["b", "n_seeds"] == 3
    assert t.loc["b", "accuracy_last_mean"] == pytest.approx(0.6)
    assert t.loc["b", "accuracy_last_std"] == pytest.approx(0.1)  # sample std (ddof 1)
    assert t.loc["b", "accuracy_selected"] == "0.7000 ± 0.1000"
    assert math.isnan(t.loc["a", "accuracy_last_std"]) and t.loc["a", "accuracy_last"] == "0.4000"
    assert set(t["verdict"]) == {"fewer than 2 seeds per variant: no test of a difference"}  # variant a: one seed
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
    caption = json.loads((env / "figures" / "ablation_ls_synthetic.caption.json").read_text())  # what the gallery shows
    assert caption["kind"] == "ablation"
    assert caption["title"] == "ls on synthetic: fewer than 2 seeds per variant: no test of a difference"
    assert caption["caption"].startswith("test accuracy (last epoch), every seed a point, mean ± std per variant; ")
    assert "smoke run" in caption["caption"] and "seed 0" in caption["caption"]
    assert [Path(r).name for r in caption["runs"]] == ["ls=0__s0", "ls=0.1__s0"]
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
