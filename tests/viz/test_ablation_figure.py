"""The ablation figure (issue 24.2): seeds as points, mean ± std, majority and chance lines, and a title that
says whether the variants differ beyond the spread over seeds; variant subsets; majority/chance of a run."""
import matplotlib

matplotlib.use("Agg")
import numpy as np
import pandas as pd
import pytest
from scipy.stats import f as f_dist

from ferlib import ablations as A
from ferlib.run_dir import RunDir


def runs_table(values: dict, majority=0.375, chance=1 / 7, sweep="s") -> pd.DataFrame:
    """One row per (variant, seed) with accuracy_last = the given values."""
    rows = [{"sweep": sweep, "paper": "p", "variant": v, "seed": i, "steps": 40, "accuracy_last": a,
             "accuracy_test_at_val_selected": np.nan, "majority": majority, "chance": chance}
            for v, accs in values.items() for i, a in enumerate(accs)]
    return pd.DataFrame(rows)


def anova_p(groups) -> float:
    """One-way ANOVA p-value written out: F = (SSB / (k-1)) / (SSW / (n-k))."""
    allv = np.concatenate(groups)
    k, n = len(groups), len(allv)
    ssb = sum(len(g) * (g.mean() - allv.mean()) ** 2 for g in groups)
    ssw = sum(((g - g.mean()) ** 2).sum() for g in groups)
    return float(f_dist.sf((ssb / (k - 1)) / (ssw / (n - k)), k - 1, n - k))


def test_verdict_overlapping_seeds_is_no_difference():
    vals = {"a": [0.60, 0.70, 0.65], "b": [0.62, 0.71, 0.60], "c": [0.66, 0.59, 0.69]}
    text, p = A.seed_verdict(runs_table(vals), "accuracy_last")
    assert p == pytest.approx(anova_p([np.array(v) for v in vals.values()]), rel=1e-9)
    assert p > 0.05
    assert text == f"no difference beyond seed variance (one-way ANOVA p = {p:.2g})"


def test_verdict_separated_variants_differ():
    vals = {"a": [0.40, 0.41, 0.42], "b": [0.70, 0.71, 0.69], "c": [0.90, 0.89, 0.91]}
    text, p = A.seed_verdict(runs_table(vals), "accuracy_last")
    assert p == pytest.approx(anova_p([np.array(v) for v in vals.values()]), rel=1e-9)
    assert p < 1e-4 and text.startswith("variants differ (one-way ANOVA p = ")


def test_verdict_needs_two_seeds_and_handles_no_spread():
    assert A.seed_verdict(runs_table({"a": [0.5], "b": [0.6]}), "accuracy_last")[0] == \
        "fewer than 2 seeds per variant: no test of a difference"
    same = runs_table({"a": [0.375, 0.375], "b": [0.375, 0.375]})
    assert A.seed_verdict(same, "accuracy_last") == ("no difference beyond seed variance (identical runs)", 1.0)


def test_figure_shows_seeds_mean_std_majority_chance_and_the_verdict():
    vals = {"lam=0.5": [0.60, 0.70, 0.65], "lam=0.6": [0.62, 0.71, 0.60], "lam=0.8": [0.66, 0.59, 0.69]}
    fig = A.plot_sweep(runs_table(vals, sweep="emonet_lambda"), "emonet_lambda", "synthetic")
    ax = fig.axes[0]
    assert "no difference beyond seed variance" in ax.get_title()
    assert "3 seeds per variant, 40 steps per run" in ax.get_title()
    points = np.concatenate([c.get_offsets()[:, 1] for c in ax.collections if len(c.get_offsets()) == 3])
    assert sorted(points) == sorted(a for v in vals.values() for a in v)
    hlines = {round(float(line.get_ydata()[0]), 4) for line in ax.lines if len(set(line.get_ydata())) == 1}
    assert {0.375, round(1 / 7, 4)} <= hlines
    labels = ax.get_legend_handles_labels()[1]
    assert "majority class (0.375)" in labels and "chance (0.143)" in labels and "mean ± std over seeds" in labels
    means = [float(line.get_ydata()[0]) for line in ax.lines if line.get_marker() == "s"]
    assert means == pytest.approx([np.mean(v) for v in vals.values()])


def test_select_variants_keeps_card_order_and_names_unknowns():
    sweeps = A.resolve_sweeps(["emonet_lambda", "mfer_feature_loss"])
    out = A.select_variants(sweeps, {"emonet_lambda": ["lam=0.8", "lam=0.5"]})
    assert [v.label for v in out[0].variants] == ["lam=0.5", "lam=0.8"]
    by_value = A.select_variants(sweeps, {"emonet_lambda": [0.8, 0.5, 0.6]})  # or by value (the notebook's form)
    assert [v.label for v in by_value[0].variants] == ["lam=0.5", "lam=0.6", "lam=0.8"]
    assert out[1] == sweeps[1]
    with pytest.raises(KeyError, match=r"sweep 'emonet_lambda' has no variant \['lam=9'\]"):
        A.select_variants(sweeps, {"emonet_lambda": ["lam=9"]})
    with pytest.raises(KeyError, match=r"variants names sweeps \['nope'\] that are not in the grid"):
        A.select_variants(sweeps, {"nope": []})


def test_baseline_rates_from_the_saved_predictions(tmp_path):
    targets = np.array([0, 0, 0, 1, 2, 2, 3, 0])
    RunDir(tmp_path).save_predictions({"logits": np.zeros((8, 7)), "targets": targets, "features": np.zeros((8, 2))},
                                      [f"c{i}" for i in range(7)])
    assert A.baseline_rates(tmp_path) == {"majority": 4 / 8, "chance": 1 / 7}
    rates = A.baseline_rates(tmp_path / "absent")
    assert np.isnan(rates["majority"]) and np.isnan(rates["chance"])
