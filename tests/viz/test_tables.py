"""ferlib.tables and ferlib.viz.figures on fabricated run directories: exact mean ± std and gaps,
honest selection labels, cross-dataset label mapping, MAC counting, figure files."""
import json
from pathlib import Path
import math

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from ferlib import metrics, tables
from ferlib.labels import FER2013, RAFDB
from ferlib.recipes import load_recipe

SYN7 = list(RAFDB)


def fake_run(root, name, paper="emonet", dataset="rafdb", seed=0, last=0.5, selected=0.6, selected_on="test_selected",
             test_at_val=None, epochs_run=None, overrides=None, logits=None, targets=None, classes=SYN7, epochs=None):
    """A run directory as the engine writes it: config.yaml, metrics.jsonl, summary.json, predictions.npz."""
    d = root / name
    d.mkdir(parents=True)
    recipe = load_recipe(paper, dataset, epochs=epochs, **(overrides or {})).to_dict()
    cfg = {"recipe": json.loads(json.dumps(recipe)), "fit": {"seed": seed, "max_steps": None},
           "model": {"name": recipe["model"], "parameters": 123}}
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    n_ep = epochs_run or recipe["epochs"]
    rows = [{"epoch": e + 1, "step": 10 * (e + 1), "train_loss": 1.0 / (e + 1), "train_accuracy": 0.1 * e,
             "eval_accuracy": last if e == n_ep - 1 else selected} for e in range(n_ep)]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = {"epochs_run": n_ep, "steps": 10 * n_ep, "selection_metric": "accuracy", "selected_on": selected_on,
               "last": {"accuracy": last, "mean_class_accuracy": last}, "selected": {"accuracy": selected,
               "mean_class_accuracy": selected}, "selected_epoch": 1}
    if test_at_val is not None:
        summary["test_at_val_selected"] = {"accuracy": test_at_val, "mean_class_accuracy": test_at_val}
    (d / "summary.json").write_text(json.dumps(summary))
    rng = np.random.default_rng(seed)
    if targets is None:
        targets = np.arange(28) % len(classes)
    if logits is None:
        logits = rng.normal(size=(len(targets), len(classes)))
    np.savez(d / "predictions.npz", logits=logits, targets=np.asarray(targets), features=rng.normal(size=(len(targets), 6)),
             classes=np.array(classes))
    return d


@pytest.fixture
def runs(tmp_path):
    r = tmp_path / "runs"
    fake_run(r, "emonet_a", seed=0, last=0.80, selected=0.90)
    fake_run(r, "emonet_b", seed=1, last=0.70, selected=0.88)
    fake_run(r, "emonet_c", seed=2, last=0.75, selected=0.86)
    fake_run(r, "lam06", seed=0, last=0.5, selected=0.7, overrides={"model_kwargs": {"lam": 0.6}})
    fake_run(r, "mfer_val", paper="mfer", seed=0, last=0.40, selected=0.55, selected_on="val", test_at_val=0.52)
    fake_run(r, "mfer_val2", paper="mfer", seed=1, last=0.41, selected=0.57, selected_on="val", test_at_val=0.58)
    return r


def test_runs_table_labels_selection_honestly(runs):
    df = tables.runs_table(runs).set_index("run")
    assert len(df) == 6
    assert df.loc["emonet_a", "accuracy_last"] == 0.80
    assert df.loc["emonet_a", "accuracy_test_selected"] == 0.90
    assert math.isnan(df.loc["emonet_a", "accuracy_val_selected"])
    # a validation-selected run never reports its validation numbers as test numbers
    assert math.isnan(df.loc["mfer_val", "accuracy_test_selected"])
    assert math.isnan(df.loc["mfer_val", "accuracy_last"])
    assert df.loc["mfer_val", "accuracy_val_selected"] == 0.52
    assert df.loc["emonet_a", "variant"] == "card"
    assert df.loc["lam06", "variant"] == "model_kwargs.lam=0.6"
    assert df.loc["emonet_b", "seed"] == 1


def test_summary_mean_std_over_seeds_exact(runs):
    s = tables.summary_table(tables.runs_table(runs))
    card = s[(s.paper == "emonet") & (s.variant == "card")].iloc[0]
    assert card.n_seeds == 3
    assert card.accuracy_test_selected_mean == pytest.approx(0.88, abs=1e-12)
    assert card.accuracy_test_selected_std == pytest.approx(0.02, abs=1e-12)       # sample std of .90 .88 .86
    assert card.accuracy_last_mean == pytest.approx(0.75, abs=1e-12)
    assert card.accuracy_last_std == pytest.approx(0.05, abs=1e-12)
    assert card.accuracy_test_selected == "0.8800 ± 0.0200"
    single = s[s.variant == "model_kwargs.lam=0.6"].iloc[0]
    assert single.n_seeds == 1 and math.isnan(single.accuracy_test_selected_std)
    assert single.accuracy_test_selected == "0.7000"
    mfer = s[s.paper == "mfer"].iloc[0]
    assert mfer.accuracy_val_selected_mean == pytest.approx(0.55, abs=1e-12)
    assert mfer.accuracy_val_selected_std == pytest.approx(math.sqrt(0.0018), abs=1e-12)
    assert mfer.accuracy_test_selected == "–"


def test_compare_to_reported_gap_in_points(runs):
    s = tables.summary_table(tables.runs_table(runs))
    c = tables.compare_to_reported(s)
    row = c[(c.paper == "emonet") & (c.dataset == "rafdb") & (c.variant == "card")].iloc[0]
    assert row.reported_accuracy == pytest.approx(0.9130)                  # emonet.yaml reported accuracy
    assert row.gap_accuracy_test_selected_pp == pytest.approx(100 * (0.88 - 0.9130))
    assert row.gap_accuracy_last_pp == pytest.approx(100 * (0.75 - 0.9130))
    assert math.isnan(row.gap_accuracy_val_selected_pp)
    assert row.card_epochs == 100 and row.n_seeds == 3
    mfer = c[(c.paper == "mfer") & (c.dataset == "rafdb")].iloc[0]
    assert mfer.gap_accuracy_val_selected_pp == pytest.approx(100 * (0.55 - 0.9208))
    # a card number without a run is listed, marked not run
    aff = c[(c.paper == "emonet") & (c.dataset == "affectnet")].iloc[0]
    assert aff.n_seeds == 0 and aff.variant == "not run" and aff.reported_accuracy == pytest.approx(0.65456)


def test_reported_percentages_become_fractions():
    rep = tables.reported_table(["grefel", "emonet"])
    g = rep[(rep.paper == "grefel") & (rep.dataset == "ferplus") & (rep.metric == "accuracy")]
    assert g.value.item() == pytest.approx(0.892)                         # card says 89.2
    assert rep[(rep.paper == "emonet") & (rep.metric == "params_m")].value.item() == 2.31


def test_partial_runs_are_flagged(tmp_path):
    r = tmp_path / "runs"
    fake_run(r, "short", epochs=5, epochs_run=2)
    s = tables.summary_table(tables.runs_table(r))
    assert bool(s.partial.iloc[0]) is True and s.epochs.iloc[0] == 5 and s.status.iloc[0] == "smoke"


def test_smoke_runs_are_never_compared_as_reproductions_and_precisions_stay_apart(tmp_path):
    r = tmp_path / "runs"
    full = fake_run(r, "full", selected=0.90)
    smoke = fake_run(r, "smoke", seed=1, selected=0.20)
    bf16 = fake_run(r, "bf16", seed=2, selected=0.80)
    for d, extra in ((full, {"complete": True, "precision": "fp32"}),
                     (smoke, {"complete": False, "limited_by": ["max_steps"], "precision": "fp32"}),
                     (bf16, {"complete": True, "precision": "bf16"})):
        summary = json.loads((d / "summary.json").read_text())
        (d / "summary.json").write_text(json.dumps({**summary, **extra}))
    runs = tables.runs_table(r).set_index("run")
    assert runs.loc["smoke", "status"] == "smoke" and runs.loc["full", "status"] == "reproduction"
    c = tables.compare_to_reported(tables.summary_table(runs.reset_index()))
    rows = c[(c.paper == "emonet") & (c.dataset == "rafdb")].set_index(["precision", "status"])
    assert rows.loc[("fp32", "smoke"), "n_seeds"] == 1 and math.isnan(rows.loc[("fp32", "smoke"), "gap_accuracy_test_selected_pp"])
    assert rows.loc[("fp32", "reproduction"), "gap_accuracy_test_selected_pp"] == pytest.approx(100 * (0.90 - 0.9130))
    assert rows.loc[("bf16", "reproduction"), "accuracy_test_selected_mean"] == pytest.approx(0.80)


def test_cross_dataset_mapping_hand_made():
    # RAF-DB order -> FER2013 order: same seven classes, different indices
    m = metrics.class_mapping(RAFDB, FER2013)
    assert m == {0: 5, 1: 2, 2: 1, 3: 3, 4: 4, 5: 0, 6: 6}
    # synonyms go through the canonical names
    assert metrics.class_mapping(["Happiness", "Anger"], ["angry", "happy"]) == {0: 1, 1: 0}


def test_cross_dataset_accuracy_drops_missing_classes():
    src = ["happy", "sad", "contempt"]             # model outputs
    tgt = ["sad", "neutral", "happy"]              # dataset labels
    logits = np.array([
        [0.0, 5.0, 9.0],    # contempt column dropped -> argmax sad -> target index 0; truth sad: correct
        [9.0, 0.0, 0.0],    # happy -> 2; truth happy: correct
        [0.0, 1.0, 0.0],    # sad -> 0; truth happy (2): wrong
        [5.0, 0.0, 0.0],    # truth neutral: dropped (the model has no neutral)
    ])
    targets = np.array([0, 2, 2, 1])
    res = metrics.cross_dataset_accuracy(logits, targets, src, tgt)
    assert res["n"] == 3 and res["n_dropped"] == 1
    assert res["accuracy"] == pytest.approx(2 / 3)
    assert res["per_class_accuracy"] == {"sad": 1.0, "happy": 0.5}
    assert res["mean_class_accuracy"] == pytest.approx(0.75)
    assert res["dropped_target_classes"] == ["neutral"]
    assert res["dropped_source_classes"] == ["contempt"]
    with pytest.raises(ValueError, match="no class in common"):
        metrics.cross_dataset_accuracy(logits[:, :1], targets, ["contempt"], tgt)


def test_cross_dataset_soft_targets():
    res = metrics.cross_dataset_accuracy(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[0.2, 0.8], [0.9, 0.1]]),
                                         ["sad", "happy"], ["happiness", "sadness"])
    assert res["accuracy"] == 1.0 and res["n"] == 2


def test_measure_complexity_counts_macs():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.Flatten(), nn.Linear(4 * 8 * 8, 5))
    params, macs = tables.measure_complexity(model, 8)
    assert params == 3 * 4 * 9 + 256 * 5 + 5
    assert macs == 8 * 8 * 4 * 3 * 9 + 256 * 5          # conv MACs + linear MACs, per image


def test_complexity_table_emonet_matches_readme():
    t = tables.complexity_table(["emonet"], "rafdb").iloc[0]
    assert t.error == "" and t.input_size == 224
    assert t.params_m == pytest.approx(2.31, abs=0.02)  # README: 2.31 M
    assert 0.25 < t.gmacs < 0.45 and t.reported_gflops == 0.34
    assert t.params_in_forward_m == t.params_m                      # every EMO-Net parameter is used


def test_params_in_forward_leaves_out_heads_the_forward_never_runs():
    """FERMam builds IR-50's and MobileFaceNet's output layers but never runs them (docs/papers/fermam.md §13: 26,874,791
    of 40,011,687 are used; the three ASFR ``D`` vectors are multiplied away by the skip quirk)."""
    from ferlib.models import create_model

    model = create_model("fermam")
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert tables.params_in_forward(model, 112) == 26_874_791 - 3 * 1024
    assert [n for n, p in model.named_parameters() if not p.requires_grad] == frozen   # flags restored
    assert all(p.grad is None for p in model.parameters())
    toy = nn.Sequential(nn.Linear(4, 3))
    toy.unused = nn.Linear(4, 100)
    toy.forward = lambda x: type("O", (), {"logits": toy[0](x.flatten(1)[:, :4])})()
    assert tables.params_in_forward(toy, 2) == 15


def test_per_class_in_paper_order(tmp_path):
    classes = list(FER2013)            # a run whose classes follow FER2013's order
    logits = np.eye(7)[[0, 1, 2, 3, 3, 5, 6]]
    fake_run(tmp_path / "r", "x", paper="emonet", dataset="rafdb", targets=np.arange(7), logits=logits, classes=classes)
    df = tables.per_class_table([tmp_path / "r" / "x"])
    assert list(df["class"]) == ["surprise", "fear", "disgust", "happy", "sad", "angry", "neutral"]  # RAF-DB order
    acc = dict(zip(df["class"], df["accuracy"]))
    assert acc["sad"] == 0.0 and acc["happy"] == 1.0 and acc["angry"] == 1.0


@pytest.mark.slow  # draws every figure
def test_figures_from_fabricated_runs(tmp_path, monkeypatch):
    from ferlib.viz import figures, tsne

    # scikit-learn's t-SNE takes ~15 s per panel on a busy 2-core CPU; the layout and files are what is
    # tested here, so the embedding is replaced by the first two feature columns
    monkeypatch.setattr(tsne, "tsne_embedding", lambda f, seed=0, max_points=5000: (np.asarray(f)[:, :2], np.arange(len(f))))

    r = tmp_path / "runs"
    fake_run(r, "e", paper="emonet", targets=np.arange(21) % 7)
    for fl, seed in ((None, 0), ("lgm", 0), ("dsf", 0), ("lgm", 1)):
        fake_run(r, f"mfer_{fl}_{seed}", paper="mfer", seed=seed, overrides={"loss_kwargs": {"feature_loss": fl}})
    (fake_run(r, "interrupted", paper="mmfrm") / "predictions.npz").unlink()   # cannot be drawn: left out
    panels = figures.mfer_feature_loss_runs(r)
    assert list(panels) == ["without feature loss", "with LGM loss", "with DSF loss (our approximation)"]
    assert panels["with LGM loss"].name == "mfer_lgm_0"
    assert figures.class_order("emonet", "rafdb", list(FER2013)) == [5, 2, 1, 3, 4, 0, 6]
    out = tmp_path / "figs"
    df = figures.make_figures(r, out, max_points=50)
    kinds = df["kind"].value_counts().to_dict()
    assert kinds == {"confusion": 4, "curves": 4, "tsne": 2, "tsne_mfer_feature_loss": 1, "per_class_accuracy": 1}
    for col in ("png", "svg"):
        for p in df[col]:
            assert (out / p.split("/")[-1]).stat().st_size > 1000
    assert (out / "tsne_mfer_feature_loss_rafdb.png").exists()
    assert (out / "confusion_emonet_rafdb__e.svg").exists()


def test_readme_reported_table_matches_the_cards():
    """README's "What each paper reported" rows carry exactly the cards' accuracies (in percent)."""
    import re

    from ferlib.tables import reported_table
    from ferlib.testing import _REPO

    readme = (_REPO / "README.md").read_text()
    section = readme.split("## What each paper reported")[1].split("\n## ")[0]
    names = {"emonet": "EMO-Net", "mfer": "MFER", "grefel": "GReFEL", "fermam": "FERMam", "mmfrm": "MMFRM"}
    rep = reported_table()
    for paper, label in names.items():
        row = next(line for line in section.splitlines() if line.startswith(f"| {label} |"))
        shown = sorted(float(v) for v in re.findall(r"\d+\.\d+", row.split("|")[2]) if float(v) > 1)  # not λ
        acc = rep[(rep.paper == paper) & rep.metric.str.startswith("accuracy")]["value"]
        other = rep[(rep.paper == paper) & ~rep.metric.str.startswith("accuracy")]
        expected = sorted([round(100 * v, 3) for v in acc] + [
            v for v in other["value"] if paper == "fermam"])    # FERMam's row also shows its derived size
        assert shown == pytest.approx(expected), (paper, row)


def test_complete_run_represents_its_variant_before_an_ablation_smoke_run(tmp_path):
    # an ablation's short run at the card's value is variant "card" too, sorts first by name and has seed 0:
    # the figures and the per-class table must still show the complete card run
    from ferlib.viz.figures import representative_runs

    r = tmp_path / "runs"
    smoke = fake_run(r / "ablations", "lam=0.8__s0", epochs=5, epochs_run=2)
    full = fake_run(r, "emonet_rafdb", seed=3, epochs=5)
    for d, complete in ((smoke, False), (full, True)):
        summary = json.loads((d / "summary.json").read_text())
        (d / "summary.json").write_text(json.dumps({**summary, "complete": complete}))
    runs = tables.runs_table(r)
    assert sorted(runs["variant"]) == ["card", "card"]
    assert list(representative_runs(runs)["run"]) == ["emonet_rafdb"]
    assert [Path(d).name for d in tables.one_run_per_paper(runs)] == ["emonet_rafdb"]


def test_make_figures_removes_the_figures_it_no_longer_draws(tmp_path, monkeypatch, capsys):
    import shutil

    from ferlib.viz import figures, tsne
    from ferlib.viz.gallery import save_caption

    monkeypatch.setattr(tsne, "tsne_embedding", lambda f, seed=0, max_points=5000: (np.asarray(f)[:, :2], np.arange(len(f))))
    r, out = tmp_path / "runs", tmp_path / "figs"
    fake_run(r, "e", paper="emonet")
    gone = fake_run(r, "m", paper="mmfrm")
    figures.make_figures(r, out, max_points=50)
    assert (out / "confusion_mmfrm_rafdb__m.png").exists()
    other = tmp_path / "elsewhere" / "x"                   # a figure drawn from another runs folder
    (out / "confusion_x.png").write_bytes(b"png")
    save_caption(out / "confusion_x.png", "x", "", [other], "confusion")
    (out / "ablation_s_rafdb.png").write_bytes(b"png")      # notebook 08's, with runs under the same folder
    save_caption(out / "ablation_s_rafdb.png", "s", "", [gone], "ablation")
    (out / "notes.png").write_bytes(b"png")                 # no caption: not ours to judge

    shutil.rmtree(gone)
    capsys.readouterr()
    figures.make_figures(r, out, max_points=50, tsne=False)
    left = sorted(p.name for p in out.glob("*.png"))
    assert "confusion_mmfrm_rafdb__m.png" not in left and "curves_mmfrm_rafdb__m.png" not in left
    assert not (out / "confusion_mmfrm_rafdb__m.svg").exists()
    assert not (out / "confusion_mmfrm_rafdb__m.caption.json").exists()
    assert "tsne_mmfrm_rafdb__m.png" in left                # t-SNE was not drawn this time: left alone
    assert {"confusion_x.png", "ablation_s_rafdb.png", "notes.png", "confusion_emonet_rafdb__e.png"} <= set(left)
    assert "removed 2 figure(s) no longer drawn" in capsys.readouterr().out
