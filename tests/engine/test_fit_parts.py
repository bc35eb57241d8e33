"""The parts ``fit()`` is made of, each alone (ferlib.engine.loop): ``train_one_epoch`` against an epoch of plain
SGD written out by hand, ``evaluate_and_select`` choosing the best epoch by the recipe's selection metric and
writing ``best.pt`` / ``predictions.npz``, and ``decide`` (ferlib.engine.policy) choosing new / resume / overwrite
or refusing."""
from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ferlib.engine.checkpoint import load_checkpoint, save_checkpoint
from ferlib.engine.loop import FitOptions, build_parts, evaluate_and_select, train_one_epoch
from ferlib.engine.policy import ResumeError, RunExistsError, decide
from ferlib.models import ModelOutput
from ferlib.recipes import load_recipe

CLASSES = ["a", "b", "c"]


class Images(torch.utils.data.Dataset):
    """uint8 [3,8,8] images with integer targets, as ferlib's datasets yield them."""

    def __init__(self, images: torch.Tensor, targets: list[int], split: str = "train"):
        self.images, self.targets, self.classes, self.split = images, list(targets), CLASSES, split

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i):
        return self.images[i], self.targets[i]


class Linear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3 * 8 * 8, 3)

    def forward(self, x):
        return ModelOutput(self.fc(x.flatten(1)), x.flatten(1))


class ConstantLogits(torch.nn.Module):
    """Logits = ``bias`` for every image: its accuracy is the share of the targets equal to argmax(bias)."""

    def __init__(self):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(3))

    def forward(self, x):
        return ModelOutput(self.bias.expand(x.shape[0], 3) + 0 * x.mean(), x.flatten(1)[:, :4])


class CrossEntropy(torch.nn.Module):
    def forward(self, out, y):
        return F.cross_entropy(out.logits, y)


def tiny_recipe(**kw):
    """Plain SGD, no schedule, no augmentation, 8-px inputs: an epoch a test can recompute by hand."""
    return load_recipe("baseline", "synthetic").replace(
        optimizer="sgd", lr=0.1, weight_decay=0.0, schedule=None, train_transforms=(), input_size=8, stored_size=8,
        num_classes=3, batch_size=4, epochs=kw.pop("epochs", 1), **kw)


def tiny_train(n: int = 10) -> Images:
    g = torch.Generator().manual_seed(0)
    return Images(torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=g), [i % 3 for i in range(n)])


def parts_for(model, recipe, train, **opts):
    opts = FitOptions(device="cpu", precision="fp32", progress=False, **opts)
    return build_parts(model, CrossEntropy(), recipe, train, opts, torch.device("cpu"), "fp32", recipe.batch_size), opts


def fresh_state() -> dict:
    return {"epoch": 0, "step": 0, "batch_in_epoch": 0, "best": -math.inf, "best_epoch": None,
            "epoch_stats": {"loss": 0.0, "correct": 0, "seen": 0, "time_s": 0.0}}


def test_train_one_epoch_is_an_epoch_of_sgd_in_the_samplers_order():
    torch.manual_seed(0)
    model, train, recipe = Linear(), tiny_train(10), tiny_recipe()
    reference = copy.deepcopy(model)
    parts, opts = parts_for(model, recipe, train)
    state = fresh_state()
    stats, end = train_one_epoch(parts, state, recipe, opts)

    # the same epoch by hand: the sampler's epoch-0 order in batches of 4 (4, 4, 2), loss at the current weights,
    # then w -= lr * grad
    order = parts.sampler.indices()
    losses, sizes = [], []
    for start in range(0, len(order), 4):
        idx = order[start:start + 4]
        x = parts.transform(torch.stack([train.images[i] for i in idx]))
        y = torch.tensor([train.targets[i] for i in idx])
        reference.zero_grad()
        value = F.cross_entropy(reference(x).logits, y)
        value.backward()
        with torch.no_grad():
            for p in reference.parameters():
                p -= 0.1 * p.grad
        losses.append(value.item())
        sizes.append(len(idx))
    assert sizes == [4, 4, 2] and end is None
    assert stats["seen"] == 10 and state["step"] == 3 and state["batch_in_epoch"] == 3
    assert stats["loss"] / stats["seen"] == pytest.approx(np.dot(losses, sizes) / 10, rel=1e-5)
    for p, q in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    assert not torch.equal(model.fc.weight, Linear().fc.weight)


def test_train_one_epoch_stops_and_checkpoints_on_the_step_limits():
    recipe, train = tiny_recipe(), tiny_train(12)
    saved = []
    parts, opts = parts_for(Linear(), recipe, train, stop_after_steps=2, checkpoint_every_steps=1)
    state = fresh_state()
    stats, end = train_one_epoch(parts, state, recipe, opts, save_last=lambda: saved.append(state["step"]))
    assert (stats, end) == (None, "stopped")
    assert state["step"] == 2 and state["batch_in_epoch"] == 2 and state["epoch_stats"]["seen"] == 8
    assert saved == [1]  # every step, except the one that stops (the caller checkpoints that one)

    parts, opts = parts_for(Linear(), recipe, train, max_steps=1)
    state = fresh_state()
    stats, end = train_one_epoch(parts, state, recipe, opts)
    assert end == "done" and stats["seen"] == 4 and state["step"] == 1


def select_epochs(tmp_path, favoured: list[int], **recipe_kw):
    """Three epochs of a model always answering class ``favoured[e]``, on targets 0 0 0 1 1 2."""
    recipe = tiny_recipe(epochs=len(favoured), **recipe_kw)
    val = Images(torch.zeros(6, 3, 8, 8, dtype=torch.uint8), [0, 0, 0, 1, 1, 2], split="test")
    model = ConstantLogits()
    parts, opts = parts_for(model, recipe, tiny_train(4))
    state, rows = fresh_state(), []
    train_stats = {"loss": 1.0, "correct": 1, "seen": 4, "started": 0.0}
    for c in favoured:
        with torch.no_grad():
            model.bias.copy_(torch.eye(3)[c])
        rows.append(evaluate_and_select(parts, state, recipe, opts, val, train_stats, tmp_path)[0])
    return state, rows


def test_evaluate_and_select_keeps_the_best_epoch_by_the_selection_metric(tmp_path):
    state, rows = select_epochs(tmp_path, [1, 0, 2])
    assert [r["eval_accuracy"] for r in rows] == pytest.approx([2 / 6, 3 / 6, 1 / 6])
    assert state["epoch"] == 3 and state["best_epoch"] == 2 and state["best"] == pytest.approx(0.5)
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["state"]["best_epoch"] == 2 and best["model"]["bias"].argmax().item() == 0
    assert best["metrics"]["accuracy"] == pytest.approx(0.5)
    pred = np.load(tmp_path / "predictions.npz")
    assert (pred["logits"].argmax(1) == 0).all() and pred["targets"].tolist() == [0, 0, 0, 1, 1, 2]
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3] and lines == rows


def test_evaluate_and_select_skips_epochs_before_select_from_epoch(tmp_path):
    state, _ = select_epochs(tmp_path, [1, 0, 2], select_from_epoch=3)
    assert state["best_epoch"] == 3 and state["best"] == pytest.approx(1 / 6)  # epoch 2 was better, not eligible
    assert load_checkpoint(tmp_path / "best.pt")["model"]["bias"].argmax().item() == 2


# --- the resume / overwrite policy --------------------------------------------------------------------------


def test_decide_new_overwrite_and_refuse(tmp_path):
    assert decide(tmp_path / "empty") == decide(tmp_path / "empty", resume="auto") == decide(tmp_path, True)
    assert decide(tmp_path / "empty").action == "new"
    (tmp_path / "summary.json").write_text("{}")
    with pytest.raises(RunExistsError, match=r"holds a previous run \(summary.json\); nothing was changed"):
        decide(tmp_path)
    assert decide(tmp_path, overwrite=True) == decide(tmp_path, resume=True, overwrite=True)
    assert decide(tmp_path, overwrite=True).remove == ("summary.json",)
    with pytest.raises(ResumeError, match=r"cannot resume .*: it holds no last.pt or last.pt.prev. Found: summary.json"):
        decide(tmp_path, resume="auto")
    with pytest.raises(ResumeError, match=r"Found: no run files.*or resume='auto'"):
        decide(tmp_path / "none", resume="must")


def test_decide_resumes_a_checkpoint_with_the_same_recipe_only(tmp_path):
    recipe = tiny_recipe()
    save_checkpoint({"recipe": recipe.to_dict(), "state": {"epoch": 1}}, tmp_path / "last.pt")
    assert decide(tmp_path, "must", load=False) == decide(tmp_path, "must", load=False)
    assert decide(tmp_path, "must", load=False).action == "resume"
    decision = decide(tmp_path, "must", recipe=recipe.replace(epochs=5, notes="more epochs"))
    assert decision.action == "resume" and decision.checkpoint["state"] == {"epoch": 1}
    with pytest.raises(ResumeError, match=r"another recipe \(lr: 0.1 in the run, 0.5 now\)"):
        decide(tmp_path, True, recipe=recipe.replace(lr=0.5))
    with pytest.raises(RunExistsError):
        decide(tmp_path, False)
