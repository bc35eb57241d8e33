"""FERMam parity: ferlib against the authors' ``train.py`` (jxcsglr/FERMam), stage by stage.

``python -m ferlib parity fermam --upstream DIR`` (``DIR``: a clone of jxcsglr/FERMam). The authors' side
is their own code, run by :func:`ferlib.parity.fermam_upstream.run_authors_training` (their script's
``run_training()`` with the data loader, step count, model start and saving patched); ferlib's side is
its RAF-DB reader, uint8 cache, batched transforms, model, loss, ``build_optimizer`` / ``build_scheduler``
and the engine's :class:`~ferlib.engine.step.Stepper` with the card's ``rafdb`` entry.

Stages: (a) ``data`` — the same files through their ``RafDataSet`` + transforms and through ferlib's
reader + cache + batch transform, in grey levels, with each random op fixed (flip on / off, a noise
tensor, an erasing box); (b) ``augment`` — draws of every random op of their train transform against
ferlib's batched op (two-sample tests); (c) ``train`` — K SAM steps over two epochs on the same batches
(augmentation and dropout off): per-step losses of both SAM passes, learning rates, evaluation logits
after each epoch and every parameter and buffer; (d) ``eval`` — accuracy and macro F1 from the authors'
logits, ferlib's metrics against their script's.

fp32 training is chaotic at this scale (random weights, batches of 2): two correct fp32 implementations
drift apart step by step. The ``train`` tolerance of each tensor is therefore ``max(1e-5, 10 × floor)``
where ``floor`` is that tensor's deviation between two ferlib runs that differ only in float rounding
(fused Adam + chunked scan against per-parameter Adam + the reference scan); both are reported.
"""
from __future__ import annotations

import contextlib
import math
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from . import register_parity
from .core import (FP32_REL_TOL, Check, ParityInputError, ParityOptions, Report, compare_tensors, grey_levels, info,
                   patched, save_record, state_digest, tensor_deviation, two_sample, upstream_code, zero_dropout)
from .fermam_upstream import code_dir, loadable_indices, run_authors_training, steps_layout, thop_standin

PAPER = "fermam"
BATCH = 2            # images per step (tiny: IR-50 costs ~0.25 s per image and pass on one CPU thread)
N_VAL = 7            # one evaluation batch, one image of each RAF-DB class
N_DRAWS = 600        # draws per random op in the augment stage
FLOOR_FACTOR = 10.0  # train-stage tolerance: this many times the fp32 floor of each tensor
SAMPLES_PER_TENSOR = 32


def fixture_root() -> Path:
    """The RAF-DB fixture in the source tree (``tests/data/fixtures/rafdb/basic``)."""
    return Path(__file__).resolve().parents[2] / "tests" / "data" / "fixtures" / "rafdb" / "basic"


def card_recipe(**overrides):
    from ferlib.recipes import load_recipe

    return load_recipe(PAPER, "rafdb", **overrides)


# --- ferlib's data side ---------------------------------------------------------------------------------


def ferlib_split(data_root: Path, split: str, cache_dir: Path, recipe, names: list[str] | None = None):
    """ferlib's reader + uint8 cache (at the card's ``stored_size``) of ``split``, restricted to ``names``
    (file names of ``Image/aligned``) when given."""
    import copy

    from ferlib.data import load_dataset
    from ferlib.data.cache import build_cache

    ds = load_dataset("rafdb", data_root, split, progress=False)
    if names is not None:
        keep = [i for i, s in enumerate(ds.samples) if Path(s).name in set(names)]
        ds = copy.copy(ds)
        ds.samples, ds.targets = [ds.samples[i] for i in keep], [ds.targets[i] for i in keep]
    return build_cache(ds, cache_dir / split, size=recipe.stored_size or recipe.input_size, progress=False)


def cache_check(cached, indices: list[int], recipe) -> Check:
    """ferlib's uint8 cache at ``stored_size`` against the image files decoded afresh (a deliberate difference of
    ferlib: each file is decoded once; lossless when the files already have that size, as RAF-DB's crops)."""
    from ferlib.data.base import decode_image, to_chw_tensor

    files = [to_chw_tensor(decode_image(cached.samples[j])) for j in indices]
    stored = [cached.load(j) for j in indices]
    size = recipe.stored_size or recipe.input_size
    name = f"uint8 cache at stored_size {size} vs the decoded files"
    if any(f.shape != s.shape for f, s in zip(files, stored)):
        return info("data", name, f"files of another size are resized to {size} by the cache",
                    "the eval-input row above measures the whole path")
    return grey_levels("data", name, torch.stack(stored), torch.stack(files),
                       note="ferlib decodes each file once, into a uint8 cache")


def by_name(ds) -> dict[str, int]:
    return {Path(s).name: i for i, s in enumerate(ds.samples)}


def to_levels(x: torch.Tensor, mean, std) -> torch.Tensor:
    """Normalised network input [.., 3, H, W] → grey levels (float64, 0..255)."""
    shape = [1] * x.dim()
    shape[-3] = 3
    return (x.double() * torch.tensor(std, dtype=torch.float64).view(shape)
            + torch.tensor(mean, dtype=torch.float64).view(shape)) * 255.0


def levels(x: torch.Tensor, mean, std) -> torch.Tensor:
    """De-normalised input on the 0..1 scale, rounded to 1/1000 grey level (the fp32 round trip through
    Normalize is exact to ~1e-4 level); :func:`~ferlib.parity.core.grey_levels` multiplies it by 255."""
    return (to_levels(x, mean, std) * 1000).round() / 1000 / 255.0


def to_uint8(x: torch.Tensor, mean, std) -> torch.Tensor:
    return to_levels(x, mean, std).round().clamp(0, 255).to(torch.uint8)


@contextlib.contextmanager
def fixed_ours(tf, flip: bool | None = None, kind: int | None = None, noise: torch.Tensor | None = None,
               box: tuple | None = None):
    """ferlib's train transform with its random draws fixed: ``flip`` for every hflip, basic_aug ``kind``
    (0 none, 1 flip, 2 noise) with ``noise`` [3,H,W] as its Gaussian draw, the erasing ``box`` (i, j, h, w)
    or no erasing (None)."""
    from ferlib.data.transforms import BatchedBasicAug, BatchedHFlip

    with contextlib.ExitStack() as st:
        for step in tf.augment or []:
            if isinstance(step, BatchedHFlip) and flip is not None:
                st.enter_context(patched(step, "sample", lambda B, *a, device=None, **k: {
                    "flip": torch.full((B,), bool(flip), device=device)}))
            elif isinstance(step, BatchedBasicAug) and kind is not None:
                st.enter_context(patched(step, "sample", lambda B, *a, device=None, **k: {
                    "kind": torch.full((B,), int(kind), dtype=torch.int64, device=device)}))
                if noise is not None:
                    real = torch.randn
                    def randn(*s, _std=step.std, **k):
                        shape = tuple(s[0] if len(s) == 1 else s)
                        return (noise / _std).expand(shape).clone() if shape[-3:] == tuple(noise.shape) else real(*s, **k)
                    st.enter_context(patched(torch, "randn", randn))
        if tf.erasing is not None:
            def sample(B, H, W, device=None):
                i, j, h, w = box or (0, 0, 1, 1)
                full = lambda v: torch.full((B,), int(v), dtype=torch.int64, device=device)  # noqa: E731
                return {"erase": torch.full((B,), box is not None, device=device), "top": full(i), "left": full(j),
                        "h": full(h), "w": full(w)}
            st.enter_context(patched(tf.erasing, "sample", sample))
        yield tf


@contextlib.contextmanager
def fixed_theirs(ds_mod, train_tf, flip: bool | None = None, noise: np.ndarray | None = None,
                 box: tuple | None = None):
    """The authors' dataset module and train transform with the random draws fixed: their
    ``RandomHorizontalFlip`` p = 1 / 0, basic_aug forced to its noise branch with ``np.random.normal``
    returning ``noise`` (HWC, their BGR order), ``RandomErasing`` forced to ``box`` (or off)."""
    import copy
    import types

    from torchvision import transforms as T

    tf = copy.deepcopy(train_tf)
    for op in tf.transforms:
        if isinstance(op, T.RandomHorizontalFlip) and flip is not None:
            op.p = 1.0 if flip else 0.0
        if isinstance(op, T.RandomErasing):
            op.p = 1.0 if box is not None else 0.0
            if box is not None:
                real = op.get_params

                def get_params(img, scale, ratio, value=None, _real=real):
                    *_, v = _real(img, scale=scale, ratio=ratio, value=value)
                    return (*box, v)
                op.get_params = get_params
    with contextlib.ExitStack() as st:
        if noise is not None:
            st.enter_context(patched(ds_mod, "random", types.SimpleNamespace(uniform=lambda a, b: 1.0,
                                                                             randint=lambda a, b: 1)))
            st.enter_context(patched(np.random, "normal", lambda mean=0.0, std=1.0, size=None: noise + mean))
        yield tf


def their_train_item(ds, tf, i: int, basic_aug: bool):
    import copy

    d = copy.copy(ds)
    d.transform, d.basic_aug = tf, basic_aug
    return d[i]


# --- (a) data ---------------------------------------------------------------------------------------------


def data_stage(report: Report, rec: dict, ds_mod, authors, data_root: Path, recipe, cache: Path, seed: int):
    from ferlib.data.transforms import build_batch_transform

    mean, std = recipe.mean, recipe.std
    their_val_cls = type(authors.datasets["val"])
    # every loadable test image (or the first n) through their eval pipeline and ferlib's
    theirs = their_val_cls(str(data_root) + "/", train=False, transform=authors.val_transform)
    idx = loadable_indices(theirs, rec["n_images"])
    names = [Path(theirs.file_paths[i]).name for i in idx]
    ours = ferlib_split(data_root, "test", cache, recipe, names)
    pos = by_name(ours)
    shared = [(i, pos[n]) for i, n in zip(idx, names) if n in pos]
    x_t = torch.stack([torch.as_tensor(theirs[i][0]) for i, _ in shared])
    y_t = torch.tensor([int(theirs.target[i]) for i, _ in shared])
    tf_eval = build_batch_transform(recipe, train=False)
    x_o = tf_eval(ours.batch([j for _, j in shared]))
    y_o = torch.tensor([int(ours.targets[j]) for _, j in shared])
    report.add(cache_check(ours, [j for _, j in shared], recipe))
    report.add(grey_levels("data", f"eval input, {len(shared)} test images", levels(x_o, mean, std),
                           levels(x_t, mean, std),
                           note=f"ferlib: PIL decode → uint8 cache at {recipe.stored_size} → batched resize "
                                f"{recipe.input_size} (antialias) → {recipe.color_order}; authors: cv2 → PIL Resize"))
    report.add(compare_tensors("data", "eval labels", y_o, y_t))
    rec["data"] = {"eval_names": [Path(f).name for f in authors.datasets["val"].file_paths]}

    # train split: unreadable files (their loader crashes on them, ferlib skips them)
    their_train = authors.datasets["train"]
    full_train = their_val_cls(str(data_root) + "/", train=True, transform=None)
    n_bad = len(full_train) - len(loadable_indices(full_train, None)) if rec["n_images"] is None else 0
    ours_train_all = ferlib_split(data_root, "train", cache, recipe,
                                  [Path(f).name for f in their_train.file_paths])
    report.add(info("data", "unreadable train images", f"{n_bad} (ferlib skips and counts "
                    f"{ours_train_all.skip_report.total})",
                    "the authors' RafDataSet returns None from cv2.imread and crashes on them: the run uses "
                    "their readable images only (dataidxs)"))

    # train transform with each random op fixed, on the first train images
    k = min(2, len(their_train))
    names_tr = [Path(their_train.file_paths[i]).name for i in range(k)]
    pos_tr = by_name(ours_train_all)
    j = [pos_tr[n] for n in names_tr]
    u8 = ours_train_all.batch(j)
    tf_train = build_batch_transform(recipe, train=True)
    side = recipe.stored_size or recipe.input_size
    gen = np.random.default_rng(seed + 7)
    noise = gen.normal(0.0, math.sqrt(30.0), (side, side, 3))            # HWC, applied to their BGR image
    noise_ours = torch.from_numpy(noise[..., ::-1].copy()).permute(2, 0, 1).float()  # ferlib's RGB order
    size = recipe.input_size
    box = (int(size * 0.3), int(size * 0.2), int(size * 0.25), int(size * 0.4))
    cases = {"flip off": dict(flip=False), "flip on": dict(flip=True),
             "basic_aug noise tensor": dict(flip=False, noise=True), "erasing box": dict(flip=False, box=box)}
    rec["data"]["train_names"] = names_tr
    rec["data"]["fixed"] = {}
    for label, c in cases.items():
        with fixed_theirs(ds_mod, authors.train_transform, c.get("flip"), noise if c.get("noise") else None,
                          c.get("box")) as tf:
            xt = torch.stack([torch.as_tensor(their_train_item(their_train, tf, i, bool(c.get("noise")))[0])
                              for i in range(k)])
        with fixed_ours(tf_train, c.get("flip"), 2 if c.get("noise") else 0, noise_ours if c.get("noise") else None,
                        c.get("box")) as tf:
            xo = tf(u8.clone())
        report.add(grey_levels("data", f"train input, {label} ({k} images)", levels(xo, mean, std),
                               levels(xt, mean, std)))
        rec["data"]["fixed"][label] = to_uint8(xt[:1], mean, std)
    rec["data"]["noise_seed"], rec["data"]["box"] = seed + 7, box


# --- (b) augmentation distributions -------------------------------------------------------------------


def their_draws(ds, train_tf, n: int, seed: int, size: int) -> dict:
    """``n`` draws of each random op of the authors' train pipeline (their dataset's basic_aug, their
    transform's RandomHorizontalFlip and RandomErasing)."""
    import copy
    import random

    import cv2
    from PIL import Image

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    d = copy.copy(ds)
    d.transform, d.basic_aug = None, True
    clean = cv2.imread(d.file_paths[0]).astype(np.float64)
    kinds, var, mean = [], [], []
    for _ in range(n):
        out = d[0][0].astype(np.float64)
        if np.array_equal(out, clean):
            kinds.append(0)
        elif np.array_equal(out, clean[:, ::-1]):
            kinds.append(1)
        else:
            kinds.append(2)
            m = (clean > 25) & (clean < 230)
            diff = (out - clean)[m]
            var.append(diff.var())
            mean.append(diff.mean())
    ops = {type(op).__name__: op for op in train_tf.transforms}
    out = {"basic_aug_kind": np.array(kinds), "noise_var": np.array(var), "noise_mean": np.array(mean)}
    flip = ops.get("RandomHorizontalFlip")
    img = Image.fromarray(np.array([[[0, 0, 0], [255, 255, 255]]], dtype=np.uint8))
    out["flip"] = np.array([np.asarray(flip(img))[0, 0, 0] == 255 for _ in range(n)]) if flip else np.zeros(0)
    er = ops.get("RandomErasing")
    out.update(erasing_stats([er(torch.ones(3, size, size)) for _ in range(n)]) if er else {})
    return out


def erasing_stats(outs) -> dict:
    erased, area, aspect, value = [], [], [], []
    for o in outs:
        m = (o != 1).any(0)
        erased.append(bool(m.any()))
        if m.any():
            rows, cols = m.any(1).nonzero(), m.any(0).nonzero()
            h, w = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
            area.append(h * w / m.numel())
            aspect.append(math.log(h / w))
            value.append(float(o[:, m].mean()))
    return {"erased": np.array(erased), "erase_area": np.array(area), "erase_log_aspect": np.array(aspect),
            "erase_value": np.array(value)}


def our_draws(u8_clean: torch.Tensor, recipe, n: int, seed: int) -> dict:
    """``n`` draws of each random op of ferlib's batched train transform for the card."""
    from ferlib.data.transforms import BatchedBasicAug, BatchedHFlip, build_batch_transform

    torch.manual_seed(seed)
    tf = build_batch_transform(recipe, train=True)
    ops = {type(s): s for s in tf.augment or []}
    out = {}
    ba = ops.get(BatchedBasicAug)
    if ba is not None:
        x = u8_clean.expand(n, *u8_clean.shape).clone()
        y = ba(x).double()
        c = u8_clean.double()
        same = (y == c).flatten(1).all(1)
        flipped = (y == c.flip(-1)).flatten(1).all(1)
        kinds = torch.where(same, 0, torch.where(flipped, 1, 2))
        m = (c > 25) & (c < 230)
        diff = (y - c)[:, m][kinds == 2]
        out.update(basic_aug_kind=kinds.numpy(), noise_var=diff.var(1, unbiased=False).numpy(),
                   noise_mean=diff.mean(1).numpy())
    fl = ops.get(BatchedHFlip)
    if fl is not None:
        x = torch.tensor([[[[0, 255]]] * 3], dtype=torch.uint8).expand(n, 3, 1, 2).clone()
        out["flip"] = (fl(x)[:, 0, 0, 0] == 255).numpy()
    if tf.erasing is not None:
        size = recipe.input_size
        out.update(erasing_stats(list(tf.erasing(torch.ones(n, 3, size, size)))))
    return out


AUG_ROWS = (("basic_aug_kind", "basic_aug choice (0 none / 1 flip / 2 noise)", "categorical"),
            ("noise_var", "basic_aug noise variance per draw", "continuous"),
            ("noise_mean", "basic_aug noise mean per draw (uint8 truncation)", "continuous"),
            ("flip", "horizontal flip rate", "binary"),
            ("erased", "random erasing rate", "binary"),
            ("erase_area", "erasing area / image", "continuous"),
            ("erase_log_aspect", "erasing log aspect (h/w)", "continuous"),
            ("erase_value", "erasing fill value", "continuous"))


def augment_stage(report: Report, theirs: dict, ours: dict) -> None:
    for key, name, kind in AUG_ROWS:
        a, b = ours.get(key), theirs.get(key)
        if a is None or b is None or (len(b) == 0) != (len(a) == 0):
            report.add(Check("augment", name, f"ferlib {'has' if a is not None and len(a) else 'lacks'} it, the "
                             f"authors' pipeline {'has' if b is not None and len(b) else 'lacks'} it", False, "both"))
            continue
        if len(a) == 0:
            continue
        report.add(two_sample("augment", name, a, b, kind))


#: the ops of the authors' train transform this adapter knows (deterministic, or compared above)
KNOWN_OPS = ("ToPILImage", "RandomHorizontalFlip", "Resize", "ToTensor", "Normalize", "RandomErasing")


def transform_ops_check(train_tf) -> Check:
    """A row listing the ops of the authors' train transform; it fails on an op not compared here (e.g. a crop
    or rotation added to train.py)."""
    ops = [type(op).__name__ for op in getattr(train_tf, "transforms", [train_tf])]
    unknown = [o for o in ops if o not in KNOWN_OPS]
    return Check("augment", "ops of the authors' train transform (+ basic_aug in RafDataSet)", " → ".join(ops),
                 not unknown, "each compared", f"not compared: {', '.join(unknown)}" if unknown else
                 "no crop, rotation or colour op: nothing else to draw")


# --- (c) training -----------------------------------------------------------------------------------------


def start_state(seed: int, recipe) -> dict:
    """The starting weights of both sides: ferlib's FERMam built after ``torch.manual_seed(seed)`` (upstream
    keys: the converter is the identity for FERMam)."""
    from ferlib.models import create_model

    torch.manual_seed(seed)
    m = create_model(recipe.model, num_classes=recipe.num_classes, **recipe.model_kwargs)
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def ferlib_training(recipe, start: dict, batches, step_epochs, val_x, epochs: int, device: str = "cpu") -> dict:
    """ferlib's side of stage (c): the card's model, loss, optimiser, schedule and the engine's Stepper on the
    given batches; records both SAM passes' losses, the lr of each step and the eval logits per epoch."""
    from ferlib.optim import build_optimizer, build_scheduler
    from ferlib.engine.training import build_loss
    from ferlib.engine.step import Stepper
    from ferlib.models import create_model
    from ferlib.weights import convert_upstream

    dev = torch.device(device)
    model = create_model(recipe.model, num_classes=recipe.num_classes, **recipe.model_kwargs)
    model.load_state_dict(convert_upstream(PAPER, start))
    zero_dropout(model)
    model.to(dev)
    losses: list[float] = []
    loss = build_loss(recipe).to(dev)

    class Recorded(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, out, y):
            v = self.inner(out, y)
            losses.append(float(v.detach()))
            return v

    params = [p for p in model.parameters() if p.requires_grad]
    opt = build_optimizer(params, recipe)
    sched = build_scheduler(opt, recipe, recipe.epochs)
    stepper = Stepper(model, Recorded(loss), opt, params, [], dev, recipe.precision, 1, recipe.batch_size)
    lrs, logits = [], []
    for e in range(epochs):
        model.train()
        for (x, y), ep in zip(batches, step_epochs):
            if ep != e:
                continue
            lrs.append(float(opt.param_groups[0]["lr"]))
            stepper.micro(x.to(dev), y.to(dev), True)
        with warnings.catch_warnings():  # SAM steps through first/second_step, which the scheduler cannot see
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
            sched.step()
        model.eval()
        with torch.no_grad():
            logits.append(model(val_x.to(dev)).logits.cpu())
    return {"losses": losses, "lrs": lrs, "logits": logits,
            "state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}


def sample_index(t: torch.Tensor, n: int = SAMPLES_PER_TENSOR) -> torch.Tensor:
    """Fixed flat positions of a tensor: all of a small one, an even stride of a large one."""
    k = t.numel()
    return torch.arange(k) if k <= n else torch.linspace(0, k - 1, n).round().long()


def state_samples(state: dict) -> dict:
    return {k: v.flatten()[sample_index(v)].clone() for k, v in state.items()}


def deviations(ours: dict, theirs: dict) -> dict:
    return {k: tensor_deviation(ours[k], theirs[k])[0] for k in theirs if k in ours}


def compare_trajectories(report: Report, ours: dict, theirs: dict, floor: dict | None, note: str = "") -> None:
    """Per-step losses, lrs, per-epoch eval logits and the final tensors (``theirs``: full or sampled
    tensors; ``floor``: deviations between two ferlib runs of the same tensors, or None)."""
    n = len(theirs["losses"])
    dl = [abs(a - b) / max(1.0, abs(b)) for a, b in zip(ours["losses"], theirs["losses"])]
    fl = floor["losses"] if floor else [0.0] * n
    tol = [max(FP32_REL_TOL, FLOOR_FACTOR * f) for f in fl]
    bad = [i for i in range(n) if i >= len(dl) or dl[i] > tol[i]]
    worst = max(range(len(dl)), key=lambda i: dl[i] / tol[i]) if dl else 0
    report.add(Check("train", f"loss of both SAM passes, {n // 2} steps",
                     f"{len(ours['losses'])}/{n} values; step 1 Δ {dl[0]:.1e}; worst Δ {dl[worst]:.1e} "
                     f"(pass {worst + 1}, floor {fl[worst]:.1e})",
                     not bad and len(ours["losses"]) == n, f"≤ max(1e-5, {FLOOR_FACTOR:g}×floor) rel.",
                     note or ("first failing: pass " + str(bad[0] + 1) if bad else "")))
    report.add(compare_tensors("train", f"learning rate per step {['%.4g' % v for v in theirs['lrs']]}",
                               torch.tensor(ours["lrs"], dtype=torch.float64),
                               torch.tensor(theirs["lrs"], dtype=torch.float64), 1e-12))
    for e, (a, b) in enumerate(zip(ours["logits"], theirs["logits"])):
        dev = tensor_deviation(a, b)[0]
        f = floor["logits"][e] if floor else 0.0
        t = max(FP32_REL_TOL, FLOOR_FACTOR * f)
        report.add(Check("train", f"eval logits after epoch {e + 1}", f"{dev:.1e} (floor {f:.1e})", dev <= t,
                         f"≤ {t:.1e} rel."))
    devs = deviations(ours["state"], theirs["state"])
    missing = sorted(set(theirs["state"]) ^ set(ours["state"]))
    fails, worst_k, worst_r = [], "", 0.0
    for k, d in devs.items():
        t = max(FP32_REL_TOL, FLOOR_FACTOR * (floor["state"].get(k, 0.0) if floor else 0.0))
        if d > t:
            fails.append((k, d, t))
        if d / t >= worst_r:
            worst_k, worst_r = k, d / t
    n_buf = sum(1 for k in devs if "running" in k or "num_batches" in k)
    worst_d = max(devs.values()) if devs else 0.0
    report.add(Check("train", f"every parameter and buffer after the steps ({len(devs)} tensors, {n_buf} BN stats)",
                     f"worst {worst_d:.1e}; worst vs its tolerance {worst_r:.2f}× ({worst_k})",
                     not fails and not missing, f"≤ max(1e-5, {FLOOR_FACTOR:g}×floor) rel. each"))
    for k, d, t in fails[:8]:
        report.add(Check("train", k, f"{d:.1e}", False, f"≤ {t:.1e}"))
    for k in missing[:8]:
        report.add(Check("train", k, "on one side only", False, "same keys"))


def model_stage(report: Report, authors, recipe, start: dict) -> None:
    """Their constructor's state dict converted by ``convert_upstream`` has ferlib's keys and shapes, and both
    models give the same evaluation logits from the starting weights."""
    from ferlib.models import create_model
    from ferlib.weights import convert_upstream

    ours = create_model(recipe.model, num_classes=recipe.num_classes, **recipe.model_kwargs)
    shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    theirs = {k: torch.empty(s) for k, s in authors.init_shapes.items()}
    converted = {k: tuple(v.shape) for k, v in convert_upstream(PAPER, theirs).items()}
    differ = sorted(set(shapes.items()) ^ set(converted.items()))
    report.add(Check("model", "authors' state dict → convert_upstream → ferlib's keys and shapes",
                     f"{len(converted)} vs {len(shapes)} tensors; {len(differ)} differ", not differ, "identical",
                     ", ".join(k for k, _ in differ[:4])))
    ours.load_state_dict(convert_upstream(PAPER, start))
    ours.eval()
    with torch.no_grad():
        z = ours(authors.val_batch[0]).logits
    report.add(compare_tensors("model", "eval logits at the starting weights", z, authors.start_logits))


def floor_of(a: dict, b: dict) -> dict:
    return {"losses": [abs(x - y) / max(1.0, abs(y)) for x, y in zip(a["losses"], b["losses"])],
            "logits": [tensor_deviation(x, y)[0] for x, y in zip(a["logits"], b["logits"])],
            "state": deviations(a["state"], b["state"])}


# --- (d) evaluation ----------------------------------------------------------------------------------------


def eval_stage(report: Report, logits: list, targets: torch.Tensor, printed: list, f1s: list, classes) -> None:
    from ferlib.metrics import classification_metrics

    for e, z in enumerate(logits):
        m = classification_metrics(np.asarray(z), np.asarray(targets), list(classes))
        n = len(targets)
        ours_correct = int(round(m["accuracy"] * n))
        theirs_correct = int(round(printed[e]["acc"] * n)) if e < len(printed) else -1
        report.add(Check("eval", f"accuracy, epoch {e + 1} (authors' logits, n={n})",
                         f"{ours_correct}/{n} vs {theirs_correct}/{n}", ours_correct == theirs_correct, "identical"))
        f1 = f1s[e] if e < len(f1s) else float("nan")
        report.add(Check("eval", f"macro F1, epoch {e + 1}", f"{m['macro_f1']:.6f} vs {f1:.6f}",
                         abs(m["macro_f1"] - f1) < 1e-12, "identical",
                         "every class occurs in the batch: sklearn's default labels = ferlib's 7"))


# --- the adapter --------------------------------------------------------------------------------------------


def _u8_exact(x: torch.Tensor, mean, std) -> tuple[torch.Tensor, bool]:
    """``x`` as uint8 grey levels, and whether ToTensor + Normalize of them gives back ``x`` bit for bit."""
    u8 = to_uint8(x, mean, std)
    return u8, bool(torch.equal(renormalise(u8, mean, std), x))


def dedupe(batches: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Batches [B,3,H,W] → (the distinct images [N,3,H,W], each batch's indices into them)."""
    images: list[torch.Tensor] = []
    index = []
    for b in batches:
        idx = []
        for img in b:
            hit = next((k for k, u in enumerate(images) if torch.equal(u, img)), None)
            if hit is None:
                images.append(img.clone())
                hit = len(images) - 1
            idx.append(hit)
        index.append(torch.tensor(idx))
    return torch.stack(images), index


def renormalise(u8: torch.Tensor, mean, std) -> torch.Tensor:
    """torchvision's ``ToTensor`` (÷255) then ``Normalize`` on uint8 [B,3,H,W], as the authors' transform does."""
    from torchvision.transforms import functional as F

    return torch.stack([F.normalize(u.float().div(255), mean, std) for u in u8])


STAGES = ("data", "augment", "train", "eval")


@register_parity(PAPER, repo="jxcsglr/FERMam")
def parity_fermam(opts: ParityOptions, stages=STAGES, floor: bool = True) -> Report:
    """The parity report of ``opts`` (module docstring). ``stages``: a subset of :data:`STAGES` (tests run the
    data stages alone); ``floor=False`` skips the second ferlib run (tolerance 1e-5 for every step)."""
    report = Report(PAPER)
    root = code_dir(opts.upstream)
    data_root = Path(opts.data_root).expanduser() if opts.data_root else fixture_root()
    if not (data_root / "EmoLabel" / "list_patition_label.txt").is_file():
        raise ParityInputError(f"{data_root} is not RAF-DB's basic/ folder (no EmoLabel/list_patition_label.txt); "
                               "fix: pass --data-root <RAF-DB basic/> (the default, the test fixture, exists only "
                               "in a source checkout of ferlib)")
    per_epoch, epochs = steps_layout(opts.steps or 4)
    n_train = per_epoch * BATCH
    recipe = card_recipe(batch_size=BATCH, epochs=epochs)
    rec: dict = {"paper": PAPER, "seed": opts.seed, "batch": BATCH, "epochs": epochs, "per_epoch": per_epoch,
                 "n_images": opts.n_images, "fixture": opts.data_root is None}
    report.add(info("info", "compared", f"{per_epoch * epochs} SAM steps of {BATCH} images over {epochs} epochs, "
                    f"{N_VAL} evaluation images; seed {opts.seed}; {opts.device}",
                    "augmentation and dropout off in both for the training steps; the card's rafdb entry with "
                    f"batch {BATCH} and {epochs} epochs"))
    start = start_state(opts.seed, recipe)
    with tempfile.TemporaryDirectory() as tmp, upstream_code(root, report=report) as handle, \
            thop_standin(report.checks):
        authors = run_authors_training(root, data_root, start, n_train=n_train, n_val=N_VAL, batch_size=BATCH,
                                       epochs=epochs, seed=opts.seed, device=opts.device,
                                       setup_only=not ({"train", "eval"} & set(stages)))
        ds_mod = handle.import_module("data_preprocessing.dataset_raf")
        report.add(info("model", "starting weights", f"ferlib's FERMam at seed {opts.seed}, loaded strictly into "
                        f"the authors' pyramid_trans_expr ({len(start)} tensors)",
                        "built in an empty folder: their pretrained files are not loaded"))
        if "data" in stages:
            data_stage(report, rec, ds_mod, authors, data_root, recipe, Path(tmp), opts.seed)
        if "augment" in stages:
            theirs_aug = their_draws(authors.datasets["train"], authors.train_transform, N_DRAWS, opts.seed,
                                     int(authors.batches[0][0].shape[-1]))
            ours_train = ferlib_split(data_root, "train", Path(tmp), recipe,
                                      [Path(authors.datasets["train"].file_paths[0]).name])
            ours_aug = our_draws(ours_train.batch([0])[0], recipe, N_DRAWS, opts.seed + 1)
            augment_stage(report, theirs_aug, ours_aug)
            report.add(transform_ops_check(authors.train_transform))
            rec["augment"] = {k: torch.as_tensor(np.asarray(v, dtype=np.float64)) for k, v in theirs_aug.items()}
    if not ({"train", "eval"} & set(stages)):
        return report
    model_stage(report, authors, recipe, start)

    mean, std = recipe.mean, recipe.std
    val_x, val_y = authors.val_batch
    theirs = {"losses": authors.losses, "lrs": authors.lrs, "logits": authors.eval_logits,
              "state": authors.final_state}
    ours = ferlib_training(recipe, start, authors.batches, authors.step_epochs, val_x, epochs, opts.device)
    alt = recipe.replace(optimizer_kwargs={**(recipe.optimizer_kwargs or {}), "foreach": False},
                         model_kwargs={**recipe.model_kwargs, "scan_backend": "reference"})
    if floor:
        other = ferlib_training(alt, start, authors.batches, authors.step_epochs, val_x, epochs, opts.device)
        floor = floor_of(ours, other)
        report.add(info("train", "fp32 floor: ferlib fused Adam + chunked scan vs per-parameter Adam + reference scan",
                        f"losses ≤ {max(floor['losses']):.1e}, tensors ≤ {max(floor['state'].values()):.1e} rel.",
                        "the fused optimiser is ferlib's deliberate difference; its effect is this rounding drift"))
    else:
        floor = None
    compare_trajectories(report, ours, theirs, floor)
    eval_stage(report, authors.eval_logits, val_y, authors.val_metrics(), authors.f1, recipe_classes(recipe))

    if opts.record:
        u8s = [_u8_exact(x, mean, std) for x, _ in authors.batches]
        val_u8, val_exact = _u8_exact(val_x, mean, std)
        if not all(ok for _, ok in u8s) or not val_exact:
            raise RuntimeError("the authors' inputs are not ToTensor+Normalize of uint8 images: cannot record them")
        images, index = dedupe([u for u, _ in u8s])   # every epoch shows the same images
        rec["train"] = {
            "images_u8": images, "batch_index": index, "labels": [y for _, y in authors.batches],
            "step_epochs": authors.step_epochs, "val_u8": val_u8, "val_labels": val_y,
            "losses": authors.losses, "lrs": authors.lrs, "logits": authors.eval_logits,
            "samples": state_samples(authors.final_state), "digest": state_digest(authors.final_state),
            "floor": floor, "printed": authors.val_metrics(), "f1": authors.f1,
            "start_digest": state_digest(start), "start_logits": authors.start_logits,
        }
        rec["report"] = report.to_dict()
        save_record(opts.record, rec)
    return report


def recipe_classes(recipe) -> list[str]:
    from ferlib.labels import LABEL_SETS

    return list(LABEL_SETS["rafdb"].names)


def replay(record: dict, data_root: Path | None = None, device: str = "cpu", stages=STAGES, **overrides) -> Report:
    """Recompute ferlib's side of a recording (no checkout) and compare it with the authors' recorded numbers:
    the data path on the recorded files, ferlib's augmentation draws against the authors' recorded draws,
    the training steps against their losses, lrs, logits and sampled final tensors (with the recorded fp32
    floor), and the metrics from their logits. ``stages``: a subset of :data:`STAGES`; ``overrides``: recipe
    fields changed on ferlib's side (tests: a changed card must fail)."""
    report = Report(PAPER)
    data_root = Path(data_root) if data_root else fixture_root()
    recipe = card_recipe(batch_size=record["batch"], epochs=record["epochs"], **overrides)
    t = record["train"]
    with tempfile.TemporaryDirectory() as tmp:
        if "data" in stages:
            _replay_data(report, record, data_root, Path(tmp), recipe)
        if "augment" in stages:
            d = record["data"]
            ours_train = ferlib_split(data_root, "train", Path(tmp), recipe, d["train_names"][:1])
            ours_aug = our_draws(ours_train.batch([0])[0], recipe, N_DRAWS, record["seed"] + 1)
            augment_stage(report, {k: v.numpy() for k, v in record["augment"].items()}, ours_aug)
    if "train" in stages:
        _replay_training(report, record, recipe, device)
    if "eval" in stages:
        eval_stage(report, t["logits"], t["val_labels"], t["printed"], t["f1"], recipe_classes(recipe))
    return report


def _replay_data(report: Report, record: dict, data_root: Path, tmp: Path, recipe) -> None:
    from ferlib.data.transforms import build_batch_transform

    mean, std, d, t = recipe.mean, recipe.std, record["data"], record["train"]
    note = "the authors' side recorded as rounded uint8 (±0.5)"
    ours_eval = ferlib_split(data_root, "test", tmp, recipe, d["eval_names"])
    pos = by_name(ours_eval)
    j = [pos[n] for n in d["eval_names"]]
    x = build_batch_transform(recipe, train=False)(ours_eval.batch(j))
    report.add(grey_levels("data", f"eval input, {len(j)} recorded test images", levels(x, mean, std),
                           t["val_u8"], tol=1.5, note=note))
    report.add(compare_tensors("data", "eval labels", torch.tensor([int(ours_eval.targets[i]) for i in j]),
                               t["val_labels"]))
    ours_train = ferlib_split(data_root, "train", tmp, recipe, d["train_names"][:1])
    u8 = ours_train.batch([0])
    tf = build_batch_transform(recipe, train=True)
    side = recipe.stored_size or recipe.input_size
    noise = np.random.default_rng(d["noise_seed"]).normal(0.0, math.sqrt(30.0), (side, side, 3))
    noise_ours = torch.from_numpy(noise[..., ::-1].copy()).permute(2, 0, 1).float()
    cases = {"flip off": dict(flip=False), "flip on": dict(flip=True),
             "basic_aug noise tensor": dict(flip=False, noise=True), "erasing box": dict(flip=False, box=d["box"])}
    for label, c in cases.items():
        with fixed_ours(tf, c.get("flip"), 2 if c.get("noise") else 0, noise_ours if c.get("noise") else None,
                        c.get("box")) as fixed:
            xo = fixed(u8.clone())
        report.add(grey_levels("data", f"train input, {label}", levels(xo, mean, std), d["fixed"][label],
                               tol=1.5, note=note))


def _replay_training(report: Report, record: dict, recipe, device: str) -> None:
    from ferlib.models import create_model
    from ferlib.weights import convert_upstream

    mean, std, t = recipe.mean, recipe.std, record["train"]
    batches = [(renormalise(t["images_u8"][i], mean, std), y) for i, y in zip(t["batch_index"], t["labels"])]
    val_x = renormalise(t["val_u8"], mean, std)
    start = start_state(record["seed"], recipe)
    report.add(Check("model", "starting weights (seeded ferlib FERMam)", state_digest(start)[:16],
                     state_digest(start) == t["start_digest"], "the recorded digest"))
    model = create_model(recipe.model, num_classes=recipe.num_classes, **recipe.model_kwargs)
    model.load_state_dict(convert_upstream(PAPER, start))
    with torch.no_grad():
        z = model.eval()(val_x).logits
    report.add(compare_tensors("model", "eval logits at the starting weights", z, t["start_logits"]))
    del model
    ours = ferlib_training(recipe, start, batches, t["step_epochs"], val_x, record["epochs"], device)
    ours["state"] = state_samples(ours["state"])
    theirs = {"losses": t["losses"], "lrs": t["lrs"], "logits": t["logits"], "state": t["samples"]}
    compare_trajectories(report, ours, theirs, t["floor"])
