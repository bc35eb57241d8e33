"""Data plotting helpers (ferlib.viz.data_plots) on the AffectNet fixture."""
import json

import matplotlib

matplotlib.use("Agg")

from ferlib.data import load_splits  # noqa: E402
from ferlib.testing import FIXTURES_DIR  # noqa: E402
from ferlib.viz.data_plots import class_balance, image_browser, plot_class_balance, skip_table  # noqa: E402

EXP = json.loads((FIXTURES_DIR / "expected.json").read_text())["affectnet"]["csv"]


def test_tables_and_figure():
    splits = load_splits("affectnet", FIXTURES_DIR / "affectnet")
    df = class_balance(splits)
    assert list(df.columns) == ["train", "val"]
    assert df.loc["total", "train"] == EXP["training"]["affectnet7_total"]
    assert df.loc["happy", "val"] == EXP["validation"]["affectnet7_loaded_by_code"]["1"]
    skips = skip_table(splits)
    row = skips[(skips.split == "val") & (skips.reason == "missing")]
    assert int(row["count"].iloc[0]) == 1 and "c91b397422" in row["first paths"].iloc[0]
    fig = plot_class_balance(splits)
    assert len(fig.axes[0].patches) >= 14


def test_browser_widget_navigates():
    splits = load_splits("affectnet8", FIXTURES_DIR / "affectnet")
    box = image_browser(splits, static=False)
    (split_dd, class_dd), slider, image, caption = box.children[0].children, *box.children[1:]
    assert slider.max == len(splits["train"]) - 1 and image.value[:4] == b"\x89PNG"
    class_dd.value = 7  # contempt
    assert slider.max == EXP["training"]["affectnet8_loaded_by_code"]["7"] - 1
    assert caption.value.startswith("contempt — ")
    split_dd.value = "val"
    assert class_dd.value == -1 and slider.max == len(splits["val"]) - 1
