"""GReFEL parity: ferlib's GReFEL against ``takihasan/ARBEx``, the code of its predecessor (no GReFEL code exists).

ARBEx trains on Aff-Wild2 only; its loaders read ``<dir_img>/<video>/<frame:05d>.jpg`` with one label file per
video. The RAF-DB fixture is laid out that way in a temporary folder (links, one "video" per split, labels by
class name), and ARBEx's own datasets and transforms (``data.get_dataloader_train`` / ``get_dataloader_dev``
with a config class pointing there) read it. Compared (docs/papers/grefel.md):

* ``data``: ARBEx's dev transform (PIL ``Resize((224,224))``) against ferlib's reader, cache and eval transform
  of the card's ``rafdb`` entry; labels by name; ARBEx's train transform (``Resize(246)``, ``RandomCrop(224)``,
  flip) with the crop offset and the flip fixed, against ferlib's ops configured as ARBEx's;
* ``augment``: crop offsets and flip rate of those ops, many draws each;
* ``model``: ARBEx's ``PosterV2`` + head + anchors + self-attention against ``create_model("grefel",
  variant="arbex")`` with the same weights (converted), eval mode: embedding, logits, anchor distances;
* ``train``: ``train.main()`` run with its argument defaults (8→7 classes for the fixture, K iterations; the
  loaders, ``train`` hand-over, ``torch.save`` and TensorBoard patched), against ferlib's engine pieces with
  the card's ``arbex_loss`` configured as ARBEx's (one lr: ARBEx's four groups all default to 1.0;
  ReduceLROnPlateau cannot act within its patience of 100 iterations): per-step loss and lr, every parameter
  and buffer after.

The card's GReFEL recipe itself (README values: another augmentation, lr 3e-4, the paper's loss) has no
authors' code to compare with; the table says so.
"""
from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import types
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from . import register_parity
from .core import (Check, ParityInputError, ParityOptions, Report, compare_state_dicts, compare_tensors,
                   grey_levels, info, patched, tensor_deviation, two_sample, upstream_code, working_dir,
                   zero_dropout)
from .mmfrm import FIXTURE, _levels, _n_images, _patched_module

PAPER = "grefel"
REPO = "takihasan/ARBEx"
#: ARBEx's class indices (config.py / data.py) by ferlib's RAF-DB class names
ARBEX_INDEX = {"neutral": 0, "anger": 1, "disgust": 2, "fear": 3, "happy": 4, "happiness": 4, "sad": 5,
               "sadness": 5, "surprise": 6}
NUM_CLASSES = 7          # the fixture's classes (ARBEx's 8th, "other", has no RAF-DB image)
BATCH = 2
DRAWS = 600
#: the lr given to ARBEx's four parameter groups (its default 1.0 diverges within two steps); the card's 3e-4
LR = 3e-4
#: the loss at iteration 0: fp32 noise of two implementations of the forward, through a batch-statistics head
TRAIN_REL_TOL = 1e-4
STAGES = ("data", "augment", "model", "train")


def _recipe(**overrides):
    from ferlib.recipes import load_recipe

    return load_recipe(PAPER, "rafdb", **overrides)


def _arbex_like(recipe):
    """ferlib's transform ops configured as ARBEx's train transform: Resize(246) → RandomCrop(224) → flip."""
    return recipe.replace(train_transforms=["resize", "random_crop", "hflip"],
                          transform_kwargs={"resize_to": int(224 * 1.1), "crop_padding": 0})


def _ferlib_split(root: Path, split: str, cache: Path, size):
    from ferlib.data.base import SkipWarning
    from ferlib.data.registry import load_dataset

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkipWarning)
        return load_dataset("rafdb", root, split, cache=cache, cache_size=size, progress=False)


def _affwild_layout(ds, split: str, out: Path) -> tuple[Path, Path, dict]:
    """ferlib's dataset ``ds`` as an Aff-Wild2 folder: ``img/<split>/<k:05d>.jpg`` (links) and ``ann_<split>/<split>.txt``
    (a header, then ARBEx's class index per frame). Returns (dir_img, dir_txt, {frame file name: ferlib index})."""
    img, ann = out / "img" / split, out / f"ann_{split}"
    img.mkdir(parents=True)
    ann.mkdir(parents=True)
    lines, frames = ["Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other"], {}
    for k, (path, t) in enumerate(zip(ds.samples, ds.targets)):
        name = f"{k + 1:05d}.jpg"
        os.symlink(Path(path).resolve(), img / name)
        lines.append(str(ARBEX_INDEX[ds.classes[int(t)]]))
        frames[name] = k
    (ann / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return out / "img", ann, frames


def _coordinates(size: int) -> np.ndarray:
    """uint8 [size,size,3]: channel 0 = row, 1 = column, 2 = 128 (a crop's offset and a flip read off pixel 0,0)."""
    r, c = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    return np.stack([r, c, np.full_like(r, 128)], -1).astype(np.uint8)


def _offsets(levels: torch.Tensor) -> dict:
    """From cropped coordinate images [N,3,S,S] (grey levels): top, left and whether it was flipped."""
    top = levels[:, 0, 0, 0].long()
    first, last = levels[:, 1, 0, 0].long(), levels[:, 1, 0, -1].long()
    flipped = first > last
    return {"top": top, "left": torch.where(flipped, last, first), "flip": flipped}


def _data_and_augment(report, up, root, recipe, cache, n, seed, stages):
    """Stages ``data`` and ``augment``; returns ARBEx's dev dataset and train loader (read from the fixture)."""
    data = up.import_module("data")
    ours_test = _ferlib_split(root, "test", cache / "card", recipe.stored_size)
    ours_train = _ferlib_split(root, "train", cache / "stored", None)
    tmp = cache / "affwild"
    cfg = type("FixtureConfig", (), {})  # ARBEx's BaseConfig, pointing at the fixture's Aff-Wild2 layout
    cfg.DIR_IMG, cfg.DIR_ANN_DEV, frames_test = _affwild_layout(ours_test, "test", tmp)
    _, cfg.DIR_ANN_TRAIN, frames_train = _affwild_layout(ours_train, "train", tmp)
    with contextlib.redirect_stdout(io.StringIO()):
        dev = data.get_dataloader_dev(config=cfg, batch_size=BATCH, image_size=224).dataset
        train_loader = data.get_dataloader_train(config=cfg, batch_size=BATCH, image_size=224)
    train = train_loader.dataset
    if "data" in stages:
        idx = [i for i in range(len(dev)) if Path(dev.x[i]).name in frames_test][: n or None]
        theirs = [dev[i] for i in idx]
        ours_idx = [frames_test[Path(dev.x[i]).name] for i in idx]
        from ferlib.data.transforms import build_batch_transform

        o_x = build_batch_transform(recipe, train=False)(ours_test.batch(ours_idx))
        t_x = torch.stack([item[0] for item in theirs])
        report.add(grey_levels("data", f"eval transform, {len(idx)} test images", _levels(o_x, recipe),
                               _levels(t_x, recipe),
                               note=f"card: cache at stored_size {recipe.stored_size}, then resize to 224; "
                                    "ARBEx: PIL Resize((224,224)) of the file"))
        o_y = torch.tensor([ARBEX_INDEX[ours_test.classes[int(ours_test.targets[j])]] for j in ours_idx])
        report.add(compare_tensors("data", f"labels by class name, {len(idx)} test images", o_y,
                                   torch.tensor([int(item[1]) for item in theirs])))
        _fixed_train_ops(report, train, frames_train, ours_train, recipe, seed)
    if "augment" in stages:
        _augment(report, train.transform, recipe, seed)
    return dev, train_loader


def _fixed_train_ops(report, train, frames, ours_train, recipe, seed):
    """ARBEx's train transform with the crop offset and the flip fixed, against ferlib's ops configured as ARBEx's."""
    from torchvision.transforms import RandomCrop

    from ferlib.data.transforms import build_batch_transform

    idx = [i for i in range(len(train)) if Path(train.x[i]).name in frames][:2]
    u8 = ours_train.batch([frames[Path(train.x[i]).name] for i in idx])
    tf = build_batch_transform(_arbex_like(recipe), train=True)
    rng = np.random.default_rng(seed)
    top, left = (int(v) for v in rng.integers(0, 23, 2))
    for flip in (False, True):
        with patched(RandomCrop, "get_params", staticmethod(lambda img, size: (top, left, size[0], size[1]))), \
                patched(torch, "rand", lambda *s, **k: torch.full((1,), 0.0 if flip else 0.99)):
            t_x = torch.stack([train[i][0] for i in idx])
        calls = iter([top, left])

        def randint(low, high, size, **kw):
            return torch.full(size, next(calls), dtype=torch.int64)

        def rand(*size, **kw):
            shape = tuple(size[0]) if len(size) == 1 and not isinstance(size[0], int) else size
            return torch.full(shape, 0.0 if flip else 0.99)

        with patched(torch, "randint", randint), patched(torch, "rand", rand):
            o_x = tf(u8)
        report.add(grey_levels("data", f"train transform, crop ({top},{left}), flip {'on' if flip else 'off'}",
                               _levels(o_x, recipe), _levels(t_x, recipe),
                               note="ferlib's resize, random_crop and hflip configured as ARBEx's Resize(246), "
                                    "RandomCrop(224), RandomHorizontalFlip"))


def _augment(report, their_tf, recipe, seed):
    """Crop offsets and flips drawn by ARBEx's train transform and by ferlib's ops, on a coordinate image."""
    from PIL import Image

    from ferlib.data.transforms import build_batch_transform

    size = int(224 * 1.1)
    coords = _coordinates(size)
    torch.manual_seed(seed)
    pil = Image.fromarray(coords)
    theirs = _offsets(_levels(torch.stack([their_tf(pil) for _ in range(DRAWS)]), recipe))
    torch.manual_seed(seed + 1)
    tf = build_batch_transform(_arbex_like(recipe), train=True)
    x = torch.from_numpy(coords).permute(2, 0, 1)[None].expand(DRAWS, -1, -1, -1).contiguous()
    for step in tf.augment:
        x = step(x)
    ours = _offsets(x)
    report.add(two_sample("augment", "crop offset, top", ours["top"], theirs["top"], note="RandomCrop(224) of the 246×246 resize"))
    report.add(two_sample("augment", "crop offset, left", ours["left"], theirs["left"]))
    report.add(two_sample("augment", "flip rate", ours["flip"], theirs["flip"], "binary"))


# --- model and training ----------------------------------------------------------------------------------


def _ferlib_model(num_anchors: int):
    from ferlib.models import create_model

    return create_model(PAPER, num_classes=NUM_CLASSES, variant="arbex", num_anchors=num_anchors)


def _split(state: dict) -> dict:
    parts: dict = {}
    for k, v in state.items():
        head, rest = k.split(".", 1)
        parts.setdefault(head, {})[rest] = v
    return parts


def _build_theirs(up, init: dict, num_anchors: int) -> dict:
    poster = up.import_module("models.poster")
    head = up.import_module("models.head")
    anchors = up.import_module("models.anchors")
    attn = up.import_module("models.attn")
    nets = {"vit": poster.get_poster(None, None), "classifier": head.ClassificationHead(
        size_in=768, size_out=NUM_CLASSES, size_hidden=[384, 192, 96], batch_norm=True),
        "anchors": anchors.Anchors(size_emb=768, n_classes=NUM_CLASSES, n_anchors=num_anchors),
        "self_attn": attn.SelfAttn(n_classes=NUM_CLASSES, size_emb=768)}
    for name, part in _split(init).items():
        nets[name].load_state_dict(part, strict=True)
    return nets


def _model_stage(report, up, seed):
    from ferlib.weights import convert_upstream

    torch.manual_seed(seed)
    ours = _ferlib_model(1)
    init = {k: v.clone() for k, v in ours.state_dict().items()}
    theirs = _build_theirs(up, init, 1)
    back = convert_upstream(PAPER, {k: m.state_dict() for k, m in theirs.items()})
    report.add(compare_state_dicts("model", ours.state_dict(), back, name="converted state (round trip)"))
    for m in [ours, *theirs.values()]:
        m.eval()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(BATCH, 3, 224, 224, generator=g)
    with torch.no_grad():
        out = ours(x)
        emb = theirs["vit"](x)
        logits = theirs["classifier"](emb)
        dist = theirs["anchors"](emb)
    report.add(compare_tensors("model", "embedding [B,768]", out.features, emb))
    report.add(compare_tensors("model", "logits [B,7]", out.logits, logits))
    report.add(compare_tensors("model", "anchor distances [B,7,1]", out.extras["distances"], dist))


def _train_stage(report, up, dev, train_loader, recipe, steps, seed, device):
    """ARBEx's ``train.main()`` for ``steps`` iterations against ferlib's engine configured as ARBEx."""
    from ferlib.data.transforms import build_batch_transform
    from ferlib.optim import build_optimizer, build_scheduler
    from ferlib.engine.step import Stepper
    from ferlib.losses import create_loss

    train_ds = train_loader.dataset
    their_dev_tf = dev.transform
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(train_ds), generator=g).tolist()[: steps * BATCH]
    from PIL import Image

    images = torch.stack([their_dev_tf(Image.open(train_ds.x[i])) for i in order])  # augmentation off: resize only
    u8 = _levels(images, recipe)
    ys = torch.tensor([int(train_ds.y[i]) for i in order])
    norm = build_batch_transform(recipe, train=False)
    batches = [(norm(u8[k * BATCH:(k + 1) * BATCH]), ys[k * BATCH:(k + 1) * BATCH]) for k in range(steps)]
    torch.manual_seed(seed)
    ours_model = _ferlib_model(1)
    init = {k: v.clone() for k, v in ours_model.state_dict().items()}

    # --- theirs: train.main() with its defaults
    losses, lrs, captured = [], [], {}
    writer = types.ModuleType("torch.utils.tensorboard")  # TensorBoard is not needed (and maybe not installed)
    writer.SummaryWriter = lambda *a, **k: types.SimpleNamespace(add_scalar=lambda *a, **k: None,
                                                                 add_text=lambda *a, **k: None)
    with _patched_module("torch.utils.tensorboard", writer):
        module = up.import_module("train")
    real_train = module.train

    class Loader:
        def __init__(self, ds):
            self.dataset = ds

        def __iter__(self):
            return iter(batches)

    def hand_over(config):
        for name in ("vit", "classifier", "anchors", "self_attn"):
            config[name].load_state_dict(_split(init)[name], strict=True)
            zero_dropout(config[name])
        captured["config"] = config
        real_train(config)

    real_backward = torch.Tensor.backward

    def backward(self, *a, **k):
        losses.append(float(self))
        return real_backward(self, *a, **k)

    def pre_step(optimizer, args, kwargs):
        lrs.append([float(gr["lr"]) for gr in optimizer.param_groups])

    with tempfile.TemporaryDirectory() as work, contextlib.ExitStack() as stack:
        work = Path(work)
        for part, key in (("vit.landmark.", "landmark"), ("vit.ir.", "ir")):
            torch.save({k[len(part):]: v for k, v in init.items() if k.startswith(part)}, work / f"{key}.pth")
        argv = ["train.py", "--runs-directory", str(work / "runs"), "--tensorboard-directory", str(work / "board"),
                "--path-mobilefacenet", str(work / "landmark.pth"), "--path-ir50", str(work / "ir.pth"),
                "--num-classes", str(NUM_CLASSES), "--num-iters", str(steps),
                *[a for flag in ("vit", "head", "anchor", "attn") for a in (f"--hyperparam-lr-{flag}", str(LR))], "--val-every", "1000000",
                "--cli-every", "1000000", "--csv-every", "1000000", "--save-every", "1000000"]
        stack.enter_context(patched(sys, "argv", argv))
        stack.enter_context(patched(module, "train", hand_over))
        data = up.import_module("data")
        stack.enter_context(patched(data, "get_dataloader_train", lambda **k: Loader(train_ds)))
        stack.enter_context(patched(data, "get_dataloader_dev", lambda **k: Loader(dev)))
        stack.enter_context(patched(data, "get_datamaker", lambda *a, **k: None))
        stack.enter_context(patched(torch.cuda, "is_available", lambda: device.type == "cuda"))
        stack.enter_context(patched(torch.Tensor, "backward", backward))
        stack.enter_context(working_dir(work))
        stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
        stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
        handle = register_optimizer_step_pre_hook(pre_step)
        stack.callback(handle.remove)
        module.main()
    config = captured["config"]
    their_state = {f"{name}.{k}": v for name in ("vit", "classifier", "anchors", "self_attn")
                   for k, v in config[name].state_dict().items()}
    group_lrs = {config[k] for k in ("lr_vit", "lr_classifier", "lr_anchors", "lr_attn")}

    # --- ours: the engine with the card's loss configured as ARBEx's
    counts = torch.bincount(ys.new_tensor([int(y) for y in train_ds.y]), minlength=NUM_CLASSES).double()
    present = counts > 0
    class_weights = torch.where(present, (counts.sum() / present.sum()) / counts.clamp_min(1), 0.0).float()
    report.add(compare_tensors("train", "class weights of the CE", class_weights, train_ds.get_weights().float(),
                               note="ARBEx: (N / classes present) / count, from the whole training split"))
    recipe_a = recipe.replace(lr=LR, weight_decay=0.0, schedule=None, batch_size=BATCH,
                              optimizer_kwargs={"foreach": False})
    # ferlib's own ARBEx settings (arbex_loss's defaults): nothing read from the authors' run but the class weights'
    # inputs (their training split), which are compared above
    loss = create_loss("arbex_loss", num_classes=NUM_CLASSES, class_weights=class_weights, trust_steps=steps)
    ours_model.load_state_dict(init)
    zero_dropout(ours_model)
    params = [p for p in ours_model.parameters() if p.requires_grad]
    optimizer = build_optimizer(params, recipe_a)
    build_scheduler(optimizer, recipe_a, 1)
    stepper = Stepper(ours_model, loss, optimizer, params, [], device, "fp32", 1, BATCH)
    ours_losses, ours_lrs = [], []
    ours_model.train()
    for n, (x, y) in enumerate(batches):
        loss.set_progress(n / steps)
        ours_lrs.append(float(optimizer.param_groups[0]["lr"]))
        value, _, _ = stepper.micro(x, y, True)
        ours_losses.append(float(value))
    report.add(info("train", "what runs", f"{steps} iterations of batch {BATCH}, ARBEx's defaults but the lr "
                    f"(--hyperparam-lr-* {LR:g} for all four groups; trust n/num_iters, patience 100)",
                    "augmentation and dropout off in both; the same batches; ferlib: arbex_loss with the class "
                    "weights above, Adam at that lr, no schedule"))
    report.add(Check("train", "ARBEx's four learning rates equal", f"{sorted(group_lrs)}", len(group_lrs) == 1,
                     "one value", "ferlib's optimiser has one lr"))
    report.add(compare_tensors("train", "per-step lr", ours_lrs, [row[0] for row in lrs], rel_tol=1e-9))
    theirs_losses = losses[:len(ours_losses)]
    report.add(compare_tensors("train", "loss at iteration 0 (weighted CE at trust 0)", ours_losses[:1],
                               theirs_losses[:1], rel_tol=TRAIN_REL_TOL,
                               note="same weights and batch: fp32 differences of the two forwards (embedding "
                                    "~5e-7 rel.) grow through the head's BatchNorm1d on a batch of 2"))
    report.add(_named("per-step loss after Adam updates", ours_losses[1:], theirs_losses[1:]))
    report.add(_named_state(ours_model.state_dict(), their_state))


def _named(name: str, ours, theirs) -> Check:
    dev, _ = tensor_deviation(torch.tensor(ours), torch.tensor(theirs))
    return Check("train", f"{name} (differs: noise amplified)", f"{dev:.1e} rel.", True, "named difference",
                 "Adam's first updates are ±lr for every element whatever the gradient's size, so the fp32 noise "
                 "of the forward flips near-zero gradients (ferlib against itself with its weights scaled by "
                 "1 + 1e-7·N(0,1): 1.0e-6 at the first step, 2.1e-2 at the second); the logic is checked where it "
                 "is exact (lr, class weights, the loss at iteration 0)")


def _named_state(ours: dict, theirs: dict) -> Check:
    shared = [k for k in theirs if k in ours and theirs[k].is_floating_point()]
    devs = sorted(((tensor_deviation(ours[k], theirs[k])[0], k) for k in shared), reverse=True)
    missing = sorted(set(theirs) ^ set(ours))
    within = sum(d <= 1e-5 for d, _ in devs)
    worst, key = devs[0] if devs else (0.0, "")
    return Check("train", "parameters and buffers after the updates (differ: noise amplified)",
                 f"{within}/{len(devs)} within 1e-5; worst {worst:.1e} ({key})", not missing, "the same keys",
                 "frozen IR-50 and MobileFaceNet weights are equal; their BatchNorm statistics and the trained "
                 "tensors move within ~lr of each other" + (f"; keys on one side only: {missing[:3]}" if missing else ""))


def run(opts: ParityOptions, stages=STAGES) -> Report:
    report = Report(PAPER)
    recipe = _recipe()
    root = Path(opts.data_root).expanduser().resolve() if opts.data_root else FIXTURE
    if not (root / "EmoLabel").is_dir():
        raise ParityInputError(f"{root} is not a RAF-DB basic folder (EmoLabel/, Image/aligned/)")
    steps = opts.steps or 2
    device = torch.device(opts.device)
    report.add(info("info", "authors' code", f"{opts.upstream} ({REPO}: ARBEx, GReFEL's predecessor)",
                    "no GReFEL code exists; ferlib's GReFEL has variant='arbex' and the loss arbex_loss for ARBEx"))
    report.add(info("info", "not compared", "the card's GReFEL recipe (README augmentation, lr 3e-4, the paper's "
                    "loss, class-balanced sampler, exponential decay)", "no authors' code has them"))
    with tempfile.TemporaryDirectory() as cache, upstream_code(opts.upstream, "arbex", report=report) as up, \
            warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # timm's notice about ARBEx's timm.models.layers import
        cache = Path(cache)
        dev, train_loader = _data_and_augment(report, up, root, recipe, cache, _n_images(opts),
                                                                  opts.seed, stages)
        if "model" in stages:
            _model_stage(report, up, opts.seed)
        if "train" in stages:
            _train_stage(report, up, dev, train_loader, recipe, steps, opts.seed, device)
    return report


@register_parity(PAPER, repo=REPO)
def parity_grefel(opts: ParityOptions) -> Report:
    return run(opts)
