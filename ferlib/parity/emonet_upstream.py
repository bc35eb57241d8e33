"""EMO-Net parity, the authors' side: their ``train.main()`` run from a checkout with the loader patched.

:func:`run_authors` lays out a temporary folder the way ``xiayu-cell/EMO-Net``'s ``train.py`` expects
(``../original`` holds the images, ``label.txt`` lists them, ``./mobileNet-ECA-RAFDB-0.91199.pth`` holds the
starting weights) and runs ``train.main()`` unchanged, with: ``torch.utils.data.DataLoader`` replaced by the
given seeded batches of their own ``RafDataset`` items (their random ops fixed: whole-image crop, no flip),
the module ``ECA_mobileNetV2`` (imported by ``train.py``, absent from the repository) pointing at their
``model/emoNet.py`` with Dropout p = 0, and a stop after K optimiser steps. Their per-step loss and lr are
read from ``Tensor.backward`` and torch's global optimiser step hooks; nothing of theirs is copied.
"""
from __future__ import annotations

import contextlib
import importlib
import io
import sys
import types
from pathlib import Path

import torch

from .core import Report, patched, upstream_code, working_dir, zero_dropout

#: the starting-weights file name train.py asserts and loads (not released by the authors)
START_FILE = "mobileNet-ECA-RAFDB-0.91199.pth"


class _Stop(Exception):
    """Raised from the optimiser's step hook after the K-th step of the authors' loop."""


def model_probe_input() -> torch.Tensor:
    """A fixed [2,3,224,224] input for the model-stage comparison (seeded, independent of --seed)."""
    return torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(20231))


def pil_ops(compose):
    """The ops of a torchvision ``Compose`` before its ``ToTensor`` (they act on PIL images)."""
    from torchvision import transforms as T

    ops = []
    for op in compose.transforms:
        if isinstance(op, T.ToTensor):
            break
        ops.append(op)
    return T.Compose(ops)


def find_ops(compose, cls_name: str):
    return [op for op in compose.transforms if type(op).__name__ == cls_name]


@contextlib.contextmanager
def fixed_ops(compose, boxes=None, flip: float | None = 0.0):
    """Their RandomResizedCrop / RandomHorizontalFlip with the random draw fixed: ``boxes`` an iterator of
    (top, left, height, width) (None: the whole image), ``flip`` the flip probability (0 or 1)."""
    crops, flips = find_ops(compose, "RandomResizedCrop"), find_ops(compose, "RandomHorizontalFlip")

    def whole(img, scale, ratio):
        w, h = img.size
        return 0, 0, h, w

    def given(img, scale, ratio):
        return next(boxes)

    saved = [(op, op.p) for op in flips]
    for op in crops:
        op.get_params = whole if boxes is None else given
    for op in flips:
        if flip is not None:
            op.p = flip
    try:
        yield
    finally:
        for op in crops:
            op.__dict__.pop("get_params", None)
        for op, p in saved:
            op.p = p


class Captured:
    """What the authors' run leaves behind: datasets and transforms, the model, losses, lrs, logits, output."""

    def __init__(self):
        self.datasets, self.loaders, self.nets = [], [], []
        self.losses, self.lrs, self.optimizers, self.eval_logits, self.batches = [], [], [], [], []
        self.inputs = []  # the training batches their loop received (float, normalised)
        self.model_logits = None  # their model with the starting weights on model_probe_input(), eval mode
        self.stdout = ""
        self.run_dir: Path | None = None  # their working directory (their dataset paths are relative to it)


def _layout(work: Path, image_dir: Path, names: dict[str, list[tuple[str, int]]], start: dict) -> Path:
    """The folders train.py expects: cwd ``work/run`` with label.txt and the starting weights, ``work/original``
    pointing at the images."""
    run = work / "run"
    run.mkdir(parents=True)
    (work / "original").symlink_to(image_dir.resolve(), target_is_directory=True)
    rows = [f"{name} {label + 1}" for split in ("train", "test") for name, label in names[split]]
    (run / "label.txt").write_text("\n".join(rows) + "\n")
    torch.save(start, run / START_FILE)
    return run


def run_authors(upstream: Path, work: Path, image_dir: Path, names: dict, start: dict, epochs: list, device: str,
                report: Report, dtype: torch.dtype = torch.float64) -> tuple[Captured, types.ModuleType]:
    """Run their ``train.main()`` for ``sum(len(e) for e in epochs)`` optimiser steps (see the module docstring)."""
    cap = Captured()
    run = cap.run_dir = _layout(work, image_dir, names, start)
    steps = sum(len(b) for b in epochs)
    plan = iter(epochs)

    with upstream_code(upstream, report=report, stand_in_mamba=False) as code:
        their_model = code.import_module("model.emoNet")
        their_dataset = code.import_module("dataset")

        def mobilenet(*args, **kwargs):
            net = their_model.MobileNetV2(*args, **kwargs).to(dtype)
            zero_dropout(net)  # dropout off, as on ferlib's side
            net.register_forward_hook(lambda mod, inp, out: None if mod.training else cap.eval_logits.append(
                out.detach().cpu()))
            cap.nets.append(net)
            return net

        probe = their_model.MobileNetV2(num_classes=7)
        probe.load_state_dict(start)
        with torch.no_grad():
            cap.model_logits = probe.eval()(model_probe_input())
        alias = types.ModuleType("ECA_mobileNetV2")
        alias.MobileNetV2 = mobilenet
        real_dataset_cls = their_dataset.RafDataset

        class Batches:
            """Stands in for torch's DataLoader in train.py: their dataset's items, our seeded batch order."""

            def __init__(self, dataset, batch_size=1, shuffle=False, **kwargs):
                self.dataset, self.batch_size, self.shuffle = dataset, batch_size, shuffle
                cap.loaders.append(self)

            def __len__(self):
                return -(-len(self.dataset) // self.batch_size)

            def __iter__(self):
                if self.shuffle:
                    batches = next(plan, [])
                else:
                    n = len(self.dataset)
                    batches = [list(range(i, min(n, i + self.batch_size))) for i in range(0, n, self.batch_size)]
                for idx in batches:
                    with fixed_ops(self.dataset.transform) if self.shuffle else contextlib.nullcontext():
                        items = [self.dataset[i] for i in idx]
                    batch = (torch.stack([it[0] for it in items]), torch.tensor([it[1] for it in items]),
                             [it[2] for it in items])
                    if self.shuffle:
                        cap.batches.append(list(idx))
                        cap.inputs.append(batch[0])
                    yield (batch[0].to(dtype),) + batch[1:]

        def dataset(*args, **kwargs):
            ds = real_dataset_cls(*args, **kwargs)
            cap.datasets.append(ds)
            return ds

        def pre_hook(opt, args, kwargs):
            cap.optimizers.append(opt)
            cap.lrs.append(float(opt.param_groups[0]["lr"]))

        def post_hook(opt, args, kwargs):
            if len(cap.lrs) >= steps:
                raise _Stop()

        real_backward = torch.Tensor.backward

        def backward(self, *args, **kwargs):
            if self.dim() == 0:
                cap.losses.append(float(self.detach()))
            return real_backward(self, *args, **kwargs)

        sys.modules["ECA_mobileNetV2"] = alias
        out = io.StringIO()
        handles = []
        try:
            train = code.import_module("train")
            train.RafDataset = dataset
            handles = [_optim_hooks().register_optimizer_step_pre_hook(pre_hook),
                       _optim_hooks().register_optimizer_step_post_hook(post_hook)]
            torch.Tensor.backward = backward
            with working_dir(run), patched(torch.utils.data, "DataLoader", Batches), contextlib.redirect_stdout(out), \
                    patched(torch.cuda, "is_available", lambda: device == "cuda" and _cuda_really()):
                try:
                    train.main()
                except _Stop:
                    pass
        finally:
            torch.Tensor.backward = real_backward
            for h in handles:
                h.remove()
            sys.modules.pop("ECA_mobileNetV2", None)
        cap.stdout = out.getvalue()
    return cap, their_dataset


_REAL_CUDA_AVAILABLE = torch.cuda.is_available


def _cuda_really() -> bool:
    return _REAL_CUDA_AVAILABLE()


def _optim_hooks():
    """``torch.optim.optimizer`` (the module with the global step hooks; ``torch.optim`` does not export it)."""
    return importlib.import_module("torch.optim.optimizer")
