"""The live-curves callback (ferlib.viz.live) alone and through ferlib.engine.train(callbacks=...)."""
import json

import numpy as np
import pytest
from PIL import Image

from ferlib.viz.live import LivePlot


def test_live_plot_redraws_each_epoch(tmp_path):
    cb = LivePlot(title="t", save_to=tmp_path / "live.png")
    assert cb._handle is None  # no kernel here: nothing displayed
    rows = [{"epoch": e, "train_loss": 2.0 / e, "train_accuracy": 0.2 * e, "eval_accuracy": 0.15 * e} for e in (1, 2, 3)]
    for r in rows:
        cb(r, {})
    assert cb.rows == rows
    fig = cb.figure()
    loss_ax, acc_ax = fig.axes[:2]
    np.testing.assert_allclose(loss_ax.lines[0].get_ydata(), [2.0, 1.0, 2.0 / 3])
    assert [ln.get_label() for ln in acc_ax.lines] == ["train", "eval"]
    np.testing.assert_allclose(acc_ax.lines[1].get_ydata(), [0.15, 0.3, 0.45])
    assert "epoch 3" in cb.summary()
    with Image.open(tmp_path / "live.png") as im:
        assert im.format == "PNG" and im.size[0] > 300


@pytest.mark.slow
def test_train_forwards_callbacks(tmp_path):
    from ferlib.engine import train

    seen = []
    run = train("baseline", "synthetic", run=tmp_path / "run", epochs=2, max_steps=2, progress=False,
                callbacks=[lambda row, result: seen.append((row, result["accuracy"]))])
    rows = [json.loads(x) for x in (run.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r for r, _ in seen] == rows
    assert [a for _, a in seen] == [r["eval_accuracy"] for r in rows]
