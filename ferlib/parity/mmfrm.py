"""MMFRM parity: ferlib against ``hutianhan/MMFRM``'s own ``data.py``, ``MMFRM.py`` and ``train_my.py``.

The authors' training lives in the ``if __name__ == "__main__"`` block of ``train_my.py``; it is executed as
that script (its own source, its own argument parser) with four things patched around it, nothing inside it:

* ``torch.utils.data.DataLoader``: its two loaders yield the prepared batches (the same uint8 images for both
  sides, normalised once); on the first call the script's networks exist, and they receive the initial weights;
* the epoch loop ``range(1, args.epochs + 1)``: visits epochs 1, 50 and 51, so that the schedule steps and the
  steps run on both sides of RFLoss switching on (``t > 50``); for the epochs skipped, the script's own scheduler
  object is stepped as the script would have stepped it;
* ``torch.save`` (the best-model save) records instead of writing; the script runs in a temporary folder;
* a stand-in ``torchsummary`` (imported by the script on CPU machines, never called) when it is absent.

The optimiser, its learning rate and weight decay, the schedule, the RFLoss switch epoch and weights, what is
trained (the landmark net is not) and the BatchNorm modes are therefore those the script builds. ferlib's side
is the card's ``rafdb`` entry run by ferlib's engine pieces (``create_model``, ``build_loss``,
``build_optimizer``, ``build_scheduler``, ``Stepper``, ``evaluate``). Stages (docs/papers/mmfrm.md):
``data`` (a), ``augment`` (b), ``train`` (c), ``eval`` (d).
"""
from __future__ import annotations

import builtins
import contextlib
import dataclasses
import io
import math
import random
import sys
import tempfile
import types
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from . import register_parity
from .core import (Check, ParityInputError, ParityOptions, Report, compare_state_dicts, compare_tensors,
                   grey_levels, info, load_record, patched, save_record, tensor_deviation, two_sample, upstream_code,
                   working_dir, zero_dropout)

PAPER = "mmfrm"
REPO = "hutianhan/MMFRM"
#: the RAF-DB fixture (official layout) the comparison reads by default
FIXTURE = Path(__file__).resolve().parents[2] / "tests" / "data" / "fixtures" / "rafdb" / "basic"
#: the recording the replay test reads
RECORDING = Path(__file__).resolve().parents[2] / "tests" / "data" / "parity" / "mmfrm.pt"
#: upstream epochs (1-based) the training stage visits: 1 (the full lr; validation before the t > 5 save rule),
#: then 50 → 51, a real epoch boundary (the script steps its scheduler) and the RFLoss switch (``t > 50``)
EPOCHS = (1, 50, 51)
BATCH = 2
DRAWS = 600
STAGES = ("data", "augment", "train", "eval")
#: replay tolerance: this many times the fp32 floor of each number (another CPU type rounds its kernels differently)
FLOOR_FACTOR = 10.0
#: tensors sampled per parameter / buffer for the recording (the whole state is 35 M numbers)
SAMPLES_PER_TENSOR = 32


# --- inputs ----------------------------------------------------------------------------------------------


def _recipe(batch: int = BATCH):
    from ferlib.recipes import load_recipe

    return load_recipe(PAPER, "rafdb", batch_size=batch)


def _normalise(recipe, x_uint8: torch.Tensor) -> torch.Tensor:
    """ferlib's eval transform of a uint8 batch [B,3,S,S] → float [B,3,input,input]."""
    from ferlib.data.transforms import build_batch_transform

    return build_batch_transform(recipe, train=False)(x_uint8)


def _to_uint8(x: torch.Tensor, recipe) -> tuple[torch.Tensor, float]:
    """A normalised float image [.., 3, H, W] back to uint8 grey levels with the card's mean/std, and the largest
    distance to an integer level (0 when the authors normalise as the card says)."""
    mean = torch.tensor(recipe.mean, dtype=torch.float64).view(3, 1, 1)
    std = torch.tensor(recipe.std, dtype=torch.float64).view(3, 1, 1)
    levels = (x.double() * std + mean) * 255.0
    rounded = levels.round()
    return rounded.clamp(0, 255).to(torch.uint8), float((levels - rounded).abs().max()) if levels.numel() else 0.0


def _levels(x: torch.Tensor, recipe) -> torch.Tensor:
    """A normalised input as whole grey levels (uint8; what :func:`grey_levels` compares exactly)."""
    return _to_uint8(x, recipe)[0]


def _ferlib_split(root: Path, split: str, cache_dir: Path, recipe):
    from ferlib.data.base import SkipWarning
    from ferlib.data.registry import load_dataset

    with warnings.catch_warnings():  # the unreadable fixture image: the table reports it
        warnings.simplefilter("ignore", SkipWarning)
        return load_dataset("rafdb", root, split, cache=cache_dir, cache_size=recipe.stored_size, progress=False)


def _paired(theirs, ours, n: int | None) -> list[tuple[int, int]]:
    """``[(their index, our index)]`` of the images both read, in the list file's order (first ``n``)."""
    where = {Path(str(s)).name: i for i, s in enumerate(ours.samples)}
    pairs = [(i, where[Path(p).name]) for i, p in enumerate(theirs.file_paths) if Path(p).name in where]
    return pairs[:n] if n else pairs


# --- patching helpers ------------------------------------------------------------------------------------


def _shape(size) -> tuple:
    return tuple(size[0]) if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)) else tuple(size)


@contextlib.contextmanager
def _forced_theirs(uniform=None, randint=None, erase=None, box=None, noise=None):
    """Fix every random draw of the authors' train transform: ``random.uniform`` (basic_aug on?),
    ``random.randint`` (flip 0 / noise 1), ``np.random.normal`` (``noise``: a standard normal [H,W,3] scaled by
    their std), ``torch.rand(1)`` of RandomErasing (``erase``) and the box its ``get_params`` returns."""
    from torchvision.transforms import RandomErasing

    real_rand = torch.rand

    def rand(*size, **kw):
        return torch.full((1,), float(erase)) if _shape(size) == (1,) else real_rand(*size, **kw)

    with contextlib.ExitStack() as stack:
        if erase is not None:
            stack.enter_context(patched(torch, "rand", rand))
        if uniform is not None:
            stack.enter_context(patched(random, "uniform", lambda a, b: float(uniform)))
        if randint is not None:
            stack.enter_context(patched(random, "randint", lambda a, b: int(randint)))
        if noise is not None:
            stack.enter_context(patched(np.random, "normal",
                                         lambda mean, std, shape: mean + std * noise.reshape(shape)))
        if box is not None:
            i, j, h, w = box
            stack.enter_context(patched(RandomErasing, "get_params", staticmethod(
                lambda img, scale, ratio, value=None: (i, j, h, w, torch.tensor(value)[:, None, None]))))
        yield


@contextlib.contextmanager
def _forced_ours(tf, u=None, noise=None, erase=None, box=None):
    """Fix the draws of ferlib's batch transform ``tf`` (its module instances only): the basic_aug choice
    ``u`` per image (< 0.25 flip, < 0.5 noise, else none), its noise (the same standard normal [H,W,3]; used
    where the op draws noise of that size) and the erasing (on/off, box)."""
    real_randn = torch.randn

    def rand(*size, **kw):
        return torch.full(_shape(size), float(u), device=kw.get("device"))

    def randn(*size, **kw):
        shape = _shape(size)
        if noise is not None and len(shape) == 4 and shape[-2:] == noise.shape[:2]:
            return torch.from_numpy(noise).permute(2, 0, 1).float().expand(shape).clone().to(kw.get("device") or "cpu")
        return real_randn(*size, **kw)

    def fixed(module):
        forward = module.forward

        def call(x):
            with patched(torch, "rand", rand), patched(torch, "randn", randn):
                return forward(x)
        return call

    with contextlib.ExitStack() as stack:
        for step in (tf.augment or []):
            if type(step).__name__ == "BatchedBasicAug" and u is not None:
                stack.enter_context(patched(step, "forward", fixed(step)))
        er = tf.erasing
        if er is not None and erase is not None:
            if hasattr(er, "sample"):
                def sample(B, H, W, device=None):
                    i, j, h, w = box or (0, 0, 1, 1)
                    full = lambda v: torch.full((B,), int(v), dtype=torch.int64, device=device)  # noqa: E731
                    return {"erase": torch.full((B,), bool(erase), device=device), "top": full(i), "left": full(j),
                            "h": full(h), "w": full(w)}
                stack.enter_context(patched(er, "sample", sample))
            else:  # torchvision's per-image v2.RandomErasing
                from torchvision.transforms import v2
                stack.enter_context(patched(torch, "rand", lambda *s, **k: torch.full((1,), 0.0 if erase else 0.99)))
                if box is not None:
                    real_make = v2.RandomErasing.make_params
                    i, j, h, w = box
                    stack.enter_context(patched(v2.RandomErasing, "make_params", lambda self, fl: {
                        **real_make(self, fl), "i": i, "j": j, "h": h, "w": w}))
        yield


# --- (a) data path ---------------------------------------------------------------------------------------


def _data_stage(report: Report, record: dict, data_mod, root: Path, recipe, cache_dir: Path, n: int | None,
                seed: int, replay: dict | None = None):
    """Eval path of every paired test image; the train path with each random op fixed (first train images)."""
    ours_test = _ferlib_split(root, "test", cache_dir, recipe)
    ours_train = _ferlib_split(root, "train", cache_dir, recipe)
    if replay is None:
        theirs_test = data_mod.RafDataSet(str(root), phase="test")
        theirs_train = data_mod.RafDataSet(str(root), phase="train", basic_aug=True)
        pairs = _paired(theirs_test, ours_test, n)
        t_x = torch.stack([theirs_test[i][0] for i, _ in pairs])
        t_y = torch.tensor([int(theirs_test[i][1]) for i, _ in pairs])
        names = [Path(theirs_test.file_paths[i]).name for i, _ in pairs]
        train_pairs = _paired(theirs_train, ours_train, n)
        skipped = len(theirs_train) - len(_paired(theirs_train, ours_train, None))
    else:
        names, t_y = replay["test_names"], replay["test_labels"]
        where = {Path(str(s)).name: i for i, s in enumerate(ours_test.samples)}
        pairs = [(None, where[nm]) for nm in names]
        t_x = replay["test_inputs"]  # whole grey levels already
        train_where = {Path(str(s)).name: i for i, s in enumerate(ours_train.samples)}
        train_pairs = [(None, train_where[nm]) for nm in replay["train_names"]]
        skipped = replay["train_skipped"]
    o_x = _normalise(recipe, ours_test.batch([j for _, j in pairs]))
    o_y = torch.tensor([int(ours_test.targets[j]) for _, j in pairs])
    t_levels = t_x if t_x.dtype == torch.uint8 else _levels(t_x, recipe)
    report.add(grey_levels("data", f"eval transform, {len(pairs)} test images", _levels(o_x, recipe), t_levels,
                           note="PIL decode + torch bilinear resize (ferlib) vs cv2 decode + PIL Resize((112,112))"))
    report.add(compare_tensors("data", f"labels, {len(pairs)} test images", o_y, t_y))
    report.add(info("data", "unreadable train images", f"{skipped} excluded from both sides",
                    "ferlib skips and counts them; the authors' Dataset fails on them (cv2.imread returns None)"))
    if replay is None:
        record["test_names"] = names
        record["test_labels"] = t_y
        record["test_inputs"], resid = _to_uint8(t_x, recipe)
        report.add(info("data", "authors' inputs as whole grey levels", f"max residual {resid:.1e} levels",
                        "their normalised tensors map back to integer levels with the card's mean/std"))
        train_pairs = train_pairs[:2]
        record["train_names"] = [Path(theirs_train.file_paths[i]).name for i, _ in train_pairs]
        record["train_skipped"] = skipped
    else:
        train_pairs = train_pairs[:2]
    ours_u8 = ours_train.batch([j for _, j in train_pairs])
    rng = np.random.default_rng(seed)
    size = ours_u8.shape[-1]
    noise = rng.standard_normal((size, size, 3))
    top, left = (int(v) for v in rng.integers(0, 40, 2))
    box = (top, left, 30, 50)
    cases = {
        "train transform, every op off": (dict(uniform=0.0, erase=0.99), dict(u=0.99, erase=False)),
        "train transform, flip on": (dict(uniform=0.9, randint=0, erase=0.99), dict(u=0.1, erase=False)),
        "train transform, one noise tensor": (dict(uniform=0.9, randint=1, noise=noise, erase=0.99),
                                              dict(u=0.3, noise=noise, erase=False)),
        f"train transform, erasing box {box}": (dict(uniform=0.0, erase=0.0, box=box),
                                                dict(u=0.99, erase=True, box=box)),
    }
    from ferlib.data.transforms import build_batch_transform

    train_tf = build_batch_transform(recipe, train=True)
    record.setdefault("train_fixed", {})
    for name, (case_theirs, case_ours) in cases.items():
        if replay is None:
            with _forced_theirs(**case_theirs):
                t_case = torch.stack([theirs_train[i][0] for i, _ in train_pairs])
            record["train_fixed"][name], _ = _to_uint8(t_case, recipe)
            record["train_fixed"][name] = (record["train_fixed"][name], top, left)
        else:
            stored = replay["train_fixed"].get(name)
            if stored is None:
                report.add(Check("data", name, "not in the recording", False, "recorded"))
                continue
            t_case = stored[0]
        with _forced_ours(train_tf, **case_ours):
            o_case = train_tf(ours_u8)
        t_levels = t_case if t_case.dtype == torch.uint8 else _levels(t_case, recipe)
        report.add(grey_levels("data", name, _levels(o_case, recipe), t_levels))
    return ours_test, ours_train, pairs


# --- (b) augmentation distributions ----------------------------------------------------------------------


def _classify(out: torch.Tensor, plain: torch.Tensor, flipped: torch.Tensor) -> dict:
    """Per draw [N,3,H,W] (normalised): erased mask (exact zeros in all channels), the basic_aug outcome
    (0 none, 1 flip, 2 noise), the erased box's height/width and the residual noise variance (grey levels²)."""
    erased = (out == 0).all(1)                                          # [N,H,W]
    keep = ~erased[:, None].expand_as(out)
    same = ((out == plain) | ~keep).flatten(1).all(1)
    flip = ((out == flipped) | ~keep).flatten(1).all(1)
    outcome = torch.where(same, 0, torch.where(flip, 1, 2))
    rows, cols = erased.any(2), erased.any(1)
    h, w = rows.sum(1), cols.sum(1)
    resid = (out - plain) * 255.0
    var = torch.stack([resid[i][keep[i]].double().var() if outcome[i] == 2 else torch.tensor(0.0, dtype=torch.float64)
                       for i in range(out.shape[0])])
    return {"erased": erased.flatten(1).any(1), "outcome": outcome, "h": h, "w": w, "var": var}


def _unnormalise_std(x: torch.Tensor, recipe) -> torch.Tensor:
    return x * torch.tensor(recipe.std).view(1, 3, 1, 1)


def _draws_theirs(theirs_train, index: int, n: int, seed: int, recipe) -> dict:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    with _forced_theirs(uniform=0.0, erase=0.99):
        plain = theirs_train[index][0]
    with _forced_theirs(uniform=0.9, randint=0, erase=0.99):
        flipped = theirs_train[index][0]
    out = torch.stack([theirs_train[index][0] for _ in range(n)])
    return _stats(out, plain, flipped, recipe)


def _stats(out, plain, flipped, recipe) -> dict:
    s = _unnormalise_std
    c = _classify(s(out, recipe), s(plain[None], recipe), s(flipped[None], recipe))
    c["erased"] = (out == 0).all(1).flatten(1).any(1)
    e = c["erased"]
    return {"flip": c["outcome"] == 1, "noise": c["outcome"] == 2, "outcome": c["outcome"], "erased": e,
            "area": (c["h"] * c["w"])[e].double() / (out.shape[-1] * out.shape[-2]),
            "aspect": (c["h"][e].double() / c["w"][e].clamp_min(1).double()),
            "noise_var": c["var"][c["outcome"] == 2]}


def _draws_ours(ours_train, index: int, n: int, seed: int, recipe) -> dict:
    from ferlib.data.transforms import build_batch_transform

    torch.manual_seed(seed)
    tf = build_batch_transform(recipe, train=True)
    x = ours_train.batch([index]).expand(n, -1, -1, -1).contiguous()
    with _forced_ours(tf, u=0.99, erase=False):
        plain = tf(x[:2])[0]
    with _forced_ours(tf, u=0.1, erase=False):
        flipped = tf(x[:2])[0]
    return _stats(tf(x), plain, flipped, recipe)


def _augment_stage(report: Report, record: dict, theirs_train, ours_train, recipe, seed: int,
                   replay: dict | None = None):
    index_ours = {Path(str(s)).name: i for i, s in enumerate(ours_train.samples)}
    if replay is None:
        their_index = _paired(theirs_train, ours_train, 1)[0][0]
        name = Path(theirs_train.file_paths[their_index]).name
        theirs = _draws_theirs(theirs_train, their_index, DRAWS, seed, recipe)
        record["augment"] = {"image": name, **theirs}
    else:
        theirs = replay["augment"]
        name = theirs["image"]
    ours = _draws_ours(ours_train, index_ours[name], DRAWS, seed + 1, recipe)
    report.add(two_sample("augment", "basic_aug outcome (none / flip / noise)", ours["outcome"], theirs["outcome"],
                          "categorical", note="upstream: p 0.5, then flip or noise 50/50"))
    report.add(two_sample("augment", "flip rate", ours["flip"], theirs["flip"], "binary"))
    report.add(two_sample("augment", "noise rate", ours["noise"], theirs["noise"], "binary"))
    report.add(two_sample("augment", "noise variance on the network input (grey levels²)", ours["noise_var"],
                          theirs["noise_var"], note="var 30 drawn on the stored image, then resized to 112"))
    report.add(two_sample("augment", "erasing rate", ours["erased"], theirs["erased"], "binary"))
    report.add(two_sample("augment", "erasing area (fraction of 112²)", ours["area"], theirs["area"]))
    report.add(two_sample("augment", "erasing aspect (h / w)", ours["aspect"], theirs["aspect"]))
    report.add(info("augment", "erasing value", "0 in both (normalised space)",
                    "an erased pixel is recognised by exact zeros in the three channels"))


# --- (c) training: the authors' script -------------------------------------------------------------------


@dataclass
class _Plan:
    """The batches of each visited epoch, the validation batches, the initial weights."""

    epochs: tuple
    train: dict                      # epoch -> [(uint8 [B,3,S,S], targets [B])]
    val: list                        # [(uint8 [B,3,S,S], targets [B])]
    init: dict                       # ferlib state dict (keys landmark.* / network.*)
    recipe: object
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def inputs(self, u8: torch.Tensor) -> torch.Tensor:
        return _normalise(self.recipe, u8).to(self.device)


def _epoch_batches(n_items: int, steps: int, seed: int, batch: int) -> dict:
    """Items of each visited epoch's batches: a seeded permutation per epoch, ``steps`` spread over the epochs."""
    per = [steps // len(EPOCHS) + (k < steps % len(EPOCHS)) for k in range(len(EPOCHS))]
    out = {}
    for k, t in enumerate(EPOCHS):
        g = torch.Generator().manual_seed(seed * 1000 + t)
        order = torch.randperm(n_items, generator=g).tolist()
        order = (order * (1 + per[k] * batch // max(1, n_items)))[: per[k] * batch]
        out[t] = [order[b * batch:(b + 1) * batch] for b in range(per[k])]
    return out


def _initial_weights(seed: int, recipe) -> dict:
    from ferlib.models import create_model

    torch.manual_seed(seed)
    model = create_model(recipe.model, num_classes=recipe.num_classes, **recipe.model_kwargs)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}




class _Loader:
    """What the script's ``DataLoader(...)`` calls return: the planned batches, as (imgs, targets, indexes)."""

    def __init__(self, plan: _Plan, g: dict, train: bool):
        self.plan, self.g, self.train = plan, g, train

    def __iter__(self):
        batches = self.plan.train[self.g["t"]] if self.train else self.plan.val
        for u8, y in batches:
            yield self.plan.inputs(u8), y.clone(), torch.arange(len(y))

    def __len__(self):
        return len(self.plan.train[self.g["t"]]) if self.train else len(self.plan.val)


def _split_state(init: dict) -> tuple[dict, dict]:
    net = {k[len("network."):]: v for k, v in init.items() if k.startswith("network.")}
    lm = {k[len("landmark."):]: v for k, v in init.items() if k.startswith("landmark.")}
    return net, lm


def run_authors_script(upstream: Path, root: Path, plan: _Plan) -> dict:
    """Execute ``train_my.py`` as a script on the plan; returns what it did: per-step (epoch, loss, lr), its
    optimiser's hyper-parameters and trained parameter names, its final states, validation logits and accuracies."""
    script = upstream / "train_my.py"
    if not script.is_file():
        raise ParityInputError(f"{script} not found; --upstream must be a checkout of {REPO}")
    steps, val_logits, saved, notes = [], {}, [], {}
    g: dict = {"__name__": "__main__", "__file__": str(script), "__builtins__": builtins}
    last = max(plan.epochs)

    def epochs_range(*args):
        if args != (1, last + 1):
            return builtins.range(*args)

        def visit():
            prev = 0
            for t in plan.epochs:
                for _ in builtins.range(t - prev - 1 if prev else t - 1):
                    g["scheduler"].step()  # the epochs not run: stepped as the script steps it after each epoch
                prev = t
                yield t
        return visit()

    g["range"] = epochs_range
    calls = []

    def loader(dataset, batch_size=1, shuffle=False, **kw):
        calls.append((type(dataset).__name__, batch_size, shuffle))
        if len(calls) == 1:  # the networks, optimiser and scheduler exist: give them the initial weights
            net, lm = _split_state(plan.init)
            g["network"].load_state_dict(net, strict=True)
            g["networkMobile"].load_state_dict(lm, strict=True)
            notes["dropout_zeroed"] = zero_dropout(g["network"]) + zero_dropout(g["networkMobile"])

            def hook(module, inputs, output):
                if not torch.is_grad_enabled():
                    val_logits.setdefault(g["t"], []).append(output[1].detach().cpu().clone())
            g["network"].register_forward_hook(hook)
        return _Loader(plan, g, train=shuffle)

    def pre_step(optimizer, args, kwargs):
        if optimizer is g.get("optimizer"):
            steps.append((int(g["t"]), float(g["loss"]), float(optimizer.param_groups[0]["lr"])))
            if "trained" not in notes:
                names = {id(p): n for n, p in g["network"].named_parameters()}
                names.update({id(p): f"landmark.{n}" for n, p in g["networkMobile"].named_parameters()})
                notes["trained"] = _updated(optimizer, names)

    source = script.read_text(encoding="utf-8", errors="replace")
    argv = [str(script), "--raf_path", str(root), "--batch_size", str(plan.recipe.batch_size), "--epochs", str(last),
            "--workers", "0"]
    stack = contextlib.ExitStack()
    with stack, tempfile.TemporaryDirectory() as work:
        if "torchsummary" not in sys.modules:
            try:
                import torchsummary  # noqa: F401
            except ImportError:
                stub = types.ModuleType("torchsummary")
                stub.summary = lambda *a, **k: None
                stack.enter_context(_patched_module("torchsummary", stub))
                notes["torchsummary"] = "stand-in (imported by the script on CPU, never called)"
        stack.enter_context(patched(sys, "argv", argv))
        stack.enter_context(patched(torch.utils.data, "DataLoader", loader))
        stack.enter_context(patched(torch, "save", lambda obj, f, *a, **k: saved.append(str(f))))
        stack.enter_context(working_dir(work))
        stack.enter_context(patched(torch.cuda, "is_available", lambda: plan.device.type == "cuda"))
        stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
        handle = register_optimizer_step_pre_hook(pre_step)
        stack.callback(handle.remove)
        stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("ignore")  # the script's own warnings (a tensor turned into a float in its RR loop)
        exec(compile(source, str(script), "exec"), g)  # noqa: S102 - the authors' script, by design
    opt = g["optimizer"]
    hyper = {k: v for k, v in opt.param_groups[0].items() if k not in ("params", "lr", "initial_lr")}
    return {"steps": steps, "hyper": hyper, "trained": notes.get("trained", []), "base_lr": opt.param_groups[0].get("initial_lr"),
            "network": g["network"].state_dict(), "landmark": g["networkMobile"].state_dict(),
            "val_logits": {t: torch.cat(v) for t, v in val_logits.items()},
            "accuracies": [float(a) for a in g["valaccuracylist"]], "saved": saved, "notes": notes,
            "loader_calls": calls}


@contextlib.contextmanager
def _patched_module(name: str, module):
    sys.modules[name] = module
    try:
        yield
    finally:
        sys.modules.pop(name, None)


# --- (c) training: ferlib's engine -----------------------------------------------------------------------


def run_ferlib(plan: _Plan) -> dict:
    """The card's recipe by ferlib's engine pieces on the plan: per-step (epoch, loss, lr), final state,
    validation logits and metrics per visited epoch."""
    from ferlib.data.base import ArrayDataset
    from ferlib.labels import LABEL_SETS
    from ferlib.engine.loop import evaluate
    from ferlib.optim import build_optimizer, build_scheduler
    from ferlib.engine.training import build_loss
    from ferlib.engine.step import Stepper
    from ferlib.models import create_model

    recipe, device = plan.recipe, plan.device
    model = create_model(recipe.model, num_classes=recipe.num_classes, **recipe.model_kwargs)
    model.load_state_dict(plan.init, strict=True)
    dropout = zero_dropout(model)
    model.to(device)
    loss = build_loss(recipe).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(params, recipe)
    scheduler = build_scheduler(optimizer, recipe, recipe.epochs)
    stepper = Stepper(model, loss, optimizer, params, [], device, recipe.precision, 1, recipe.batch_size)
    names = {id(p): n[len("network."):] if n.startswith("network.") else n for n, p in model.named_parameters()}
    trained: list = []

    def first_step(opt, args, kwargs):
        if not trained:
            trained.extend(_updated(opt, names))
    optimizer.register_step_pre_hook(first_step)
    val_u8 = torch.cat([u8 for u8, _ in plan.val]).permute(0, 2, 3, 1).numpy()
    val_y = torch.cat([y for _, y in plan.val]).tolist()
    val = ArrayDataset(val_u8, list(range(len(val_y))), val_y, LABEL_SETS["rafdb"], ".", "test")
    steps, logits, metrics = [], {}, {}
    for t in plan.epochs:
        while scheduler.last_epoch < t - 1:
            scheduler.step()
        if hasattr(loss, "set_epoch"):
            loss.set_epoch(t - 1)
        model.train()
        for u8, y in plan.train[t]:
            lr = float(optimizer.param_groups[0]["lr"])
            value, _, _ = stepper.micro(plan.inputs(u8), y.to(device), True)
            steps.append((t, float(value), lr))
        result = evaluate(model, val, recipe, device, progress=False)
        logits[t] = torch.from_numpy(result["predictions"]["logits"])
        metrics[t] = {k: result[k] for k in ("accuracy", "mean_class_accuracy", "macro_f1")}
    hyper = {k: v for k, v in optimizer.param_groups[0].items() if k not in ("params", "lr", "initial_lr")}
    return {"steps": steps, "state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "val_logits": logits, "metrics": metrics, "trained": trained, "hyper": hyper,
            "base_lr": recipe.lr, "dropout_zeroed": dropout, "val_targets": torch.tensor(val_y)}


def _updated(optimizer, names: dict) -> list[str]:
    """Names of the tensors ``optimizer`` changes at this step: in its groups and with a gradient."""
    return sorted(names.get(id(p), "?") for group in optimizer.param_groups for p in group["params"]
                  if p.grad is not None)


def _sample_state(state: dict, seed: int) -> dict:
    """A fixed sample of every tensor (the same positions for both sides): ``SAMPLES_PER_TENSOR`` elements + sum."""
    out = {}
    for k in sorted(state):
        t = state[k].detach().cpu().flatten()
        g = torch.Generator().manual_seed(seed + len(k) * 7919 + sum(map(ord, k)))
        idx = torch.randint(0, max(1, t.numel()), (min(SAMPLES_PER_TENSOR, t.numel()),), generator=g)
        v = t[idx]
        out[k] = torch.cat([v.double(), t.double().sum()[None]]) if t.is_floating_point() else v
    return out


def _hyper_rows(ours: dict, theirs_hyper: dict, theirs_base_lr) -> list[Check]:
    rows = [Check("train", "optimiser base lr", f"{ours['base_lr']:g} vs {theirs_base_lr:g}",
                  math.isclose(ours["base_lr"], theirs_base_lr, rel_tol=1e-9), "equal")]
    for key in ("weight_decay", "betas", "eps", "amsgrad", "momentum", "nesterov", "dampening", "maximize"):
        if key in theirs_hyper or key in ours["hyper"]:
            a, b = ours["hyper"].get(key), theirs_hyper.get(key)
            same = (tuple(a) == tuple(b)) if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)) else a == b
            rows.append(Check("train", f"optimiser {key}", f"{a} vs {b}", same, "equal"))
    return rows


def _train_rows(report: Report, ours: dict, theirs: dict, loss_floor: list | None = None) -> None:
    report.add(_hyper_rows(ours, theirs["hyper"], theirs["base_lr"]))
    o_tr, t_tr = ours["trained"], theirs["trained"]
    report.add(Check("train", "parameters the optimiser updates", f"{len(o_tr)} vs {len(t_tr)} tensors",
                     o_tr == t_tr, "the same tensors",
                     "in the optimiser with a gradient; the landmark MobileFaceNet is not in the optimiser (frozen)"))
    o_steps, t_steps = ours["steps"], theirs["steps"]
    if len(o_steps) != len(t_steps):
        report.add(Check("train", "steps run", f"{len(o_steps)} vs {len(t_steps)}", False, "equal"))
        return
    epochs = " ".join(str(t) for t, _, _ in t_steps)
    report.add(compare_tensors("train", f"per-step lr (epochs {epochs})", [s[2] for s in o_steps],
                               [s[2] for s in t_steps], rel_tol=1e-9))
    note = "epoch 51: 0.9·CE + 0.2·RR (RFLoss as coded)"
    if loss_floor is None:
        report.add(compare_tensors("train", f"per-step loss (epochs {epochs})", [s[1] for s in o_steps],
                                   [s[1] for s in t_steps], note=note))
        return
    devs = [abs(a[1] - b[1]) / max(1.0, abs(b[1])) for a, b in zip(o_steps, t_steps)]
    tols = [_tol(f) for f in loss_floor]
    report.add(Check("train", f"per-step loss (epochs {epochs})", ", ".join(f"{d:.1e}" for d in devs),
                     all(d <= t for d, t in zip(devs, tols)), "≤ " + ", ".join(f"{t:.0e}" for t in tols) + " rel.",
                     note + "; tolerance per step: max(1e-5, 10×floor)"))


# --- the adapter -----------------------------------------------------------------------------------------


def _n_images(opts: ParityOptions) -> int | None:
    """Images per split compared: ``--n-images``; every fixture image; the first 64 of a real dataset."""
    return opts.n_images or (64 if opts.data_root else None)


def _batches_from(u8: torch.Tensor, y: torch.Tensor, items: dict) -> dict:
    return {t: [(u8[idx], y[idx]) for idx in batches] for t, batches in items.items()}


def run(opts: ParityOptions, stages=STAGES, replay: dict | None = None, compare_fused: bool = True) -> Report:
    """The MMFRM parity table for ``opts`` (``stages``: a subset of :data:`STAGES`); ``replay``: a recording
    replayed without the checkout (ferlib's side against the recorded authors' side)."""
    report = Report(PAPER)
    record: dict = {"paper": PAPER, "seed": opts.seed, "epochs": EPOCHS, "batch": BATCH}
    recipe = _recipe()
    root = Path(opts.data_root).expanduser().resolve() if opts.data_root else FIXTURE
    if not (root / "EmoLabel").is_dir():
        raise ParityInputError(f"{root} is not a RAF-DB basic folder (EmoLabel/, Image/aligned/); pass --data-root "
                               "with the official layout")
    steps = opts.steps or len(EPOCHS)
    if steps < len(EPOCHS):
        raise ParityInputError(f"--steps {steps}: MMFRM needs at least {len(EPOCHS)} (one per visited epoch "
                               f"{EPOCHS}: an epoch boundary and the RFLoss switch)")
    device = torch.device(opts.device)
    if replay is not None:
        report.add(info("info", "replay", f"recording of {REPO} (seed {replay['seed']})",
                        "the authors' side is read from the recording; ferlib's side runs now"))
        seed = int(replay["seed"])
    else:
        seed = opts.seed
    report.add(info("info", "authors' code", REPO if replay else str(opts.upstream),
                    "train_my.py executed as a script; DataLoader, the epoch range, torch.save patched"))
    report.add(info("info", "data", str(root) if opts.data_root else "RAF-DB fixture (tests/data/fixtures/rafdb/basic)"))
    with tempfile.TemporaryDirectory() as cache, \
            (upstream_code(opts.upstream, report=report) if replay is None else contextlib.nullcontext()) as up:
        cache = Path(cache)
        data_mod = up.import_module("data") if up is not None else None
        ours_test, ours_train, _ = (None, None, None)
        if "data" in stages or replay is not None:
            ours_test, ours_train, _ = _data_stage(report, record, data_mod, root, recipe, cache,
                                                   _n_images(opts), seed, replay)
        if ours_train is None:
            ours_test = _ferlib_split(root, "test", cache, recipe)
            ours_train = _ferlib_split(root, "train", cache, recipe)
        theirs_train = data_mod.RafDataSet(str(root), phase="train", basic_aug=True) if data_mod else None
        if "augment" in stages:
            _augment_stage(report, record, theirs_train, ours_train, recipe, seed, replay)
        if "train" in stages or "eval" in stages:
            _train_and_eval(report, record, opts, up, theirs_train, ours_train, ours_test, recipe, root, steps, seed,
                            device, replay, compare_fused)
    if opts.record and replay is None:
        save_record(opts.record, record)
    return report


def _train_and_eval(report, record, opts, up, theirs_train, ours_train, ours_test, recipe, root, steps, seed,
                    device, replay, compare_fused: bool = True):
    from ferlib.weights import convert_upstream

    recipe_b = recipe
    if replay is None:
        their_test = up.import_module("data").RafDataSet(str(root), phase="test")
        val_pairs = _paired(their_test, ours_test, BATCH * 2)
        with _forced_theirs(uniform=0.0, erase=0.99):  # augmentation off: basic_aug and erasing never fire
            tr_pairs = _paired(theirs_train, ours_train, _n_images(opts))
            tr = [theirs_train[i] for i, _ in tr_pairs]
        tr_u8, _ = _to_uint8(torch.stack([x for x, _, _ in tr]), recipe)
        tr_y = torch.tensor([int(y) for _, y, _ in tr])
        va_u8, _ = _to_uint8(torch.stack([their_test[i][0] for i, _ in val_pairs]), recipe)
        va_y = torch.tensor([int(their_test[i][1]) for i, _ in val_pairs])
    else:
        tr_u8, tr_y, va_u8, va_y = (replay[k] for k in ("train_u8", "train_y", "val_u8", "val_y"))
    if replay is None:  # the images of the planned batches only (what the recording keeps)
        items = _epoch_batches(len(tr_y), steps, seed, BATCH)
        used = sorted({i for batches in items.values() for b in batches for i in b})
        remap = {i: k for k, i in enumerate(used)}
        items = {t: [[remap[i] for i in b] for b in batches] for t, batches in items.items()}
        tr_u8, tr_y = tr_u8[used], tr_y[used]
        record["items"] = items
    else:
        items = replay["items"]
        steps = sum(len(b) for b in items.values())
    val = [(va_u8[i:i + BATCH], va_y[i:i + BATCH]) for i in range(0, len(va_y), BATCH)]
    plan = _Plan(EPOCHS, _batches_from(tr_u8, tr_y, items), val, _initial_weights(seed, recipe_b), recipe_b, device)
    report.add(info("train", "what runs", f"{steps} steps of batch {BATCH} in epochs {', '.join(map(str, EPOCHS))}; "
                    f"{len(va_y)} validation images after each",
                    "augmentation off and dropout p=0 in both; the same uint8 batches; initial weights drawn by "
                    f"ferlib's init with seed {seed}, loaded strictly into both"))
    # the strict comparison: ferlib's engine with the authors' per-parameter Adam (torch's CPU default)
    per_param = recipe.replace(optimizer_kwargs={**(recipe.optimizer_kwargs or {}), "foreach": False})
    ours = run_ferlib(dataclasses.replace(plan, recipe=per_param))
    fused = run_ferlib(plan) if compare_fused else None
    floor = _floor(ours, run_ferlib(dataclasses.replace(plan, recipe=per_param, init=_nudged(plan.init, seed))),
                   seed) if replay is not None else None
    if floor is not None:
        report.add(info("train", "fp32 floor of this machine", "per-step loss " + ", ".join(
                        f"{f:.1e}" for f in floor["loss"]) + f"; logits "
                        f"{max(floor['logits'].values()):.1e}, tensors ≤ {max(floor['state'].values()):.1e} rel.",
                        "ferlib against itself with its starting weights moved by one ulp: a recording replayed on "
                        f"another CPU type differs by kernel rounding; replay tolerances are max(1e-5, "
                        f"{FLOOR_FACTOR:g}×floor)"))
    if replay is None:
        theirs = run_authors_script(Path(opts.upstream).expanduser().resolve(), root, plan)
        converted = convert_upstream(PAPER, {"network": theirs["network"], "landmark": theirs["landmark"]})
        if theirs["notes"].get("torchsummary"):
            report.add(info("info", "torchsummary", theirs["notes"]["torchsummary"]))
        report.add(info("train", "dropout", f"p=0 in {theirs['notes']['dropout_zeroed']} authors' / "
                        f"{ours['dropout_zeroed']} ferlib modules"))
        record.update(train_u8=tr_u8, train_y=tr_y, val_u8=va_u8, val_y=va_y, steps=theirs["steps"],
                      hyper={k: (list(v) if isinstance(v, tuple) else v) for k, v in theirs["hyper"].items()},
                      base_lr=theirs["base_lr"], trained=theirs["trained"], val_logits=theirs["val_logits"],
                      accuracies=theirs["accuracies"], state_sample=_sample_state(converted, seed))
        their_state, ours_state, label = converted, ours["state"], "parameters and buffers"
        fused_state = fused["state"] if fused else None
    else:
        theirs = {k: replay[k] for k in ("steps", "hyper", "base_lr", "trained")}
        their_state, ours_state = replay["state_sample"], _sample_state(ours["state"], seed)
        fused_state = _sample_state(fused["state"], seed) if fused else None
        label = f"parameters and buffers ({SAMPLES_PER_TENSOR} recorded elements + sum each)"
    _train_rows(report, ours, theirs, floor["loss"] if floor else None)
    head = [k for k in their_state if k.startswith("landmark.output_layer.") and
            k.rsplit(".", 1)[-1] in ("running_mean", "running_var", "num_batches_tracked")]
    rest = lambda state: {k: v for k, v in state.items() if k not in head}  # noqa: E731
    if floor is None:
        report.add(compare_state_dicts("train", rest(ours_state), rest(their_state), name=label,
                                       note="ferlib with the authors' per-parameter Adam (foreach=False)"))
    else:
        report.add(_compare_with_floor(rest(ours_state), rest(their_state), floor["state"], label))
    report.add(_head_row(ours_state, their_state, head))
    if fused is not None:
        report.add(_fused_rows(fused, fused_state, theirs["steps"], rest(their_state),
                               replay["val_logits"] if replay else theirs["val_logits"]))
    their_logits, their_acc = (replay or theirs)["val_logits"], (replay or theirs)["accuracies"]
    _eval_rows(report, ours, their_logits, their_acc, floor)


def _nudged(state: dict, seed: int) -> dict:
    """``state`` with every float tensor moved by about one ulp (×(1 ± 2⁻²³), the sign drawn from ``seed``)."""
    g = torch.Generator().manual_seed(seed + 1)
    out = {}
    for k, v in state.items():
        if v.is_floating_point():
            sign = torch.randint(0, 2, v.shape, generator=g).to(v.dtype) * 2 - 1
            v = v * (1 + sign * 2.0 ** -23)
        out[k] = v
    return out


def _floor(ours: dict, nudged: dict, seed: int) -> dict:
    """Deviations between two ferlib runs that differ only by one-ulp starting weights: per-step loss, validation
    logits per epoch, every sampled tensor (the scale a replay on another CPU type must allow)."""
    a, b = _sample_state(ours["state"], seed), _sample_state(nudged["state"], seed)
    return {"loss": [abs(x[1] - y[1]) / max(1.0, abs(y[1])) for x, y in zip(ours["steps"], nudged["steps"])],
            "logits": {t: tensor_deviation(ours["val_logits"][t], nudged["val_logits"][t])[0]
                       for t in ours["val_logits"]},
            "state": {k: tensor_deviation(a[k], b[k])[0] for k in a if a[k].is_floating_point()}}


def _tol(floor: float) -> float:
    return max(1e-5, FLOOR_FACTOR * floor)


def _compare_with_floor(ours: dict, theirs: dict, floor: dict, name: str) -> list[Check]:
    """Every tensor within max(1e-5, FLOOR_FACTOR × its floor): a summary row, then one per failing tensor."""
    rows, worst = [], (0.0, "", 0.0)
    missing = sorted(set(ours) ^ set(theirs))
    for k in theirs:
        if k not in ours:
            continue
        row = compare_tensors("train", k, ours[k], theirs[k], rel_tol=_tol(floor.get(k, 0.0)))
        if not row.ok:
            rows.append(row)
        elif theirs[k].is_floating_point():
            dev = tensor_deviation(ours[k], theirs[k])[0]
            worst = max(worst, (dev, k, floor.get(k, 0.0)))
    dev, key, fl = worst
    summary = Check("train", name, f"{len(theirs) - len(rows) - len(missing)}/{len(theirs)} tensors within; worst "
                    f"{dev:.1e} ({key}, floor {fl:.1e})", not rows and not missing,
                    f"≤ max(1e-5, {FLOOR_FACTOR:g}×floor) rel. each",
                    "keys on one side only: " + ", ".join(missing[:3]) if missing else "")
    return [summary] + rows


def _head_row(ours: dict, theirs: dict, keys: list[str]) -> Check:
    """The landmark net's GDC head: ferlib does not run it, so its BatchNorm statistics keep their initial values."""
    floats = [k for k in keys if theirs[k].is_floating_point()]
    dev = max((tensor_deviation(ours[k], theirs[k])[0] for k in floats), default=0.0)
    counts = [k for k in keys if not theirs[k].is_floating_point()]
    tracked = ", ".join(f"{int(ours[k].flatten()[0])} vs {int(theirs[k].flatten()[0])}" for k in counts[:1])
    return Check("train", "landmark GDC head BatchNorm statistics (differ on purpose)",
                 f"{len(keys)} buffers, worst {dev:.2g} rel.; batches tracked {tracked}", True, "named difference",
                 "ferlib does not run the landmark net's head (GDC, alpha, fc): its output never reaches MMFRM's, so "
                 "these statistics keep their initial values; every output and the validation logits are equal")


def _fused_rows(fused: dict, fused_state: dict | None, their_steps: list, their_state: dict, their_logits: dict):
    """ferlib's default fused Adam against the authors' run: the loss and logits within fp32; the parameters named."""
    rows = [compare_tensors("train", "per-step loss, ferlib's default fused Adam", [s[1] for s in fused["steps"]],
                            [s[1] for s in their_steps], note="the card's optimiser as ferlib runs it (fused=True)")]
    last = max(their_logits)
    rows.append(compare_tensors("train", f"validation logits after epoch {last}, fused Adam", fused["val_logits"][last],
                                their_logits[last]))
    shared = [k for k in their_state if k in fused_state and their_state[k].is_floating_point()]
    devs = sorted(((tensor_deviation(fused_state[k], their_state[k])[0], k) for k in shared), reverse=True)
    worst, key = devs[0] if devs else (0.0, "")
    within = sum(d <= 1e-5 for d, _ in devs)
    rows.append(Check("train", "parameters, ferlib's default fused Adam (differs on purpose)",
                      f"{within}/{len(devs)} within 1e-5; worst {worst:.1e} ({key})", True, "named difference",
                      "the fused update rounds differently (1 ulp); Adam turns that into up to ±lr per step where the "
                      "exact gradient is 0 (conv biases before BatchNorm, and their BN's running mean); losses and "
                      "logits stay within fp32. foreach=False in optimizer_kwargs gives the authors' update"))
    return rows


def _eval_rows(report: Report, ours: dict, their_logits: dict, their_acc: list, floor: dict | None = None) -> None:
    """(d): the authors' accuracy (bingo / samples, rounded to 4 places) and ferlib's from the same logits."""
    from ferlib.metrics import classification_metrics

    y = ours["val_targets"].numpy()
    for k, t in enumerate(EPOCHS):
        if t not in their_logits or k >= len(their_acc):
            report.add(Check("eval", f"epoch {t}", "the authors' script did not validate", False, "ran"))
            continue
        report.add(compare_tensors("eval", f"validation logits, epoch {t}", ours["val_logits"][t], their_logits[t],
                                   rel_tol=_tol(floor["logits"][t]) if floor else 1e-5,
                                   note="landmark BatchNorm on batch statistics in both (train mode, as coded)"))
        mine = classification_metrics(their_logits[t].numpy(), y, [str(c) for c in range(7)])["accuracy"]
        report.add(Check("eval", f"accuracy from the authors' logits, epoch {t}",
                         f"{round(mine, 4):.4f} vs {their_acc[k]:.4f}", round(mine, 4) == round(their_acc[k], 4),
                         "equal (4 places, as printed upstream)"))


def replay_recording(path: str | Path = RECORDING, compare_fused: bool = True) -> Report:
    """ferlib against a recording of the authors' side (``--record``; no checkout needed)."""
    rec = load_record(path)
    return run(ParityOptions(upstream=".", seed=int(rec["seed"])), replay=rec, compare_fused=compare_fused)


@register_parity(PAPER, repo=REPO)
def parity_mmfrm(opts: ParityOptions) -> Report:
    return run(opts)
