"""EMO-Net parity: the authors' ``dataset.py``, ``train.py`` and ``model/emoNet.py`` against ferlib (issue 23).

The authors' side runs their own code from a checkout of ``xiayu-cell/EMO-Net``:

* their ``train.main()`` runs in a temporary folder laid out the way it expects (``../original`` holds the
  images, ``label.txt`` lists them, ``./mobileNet-ECA-RAFDB-0.91199.pth`` holds the starting weights drawn
  from ``--seed``), so it builds its transforms, ``RafDataset``, model, loss and optimiser itself. Patched:
  ``torch.utils.data.DataLoader`` (the same seeded batches as ferlib's side, their random ops fixed to the
  whole image and no flip: augmentation off), the missing module ``ECA_mobileNetV2`` (their
  ``model/emoNet.py``'s ``MobileNetV2`` with Dropout p = 0), and a stop after K optimiser steps;
  their per-step loss and lr are read from ``Tensor.backward`` and the optimiser's step hooks;
* ferlib's side: the same starting weights through :func:`ferlib.weights.convert_upstream`, the card's
  ``rafdb`` entry (λ 0.8 and dropout 0 for the comparison), :func:`ferlib.optim.build_optimizer`,
  :func:`~ferlib.optim.build_scheduler`, :func:`ferlib.engine.training.build_loss` and
  :class:`ferlib.engine.step.Stepper` on the same batches.

Stages: data (their Dataset + eval transform vs ferlib's reader, uint8 cache and batched eval transform; their
train transform with each random op fixed vs ferlib's), augment (the draws of RandomResizedCrop and the flip,
two-sample tests), model (logits at the start), train (per-step loss and lr, every tensor after K steps),
eval (their printed accuracy from the logits of their validation pass vs ferlib's metrics on those logits).
"""
from __future__ import annotations

import math
import os
import re
import tempfile
import zlib
from pathlib import Path

import numpy as np
import torch

from . import register_parity
from .core import (Check, ParityInputError, ParityOptions, Report, compare_fingerprints, compare_state_dicts,
                   compare_tensors, fingerprint, grey_levels, info, load_record, pack_uint8, save_record, two_sample,
                   unpack_uint8, working_dir)
from .emonet_upstream import find_ops, fixed_ops, model_probe_input, pil_ops, run_authors

PAPER = "emonet"
REPO = "xiayu-cell/EMO-Net"
#: the RAF-DB fixture (official layout) the parity reads by default
FIXTURE_ROOT = Path(__file__).resolve().parents[2] / "tests" / "data" / "fixtures" / "rafdb" / "basic"
#: draws per random op in the augmentation stage, and the two-sample tests' level: at 1e-6 no seed fails by
#: chance (at 1e-3 one test in a thousand would), and 20000 draws still detect a 2.5-point flip-rate change
N_DRAWS = 20000
ALPHA = 1e-6
#: the fp32 tolerance (relative to each tensor's scale): model outputs, normalisation
FP32_TOL = 1e-5
#: the training stage runs both sides in float64: training from random weights on a handful of images
#: amplifies fp32 rounding (a 5e-7 input difference, another thread count) to 1e-4 in the loss within 3 steps,
#: more than a changed lr or label smoothing moves it on some seeds; in float64 that noise stays below 1e-12
TRAIN_DTYPE = torch.float64
TRAIN_REL_TOL = 1e-8


# --- starting weights ---------------------------------------------------------------------------------------


def seeded_state(seed: int, template: dict | None = None) -> dict:
    """Starting weights drawn from ``seed``, one generator per key (so the replay rebuilds them without the
    checkout): He-scaled normal conv/linear weights, BatchNorm γ ≈ 1, β, running mean ≈ 0, variance ≈ 1."""
    from ferlib.models import create_model

    template = template if template is not None else create_model(PAPER, lam=0.8).state_dict()
    out = {}
    for key, t in template.items():
        g = torch.Generator().manual_seed(int(seed) * 1_000_003 + zlib.crc32(key.encode()))
        if not t.is_floating_point():
            out[key] = torch.zeros_like(t)
        elif key.endswith("running_var"):
            out[key] = 0.5 + torch.rand(t.shape, generator=g)
        elif t.dim() == 1 and key.endswith("weight"):
            out[key] = 1.0 + 0.1 * torch.randn(t.shape, generator=g)
        elif t.dim() == 1:
            out[key] = 0.1 * torch.randn(t.shape, generator=g)
        else:
            fan_in = t[0].numel()
            out[key] = torch.randn(t.shape, generator=g) * math.sqrt(2.0 / fan_in)
    return out


# --- ferlib's side --------------------------------------------------------------------------------------------


def parity_recipe():
    """The card's RAF-DB entry with the published code's λ (0.8) and dropout off (the comparison's settings)."""
    from ferlib.recipes import load_recipe

    return load_recipe(PAPER, "rafdb", model_kwargs={"lam": 0.8, "drop_rate": 0.0})


def torchvision_normalise(u8: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 [..,3,H,W] → float with torchvision's ``ToTensor`` + ``Normalize`` arithmetic ((x/255 − m)/s), the
    authors' float inputs bit for bit (ferlib's own normalisation is one multiply-add: fp32 rounding apart)."""
    from torchvision.transforms import functional as TF

    return TF.normalize(u8.float().div(255), list(mean), list(std))


def ferlib_train(train_u8: torch.Tensor, labels: torch.Tensor, epochs: list[list[list[int]]], start: dict,
                 eval_u8: torch.Tensor | None = None, device: str = "cpu", normalise: str = "torchvision") -> dict:
    """ferlib's engine on given batches: ``train_u8`` uint8 [N,3,S,S] (augmentation off: normalisation only),
    ``epochs[e][b]`` the item indices of batch b of epoch e (the last epoch may stop early). Returns
    ``losses``, ``lrs`` (the lr each step used), the final ``state`` and, after each complete epoch, the
    logits of ``eval_u8`` in eval mode (``eval_logits``).

    ``normalise="torchvision"`` feeds the authors' float inputs exactly (:func:`torchvision_normalise`):
    training from random weights on a few images amplifies a 5e-7 input rounding difference to 1e-3 in the
    loss within 3 steps, which would hide what this stage compares (the loss, optimiser, schedule and
    BatchNorm updates). ``"ferlib"``: ferlib's batch transform (the data stage measures the difference)."""
    from ferlib.data.transforms import build_batch_transform
    from ferlib.optim import build_optimizer, build_scheduler
    from ferlib.engine.training import build_loss
    from ferlib.engine.step import Stepper
    from ferlib.models import create_model
    from ferlib.weights import convert_upstream

    dev = torch.device(device)
    recipe = parity_recipe()
    model = create_model(PAPER, num_classes=recipe.num_classes, **recipe.model_kwargs)
    model.load_state_dict(convert_upstream(PAPER, start), strict=True)
    model.to(dev, TRAIN_DTYPE)
    loss = build_loss(recipe).to(dev)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(params, recipe)
    scheduler = build_scheduler(optimizer, recipe, recipe.epochs)
    stepper = Stepper(model, loss, optimizer, params, [], dev, recipe.precision, 1, recipe.batch_size,
                      recipe.grad_clip)
    if normalise == "torchvision":
        norm = eval_norm = lambda u8: torchvision_normalise(u8, recipe.mean, recipe.std)  # noqa: E731
    else:
        norm = build_batch_transform(recipe.replace(train_transforms=[]), train=True).to(dev)
        eval_norm = build_batch_transform(recipe.replace(train_transforms=[], test_transforms=[]), train=False).to(dev)
    losses, lrs, eval_logits = [], [], []
    for e, batches in enumerate(epochs):
        if hasattr(loss, "set_epoch"):
            loss.set_epoch(e)
        model.train()
        for idx in batches:
            x = norm(train_u8[idx].to(dev)).to(TRAIN_DTYPE)
            y = labels[idx].to(dev)
            lrs.append(float(optimizer.param_groups[0]["lr"]))
            value, _, _ = stepper.micro(x, y, True)
            losses.append(float(value))
        if len(batches) == _full_epoch_batches(len(train_u8), recipe.batch_size) and e < len(epochs) - 1:
            scheduler.step()
            if eval_u8 is not None:
                model.eval()
                with torch.no_grad():
                    eval_logits.append(model(eval_norm(eval_u8.to(dev)).to(TRAIN_DTYPE)).logits.cpu())
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return {"losses": torch.tensor(losses, dtype=torch.float64), "lrs": torch.tensor(lrs, dtype=torch.float64),
            "state": state, "eval_logits": eval_logits, "optimizer": optimizer}


def ferlib_probe_logits(start: dict) -> torch.Tensor:
    from ferlib.models import create_model
    from ferlib.weights import convert_upstream

    recipe = parity_recipe()
    model = create_model(PAPER, num_classes=recipe.num_classes, **recipe.model_kwargs)
    model.load_state_dict(convert_upstream(PAPER, start), strict=True)
    with torch.no_grad():
        return model.eval()(model_probe_input()).logits


def _full_epoch_batches(n: int, batch_size: int) -> int:
    return -(-n // batch_size)


def plan_epochs(n: int, batch_size: int, steps: int, seed: int) -> list[list[list[int]]]:
    """Seeded shuffled batches (a new permutation each epoch) up to ``steps`` batches in all."""
    out, left, e = [], steps, 0
    while left > 0:
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1009 + e)).tolist()
        batches = [perm[i:i + batch_size] for i in range(0, n, batch_size)][:left]
        out.append(batches)
        left -= len(batches)
        e += 1
    return out


# --- the authors' side ---------------------------------------------------------------------------------------


# --- the stages ---------------------------------------------------------------------------------------------


def _ferlib_data(data_root: Path, n_images: int | None, cache_dir: Path):
    """ferlib's reader + uint8 cache (the card's stored_size) for the train and test splits, first N of each."""
    import warnings

    from ferlib.engine.training import load_split

    recipe = parity_recipe()
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fixture's corrupt JPEG is skipped and counted (reported below)
        for split in ("train", "test"):
            ds = load_split(recipe, split, data_root, progress=False, cache=cache_dir)
            keep = list(range(len(ds) if n_images is None else min(n_images, len(ds))))
            out[split] = (ds, keep)
    return recipe, out


def _box_draws(seed: int, n: int, size: tuple[int, int], scale, ratio) -> list[tuple[int, int, int, int]]:
    """Seeded RandomResizedCrop boxes (torchvision's rule), used to fix the crop on both sides."""
    from torchvision import transforms as T

    from PIL import Image

    img = Image.new("RGB", (size[1], size[0]))
    torch.manual_seed(seed)
    return [tuple(int(v) for v in T.RandomResizedCrop.get_params(img, list(scale), list(ratio))) for _ in range(n)]


def _steps(bt) -> list:
    """The augmentation steps of a :class:`ferlib.data.transforms.BatchTransform`, v2.Compose runs flattened."""
    out = []
    for m in bt.augment or ():
        out.extend(getattr(m, "transforms", [m]))
    return out


def _ferlib_train_tf(recipe, boxes, flip: float):
    """ferlib's batched train transform with its crop's draw fixed to ``boxes`` ((top, left, height, width) per
    image) and flip probability ``flip``."""
    bt, crops, flips = _ferlib_ops(recipe)
    box = torch.tensor(boxes, dtype=torch.int64).view(-1, 4)
    for m in crops:
        m.sample = lambda B, H, W, device=None: {"top": box[:B, 0], "left": box[:B, 1], "h": box[:B, 2],
                                                 "w": box[:B, 3]}
    for m in flips:
        m.p = flip
    return bt


def _ferlib_ops(recipe):
    """ferlib's train transform and its random-resized-crop and flip steps (batched modules with ``sample``)."""
    from ferlib.data.batched_aug import BatchedRandomResizedCrop
    from ferlib.data.transforms import BatchedHFlip, build_batch_transform

    bt = build_batch_transform(recipe, train=True)
    crops = [m for m in _steps(bt) if isinstance(m, BatchedRandomResizedCrop)]
    flips = [m for m in _steps(bt) if isinstance(m, BatchedHFlip)]
    return bt, crops, flips


def data_stage(report: Report, recipe, ferlib_sets, their_sets, seed: int) -> dict:
    """(a) their Dataset + transforms vs ferlib's reader, cache and transforms; returns their uint8 inputs."""
    from ferlib.data.transforms import build_batch_transform

    mean, std = recipe.mean, recipe.std
    train_ds, test_ds = their_sets["train"], their_sets["test"]
    recorded = {}
    # labels and file order
    for split, theirs in (("train", train_ds), ("test", test_ds)):
        ds, keep = ferlib_sets[split]
        ours = torch.tensor([int(ds.targets[i]) for i in keep])
        report.add(compare_tensors("data", f"{split} labels ({len(keep)} images)", ours, torch.tensor(theirs.label) - 1,
                                   note="their label = list value − 1; ferlib's RAF-DB order"))
    # normalisation constants
    norm = find_ops(test_ds.transform, "Normalize")
    if norm:
        same = list(norm[0].mean) == list(mean) and list(norm[0].std) == list(std)
        report.add(Check("data", "normalisation mean/std", f"{list(norm[0].mean)}/{list(norm[0].std)} vs card "
                         f"{list(mean)}/{list(std)}", same, "equal"))
    # eval transform on the test split
    ds, keep = ferlib_sets["test"]
    cached = torch.stack([ds.load(i) for i in keep])
    ours = build_batch_transform(recipe, train=False)(cached)
    theirs = torch.stack([test_ds[i][0] for i in range(len(keep))])
    report.add(grey_levels("data", "eval input (decode, cache, Resize 256, CenterCrop 224)", ours, theirs, mean, std,
                           note=f"ferlib: uint8 cache at stored_size {recipe.stored_size}, batched v2 resize; "
                                "theirs: PIL per image"))
    pil_eval = pil_ops(test_ds.transform)
    recorded["eval_u8"] = torch.stack([_pil_u8(pil_eval(test_ds.loader(os.path.join(test_ds.raf_path, n))))
                                       for n in test_ds.images_names])
    # train transform with each random op fixed
    ds, keep = ferlib_sets["train"]
    cached = torch.stack([ds.load(i) for i in keep])
    crops = find_ops(train_ds.transform, "RandomResizedCrop")
    scale, ratio = (crops[0].scale, crops[0].ratio) if crops else ((0.08, 1.0), (3 / 4, 4 / 3))
    boxes = _box_draws(seed, len(keep), tuple(cached.shape[-2:]), scale, ratio)
    for flip in (0.0, 1.0):
        with fixed_ops(train_ds.transform, iter(boxes), flip):
            theirs = torch.stack([train_ds[i][0] for i in range(len(keep))])
        ours = _ferlib_train_tf(recipe, boxes, flip)(cached)
        report.add(grey_levels("data", f"train input, crop box fixed, flip {'on' if flip else 'off'}", ours, theirs,
                               mean, std, note="RandomResizedCrop(224) on the same box: PIL per image vs ferlib's batched bilinear resize"))
    with fixed_ops(train_ds.transform, None, 0.0):
        pil_train = pil_ops(train_ds.transform)
        recorded["train_u8"] = torch.stack([_pil_u8(pil_train(train_ds.loader(os.path.join(train_ds.raf_path, n))))
                                            for n in train_ds.images_names])
    return recorded


def _pil_u8(img) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.asarray(img.convert("RGB")).transpose(2, 0, 1)))


def augment_stage(report: Report, recipe, their_train_tf, seed: int, n: int = N_DRAWS) -> None:
    """(b) the random ops of their train transform vs ferlib's batched ops: parameters and draws."""
    from PIL import Image

    from torchvision.transforms import InterpolationMode

    theirs_ops = [type(op).__name__ for op in their_train_tf.transforms]
    random_ops = [o for o in theirs_ops if o not in ("ToTensor", "Normalize")]
    known = {"RandomResizedCrop": "random_resized_crop", "RandomHorizontalFlip": "hflip"}
    mapped = [known.get(o, o) for o in random_ops]
    report.add(Check("augment", "train ops", f"{' → '.join(random_ops)} vs card {list(recipe.train_transforms)}",
                     mapped == list(recipe.train_transforms), "same ops, same order"))
    bt, our_crops, our_flips = _ferlib_ops(recipe)
    their_crops, their_flips = find_ops(their_train_tf, "RandomResizedCrop"), find_ops(their_train_tf, "RandomHorizontalFlip")
    if their_crops and our_crops:
        t, o = their_crops[0], our_crops[0]
        t_cfg = (list(t.size), [float(v) for v in t.scale], [round(float(v), 6) for v in t.ratio],
                 InterpolationMode(t.interpolation).value)
        o_cfg = ([o.size, o.size], [float(v) for v in o.scale], [round(float(v), 6) for v in o.ratio],
                 "bilinear")  # BatchedRandomResizedCrop: bilinear grid_sample (torchvision's resize when shrinking)
        report.add(Check("augment", "RandomResizedCrop size/scale/ratio/interpolation", f"{t_cfg} vs {o_cfg}",
                         t_cfg == o_cfg, "equal"))
        img = Image.new("RGB", (100, 100))
        torch.manual_seed(seed)
        tb = np.array([t.get_params(img, t.scale, t.ratio) for _ in range(n)], dtype=np.float64)
        torch.manual_seed(seed + 1)
        prm = o.sample(n, 100, 100)
        ob = torch.stack([prm[k] for k in ("top", "left", "h", "w")], 1).double().numpy()
        for label, f in (("crop area fraction", lambda b: b[:, 2] * b[:, 3] / 1e4),
                         ("crop aspect w/h", lambda b: b[:, 3] / b[:, 2]),
                         ("crop top offset / free rows", lambda b: b[:, 0] / np.maximum(1, 100 - b[:, 2])),
                         ("crop left offset / free columns", lambda b: b[:, 1] / np.maximum(1, 100 - b[:, 3]))):
            report.add(two_sample("augment", label, f(ob), f(tb), "continuous", ALPHA,
                                  note="100×100 source, the fixture's stored size"))
    if their_flips and our_flips:
        marker = Image.fromarray(np.array([[[0, 0, 0], [255, 255, 255]]], dtype=np.uint8))
        torch.manual_seed(seed)
        theirs = np.array([np.asarray(their_flips[0](marker))[0, 0, 0] == 255 for _ in range(n)])
        torch.manual_seed(seed + 1)
        ours = our_flips[0].sample(n)["flip"].numpy()
        report.add(two_sample("augment", "horizontal flip rate", ours, theirs, "binary", ALPHA,
                              note="ferlib: one draw per image of the batch"))


# --- the adapter --------------------------------------------------------------------------------------------


def _names(ferlib_sets) -> dict:
    out = {}
    for split, (ds, keep) in ferlib_sets.items():
        out[split] = [(Path(ds.samples[i]).name, int(ds.targets[i])) for i in keep]
    return out


def _image_dir(ferlib_sets) -> Path:
    dirs = {Path(ds.samples[i]).parent for ds, keep in ferlib_sets.values() for i in keep}
    if len(dirs) != 1:
        raise ParityInputError(f"the images of the two splits lie in {len(dirs)} folders ({sorted(map(str, dirs))[:3]}); "
                               "RafDataset reads one folder: pass the RAF-DB root (Image/aligned)")
    return dirs.pop()


def _their_accuracy(stdout: str) -> list[float]:
    return [float(v) for v in re.findall(r"val_accuracy: ([0-9.]+)", stdout)]


@register_parity(PAPER, repo=REPO)
def parity(opts: ParityOptions) -> Report:
    """Run the EMO-Net parity (module docstring); ``opts.record`` also writes the replay recording."""
    from ferlib.metrics import classification_metrics

    report = Report(PAPER)
    upstream = Path(opts.upstream).expanduser().resolve()
    for f in ("train.py", "dataset.py", "model/emoNet.py"):
        if not (upstream / f).is_file():
            raise ParityInputError(f"{upstream} has no {f}; it is not a checkout of {REPO}: "
                                   f"git clone https://github.com/{REPO} {upstream}")
    data_root = Path(opts.data_root).expanduser() if opts.data_root else FIXTURE_ROOT
    report.add(info("info", "data", f"{'--data-root ' + str(data_root) if opts.data_root else 'RAF-DB fixture (tests/data)'}"
                    f", first {opts.n_images or 'all'} images of each split; seed {opts.seed}; device {opts.device}"))
    with tempfile.TemporaryDirectory(prefix="ferlib-parity-emonet-") as tmp:
        tmp = Path(tmp)
        recipe, ferlib_sets = _ferlib_data(data_root, opts.n_images, tmp / "cache")
        skipped = sum(sum(ds.skip_report.counts.values()) for ds, _ in ferlib_sets.values())
        if skipped:
            report.add(info("data", "unreadable images", f"{skipped} skipped by ferlib's reader",
                            "compared on the images ferlib keeps; their PIL loader raises on a truncated JPEG"))
        names = _names(ferlib_sets)
        n_train = len(names["train"])
        bs = recipe.batch_size
        per_epoch = _full_epoch_batches(n_train, bs)
        steps = opts.steps if opts.steps is not None else per_epoch + 1
        if steps <= per_epoch:
            raise ParityInputError(f"--steps {steps} does not cross an epoch boundary ({per_epoch} batches of {bs} per "
                                   f"epoch with {n_train} training images): use --steps {per_epoch + 1} or more")
        epochs = plan_epochs(n_train, bs, steps, opts.seed)
        start = seeded_state(opts.seed)
        cap, _ = run_authors(upstream, tmp / "authors", _image_dir(ferlib_sets), names, start, epochs, opts.device,
                             report, TRAIN_DTYPE)
        if not cap.datasets or not cap.nets:
            raise RuntimeError("the authors' train.main() built no dataset or model; see its output:\n" + cap.stdout)
        their_sets = {ds.phase: ds for ds in cap.datasets}
        report.add(info("info", "authors' code", f"{upstream.name}: train.main() with DataLoader (seeded batches), "
                        "ECA_mobileNetV2 (→ model/emoNet.py, absent from their repository) and a stop after K steps "
                        "patched", "their starting weights file holds the --seed weights"))
        their_bs = cap.loaders[0].batch_size if cap.loaders else None
        report.add(Check("train", "batch size", f"{their_bs} vs card {bs}", their_bs == bs, "equal"))

        # (c) training
        record = {}
        with working_dir(cap.run_dir):
            recorded = data_stage(report, recipe, ferlib_sets, their_sets, opts.seed)
        train_u8 = recorded["train_u8"]
        labels = torch.tensor([lab for _, lab in names["train"]])
        report.add(compare_tensors("model", "logits, starting weights, eval mode", ferlib_probe_logits(start),
                                   cap.model_logits, FP32_TOL, "convert_upstream('emonet') of the --seed weights"))
        fed = torch.cat([torchvision_normalise(train_u8[idx], recipe.mean, recipe.std) for idx in cap.batches])
        report.add(compare_tensors("train", "inputs fed: their batches vs ToTensor+Normalize of the shared uint8",
                                   fed, torch.cat(cap.inputs), 0.0, "both sides train on these exact tensors"))
        from ferlib.data.transforms import build_batch_transform

        ferlib_norm = build_batch_transform(recipe.replace(train_transforms=[]), train=True)(train_u8)
        report.add(compare_tensors("data", "ferlib normalisation vs ToTensor+Normalize", ferlib_norm,
                                   torchvision_normalise(train_u8, recipe.mean, recipe.std), FP32_TOL,
                                   "kept: one fused multiply-add (fp32 rounding); not fed to the train stage, "
                                   "where random weights amplify it"))
        ours = ferlib_train(train_u8, labels, epochs, start, recorded["eval_u8"], opts.device)
        report.add(info("train", "settings", f"K={steps} steps of batch {bs} over {len(epochs)} epochs "
                        f"({per_epoch} batches/epoch); augmentation off (whole-image crop, no flip), dropout off, "
                        "λ 0.8 as coded; both sides in float64 (fp32 rounding is amplified by training from random "
                        "weights)", "ferlib's rafdb card trains λ 0.5 (the released checkpoints'); the "
                        "published forward hard-codes 0.8"))
        opt = cap.optimizers[0] if cap.optimizers else None
        report.add(_optimizer_row(opt, ours["optimizer"]))
        their_losses = torch.tensor(cap.losses[:len(cap.lrs)], dtype=torch.float64)
        report.add(compare_tensors("train", f"per-step loss ({len(their_losses)} steps)", ours["losses"], their_losses,
                                   TRAIN_REL_TOL))
        report.add(compare_tensors("train", "per-step lr", ours["lrs"], torch.tensor(cap.lrs, dtype=torch.float64),
                                   1e-12, note="the epoch boundary is crossed; no scheduler in train.py"))
        net = cap.nets[0]
        theirs_state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
        report.add(compare_state_dicts("train", ours["state"], theirs_state, TRAIN_REL_TOL,
                                       name=f"parameters and buffers after {steps} steps",
                                       note="BatchNorm running statistics included; ferlib's fused SGD"))
        # (d) evaluation
        n_eval = len(names["test"])
        their_acc = _their_accuracy(cap.stdout)
        eval_rows = []
        if cap.eval_logits and their_acc:
            logits = torch.cat(cap.eval_logits)[:n_eval]
            y = np.array([lab for _, lab in names["test"]])
            m = classification_metrics(logits.numpy(), y, list(range(7)))
            eval_rows.append(Check("eval", "accuracy from their logits (epoch 1)",
                                   f"ferlib {m['accuracy']:.5f} vs printed {their_acc[0]:.5f}",
                                   abs(m["accuracy"] - their_acc[0]) <= 5e-6, "equal (5 decimals printed)",
                                   "accuracy = correct / test images; no other metric in train.py"))
            if ours["eval_logits"]:
                eval_rows.append(compare_tensors("eval", "logits after epoch 1 (eval mode)", ours["eval_logits"][0],
                                                 logits, TRAIN_REL_TOL))
            record["their_eval_logits"] = logits
            record["their_accuracy"] = their_acc[0]
        else:
            eval_rows.append(Check("eval", "accuracy", "their validation did not run", False,
                                   note="K must pass an epoch end"))
        report.add(eval_rows)
        augment_stage(report, recipe, their_sets["train"].transform, opts.seed)
        if opts.record:
            record.update({
                "paper": PAPER, "seed": opts.seed, "steps": steps, "epochs": epochs, "names": names,
                "train_u8": pack_uint8(train_u8), "eval_u8": pack_uint8(recorded["eval_u8"]),
                "labels": labels, "eval_labels": torch.tensor([lab for _, lab in names["test"]]),
                "their_losses": their_losses, "their_lrs": torch.tensor(cap.lrs, dtype=torch.float64),
                "their_final": fingerprint(theirs_state),
                "n_images": opts.n_images, "table": report.table(),
            })
            save_record(opts.record, record)
    return report


def _optimizer_row(theirs, ours) -> Check:
    keys = ("lr", "momentum", "dampening", "weight_decay", "nesterov", "betas", "eps", "amsgrad")
    if theirs is None:
        return Check("train", "optimiser", "their loop made no optimiser step", False)
    t = {k: theirs.defaults[k] for k in keys if k in theirs.defaults}
    o = {k: ours.defaults[k] for k in keys if k in ours.defaults}
    t_name, o_name = type(theirs).__name__, type(ours).__name__
    fused = bool(ours.defaults.get("fused"))
    return Check("train", "optimiser", f"{t_name}{t} vs ferlib {o_name}{o}", t_name == o_name and t == o, "equal",
                 "ferlib steps with the fused implementation (one kernel; same update up to rounding)" if fused else "")


# --- replay (no checkout) -------------------------------------------------------------------------------------


def replay(path: str | Path, device: str = "cpu", stages=("data", "train", "eval")) -> Report:
    """ferlib's side recomputed against a recording of the authors' numbers (tests/data/parity/emonet.pt):
    ``stages`` "data" (ferlib's reader, cache and transforms on the fixture vs their recorded inputs) and
    "train" with "eval" (ferlib's engine on their recorded inputs vs their losses, lrs, tensors, logits)."""
    rec = load_record(path)
    report = Report(PAPER)
    train_u8, eval_u8 = unpack_uint8(rec["train_u8"]), unpack_uint8(rec["eval_u8"])
    if "train" in stages or "eval" in stages:
        _replay_training(report, rec, train_u8, eval_u8, device)
    if "data" in stages:
        _replay_data(report, rec, train_u8, eval_u8)
    return report


def _replay_training(report: Report, rec: dict, train_u8, eval_u8, device: str) -> None:
    from ferlib.metrics import classification_metrics

    ours = ferlib_train(train_u8, rec["labels"], rec["epochs"], seeded_state(rec["seed"]), eval_u8, device)
    report.add(compare_tensors("train", "per-step loss (recorded)", ours["losses"], rec["their_losses"], TRAIN_REL_TOL))
    report.add(compare_tensors("train", "per-step lr (recorded)", ours["lrs"], rec["their_lrs"], 1e-12))
    report.add(compare_fingerprints("train", ours["state"], rec["their_final"], TRAIN_REL_TOL))
    if "their_eval_logits" in rec and ours["eval_logits"]:
        report.add(compare_tensors("eval", "logits after epoch 1 (recorded)", ours["eval_logits"][0],
                                   rec["their_eval_logits"], TRAIN_REL_TOL))
        m = classification_metrics(rec["their_eval_logits"].numpy(), rec["eval_labels"].numpy(), list(range(7)))
        report.add(Check("eval", "accuracy from their logits (recorded)",
                         f"{m['accuracy']:.5f} vs printed {rec['their_accuracy']:.5f}",
                         abs(m["accuracy"] - rec["their_accuracy"]) <= 5e-6, "equal"))


def _replay_data(report: Report, rec: dict, train_u8, eval_u8) -> None:
    from ferlib.data.transforms import build_batch_transform

    recipe = parity_recipe()
    with tempfile.TemporaryDirectory(prefix="ferlib-replay-emonet-") as tmp:
        _, sets = _ferlib_data(FIXTURE_ROOT, rec.get("n_images"), Path(tmp))
        ds, keep = sets["test"]
        names = [Path(ds.samples[i]).name for i in keep]
        plain = lambda u8: torchvision_normalise(u8, recipe.mean, recipe.std)  # noqa: E731  their input, as fed
        if names == [n for n, _ in rec["names"]["test"]]:
            cached = torch.stack([ds.load(i) for i in keep])
            x = build_batch_transform(recipe, train=False)(cached)
            report.add(grey_levels("data", "eval input vs their recorded input", x, plain(eval_u8), recipe.mean,
                                   recipe.std))
        else:
            report.add(Check("data", "eval input vs their recorded input", "the fixture's test files differ from "
                             "the recording's", False, "same files"))
        ds, keep = sets["train"]
        cached = torch.stack([ds.load(i) for i in keep])
        whole = [(0, 0, int(cached.shape[-2]), int(cached.shape[-1]))] * len(keep)
        x = _ferlib_train_tf(recipe, whole, 0.0)(cached)
        report.add(grey_levels("data", "train input (whole-image crop, no flip) vs their recorded input", x,
                               plain(train_u8), recipe.mean, recipe.std))
