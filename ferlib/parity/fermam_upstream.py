"""Drive FERMam's own ``train.py`` (jxcsglr/FERMam, ``FERMam-main/``) for a parity run.

:func:`run_authors_training` imports the authors' ``train`` module from the checkout and runs its
``run_training()`` as written: their script builds the transforms, ``RafDataSet``, ``pyramid_trans_expr``,
``SAM(…, Adam, lr, rho=0.05)``, ``ExponentialLR``, ``CrossEntropyLoss`` + ``LabelSmoothingCrossEntropy`` and
runs its epoch loop and validation. Only what a parity run must control is patched, for the duration
of the call:

* the command line (``--epochs``, ``--batch_size``, ``--val_batch_size``, ``--workers 0``; every recipe
  option keeps the script's default);
* ``RafDataSet``'s hard-coded path → the data folder, keeping the first loadable images (``dataidxs``);
* ``DataLoader`` → fixed batches: each item is the script's own dataset item, with ``basic_aug`` off and
  the train transform's random ops at p = 0 (augmentation off, as the comparison needs);
* ``pyramid_trans_expr`` → their class, built in an empty working directory (so no pretrained file
  loads), then given the starting weights and dropout p = 0;
* ``.cuda()`` → no-op on CPU; ``torch.save`` → recorded instead of written; ``print`` and ``f1_score``
  → recorded; ``Tensor.backward`` → records each loss it is called on; ``SAM`` → their class with the
  learning rate of each ``second_step`` recorded;
* ``thop`` (imported and unused by ``train.py``) → an empty stand-in when it is not installed;
* standard output → kept in :attr:`AuthorsRun.stdout` (their model prints that its pretrained files are absent).

Nothing of the authors' code is copied here: every object comes from their modules.
"""
from __future__ import annotations

import contextlib
import copy
import importlib
import io
import math
import os
import re
import sys
import tempfile
import types
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .core import patched, working_dir, zero_dropout

_VAL_LINE = re.compile(r"Val Loss: (?P<loss>[-\d.naninf]+) \| Acc: (?P<acc>[\d.]+) \| F1: (?P<f1>[\d.]+)")


def code_dir(upstream) -> Path:
    """The folder holding ``train.py``: ``DIR/FERMam-main`` (the repository's layout) or ``DIR`` itself."""
    root = Path(upstream).expanduser().resolve()
    for cand in (root / "FERMam-main", root):
        if (cand / "train.py").is_file() and (cand / "data_preprocessing" / "dataset_raf.py").is_file():
            return cand
    from .core import ParityInputError

    raise ParityInputError(f"{root} holds no FERMam train.py (looked in {root / 'FERMam-main'} and {root}); "
                           "fix: pass --upstream a clone of https://github.com/jxcsglr/FERMam")


@contextlib.contextmanager
def thop_standin(rows: list):
    """``import thop`` succeeds (train.py imports it and never calls it)."""
    try:
        importlib.import_module("thop")
        yield
        return
    except ImportError:
        pass
    from .core import info

    mod = types.ModuleType("thop")
    mod.__ferlib_standin__ = True
    sys.modules["thop"] = mod
    rows.append(info("info", "thop", "stand-in (empty module)",
                     "train.py imports thop for a FLOPs count it has commented out"))
    try:
        yield
    finally:
        sys.modules.pop("thop", None)


def loadable_indices(ds, n: int | None) -> list[int]:
    """The first ``n`` items of the authors' dataset that cv2 decodes (their ``__getitem__`` crashes on the
    others: ``cv2.imread`` returns None)."""
    import cv2

    keep = []
    for i, p in enumerate(ds.file_paths):
        if cv2.imread(p) is not None:
            keep.append(i)
        if n is not None and len(keep) >= n:
            break
    return keep


def one_per_class_first(targets, n: int) -> list[int]:
    """``n`` indices: the first item of each class, then the next items in order (an evaluation batch in
    which every class occurs, so macro F1 has the same label set under both definitions)."""
    targets = list(map(int, targets))
    first = sorted({t: i for i, t in reversed(list(enumerate(targets)))}.values())
    rest = [i for i in range(len(targets)) if i not in first]
    return sorted((first + rest)[:n])


def without_random_ops(transform):
    """A copy of the authors' ``transforms.Compose`` with each random op's probability set to 0."""
    from torchvision import transforms as T

    tf = copy.deepcopy(transform)
    for op in getattr(tf, "transforms", []):
        if isinstance(op, (T.RandomHorizontalFlip, T.RandomVerticalFlip, T.RandomErasing)):
            op.p = 0.0
    return tf


@dataclass
class AuthorsRun:
    """What one run of the authors' ``run_training()`` produced."""

    train_transform: object = None
    val_transform: object = None
    datasets: dict = field(default_factory=dict)        # "train"/"val" -> their RafDataSet
    batches: list = field(default_factory=list)          # [(x, y)] per optimiser step, in order
    step_epochs: list = field(default_factory=list)      # epoch (0-based) of each step
    val_batch: tuple | None = None                       # (x, y)
    losses: list = field(default_factory=list)           # every backward()'s loss: 2 per SAM step
    lrs: list = field(default_factory=list)              # lr at each second_step
    eval_logits: list = field(default_factory=list)      # per epoch [n_val, C]
    printed: list = field(default_factory=list)          # lines train.py printed
    f1: list = field(default_factory=list)               # f1_score results per epoch
    saved: list = field(default_factory=list)            # torch.save payload keys
    final_state: dict = field(default_factory=dict)
    model: object = None
    stdout: io.StringIO = field(default_factory=io.StringIO)   # what their modules printed
    init_shapes: dict = field(default_factory=dict)      # their constructor's state: key -> shape
    start_logits: torch.Tensor | None = None            # their eval forward of the val batch at the start

    def val_metrics(self) -> list[dict]:
        """``{"acc", "f1"}`` per epoch as the script printed them."""
        out = []
        for line in self.printed:
            m = _VAL_LINE.search(line)
            if m:
                out.append({"acc": float(m["acc"]), "f1": float(m["f1"])})
        return out


class _SetupDone(Exception):
    """Raised where the script builds its model, to stop a setup-only run."""


class _FixedLoader:
    """Stands in for ``DataLoader``: the same precomputed batches, one list per epoch."""

    def __init__(self, epochs_batches):
        self.epochs_batches, self.epoch = epochs_batches, 0

    def __len__(self):
        return len(self.epochs_batches[0])

    def __iter__(self):
        batches = self.epochs_batches[min(self.epoch, len(self.epochs_batches) - 1)]
        self.epoch += 1
        return iter(batches)


def _collate(items, dtype):
    x = torch.stack([torch.as_tensor(s) for s, _ in items]).to(dtype)
    y = torch.as_tensor(np.array([int(t) for _, t in items]), dtype=torch.long)
    return x, y


def run_authors_training(root: Path, data_root: Path, start_state: dict, *, n_train: int, n_val: int,
                         batch_size: int, epochs: int, seed: int, device: str = "cpu",
                         dtype: torch.dtype = torch.float32, setup_only: bool = False) -> AuthorsRun:
    """Run the authors' ``train.run_training()`` from ``root`` on ``data_root`` (module docstring).

    ``start_state``: the starting weights (upstream keys) loaded into their freshly built model.
    Train batches: ``n_train`` images, ``batch_size`` each, a seeded order per epoch; one evaluation batch
    of ``n_val`` images with every class present when the split allows. ``setup_only``: stop when the script
    builds its model (datasets, transforms and batches captured; nothing trained)."""
    run = AuthorsRun()
    train_mod = importlib.import_module("train")
    their_sam = train_mod.SAM
    their_ds_cls = train_mod.RafDataSet
    their_model_fn = train_mod.pyramid_trans_expr

    def dataset(raf_path, dataidxs=None, train=True, transform=None, basic_aug=False, download=False):
        full = their_ds_cls(str(data_root) + os.sep, train=train, transform=transform, basic_aug=basic_aug)
        idx = loadable_indices(full, None)
        idx = idx[:n_train] if train else [idx[i] for i in one_per_class_first(full.target[idx], n_val)]
        ds = their_ds_cls(str(data_root) + os.sep, dataidxs=idx, train=train, transform=transform,
                          basic_aug=basic_aug)
        run.datasets["train" if train else "val"] = ds
        if train:
            run.train_transform = transform
        else:
            run.val_transform = transform
        return ds

    def loader(ds, batch_size=1, shuffle=False, **_):
        if ds is run.datasets.get("train"):
            plain = copy.copy(ds)
            plain.basic_aug = False
            plain.transform = without_random_ops(ds.transform)
            epochs_batches = []
            for e in range(epochs):
                order = np.random.default_rng(seed * 1009 + e).permutation(len(ds)).tolist()
                eb = [_collate([plain[i] for i in order[s:s + batch_size]], dtype)
                      for s in range(0, len(order), batch_size)]
                epochs_batches.append(eb)
                run.batches.extend(eb)
                run.step_epochs.extend([e] * len(eb))
            return _FixedLoader(epochs_batches)
        x, y = _collate([ds[i] for i in range(len(ds))], dtype)
        run.val_batch = (x, y)
        return _FixedLoader([[(x, y)]])

    def model_fn(*args, **kwargs):
        if setup_only:
            raise _SetupDone
        with tempfile.TemporaryDirectory() as empty, working_dir(empty):  # no ./models/pretrain here: nothing loads
            torch.manual_seed(seed)
            m = their_model_fn(*args, **kwargs)
        run.init_shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
        m.load_state_dict(start_state, strict=True)
        zero_dropout(m)
        m.to(dtype)
        if run.val_batch is not None:  # the forward at the start, in eval mode
            m.eval()
            with torch.no_grad():
                run.start_logits = m(run.val_batch[0])[0].detach().cpu().clone()
            m.train()
        m.register_forward_hook(lambda mod, inp, out: None if mod.training else
                                run.eval_logits.append(out[0].detach().cpu().clone()))
        run.model = m
        return m

    class RecordingSAM(their_sam):
        def second_step(self, *a, **k):
            run.lrs.append(float(self.param_groups[0]["lr"]))
            return super().second_step(*a, **k)

    orig_backward = torch.Tensor.backward

    def backward(self, *a, **k):
        if self.dim() == 0:
            run.losses.append(float(self.detach()))
        return orig_backward(self, *a, **k)

    their_f1 = train_mod.f1_score

    def f1(*a, **k):
        v = their_f1(*a, **k)
        run.f1.append(float(v))
        return v

    argv = ["train.py", "--epochs", str(epochs), "--batch_size", str(batch_size), "--val_batch_size",
            str(max(1, n_val)), "--workers", "0"]
    env_before = os.environ.get("CUDA_VISIBLE_DEVICES")
    with contextlib.ExitStack() as st:
        st.enter_context(patched(sys, "argv", argv))
        st.enter_context(contextlib.redirect_stdout(run.stdout))  # their modules' prints ("Error loading …")
        st.enter_context(patched(train_mod, "RafDataSet", dataset))
        st.enter_context(patched(train_mod, "data", types.SimpleNamespace(DataLoader=loader)))
        st.enter_context(patched(train_mod, "pyramid_trans_expr", model_fn))
        st.enter_context(patched(train_mod, "SAM", RecordingSAM))
        st.enter_context(patched(train_mod, "f1_score", f1))
        st.enter_context(patched(train_mod, "print", lambda *a, **k: run.printed.append(" ".join(map(str, a)))))
        st.enter_context(patched(torch.Tensor, "backward", backward))
        st.enter_context(patched(torch, "save", lambda obj, *a, **k: run.saved.append(sorted(obj))))
        if device == "cpu":
            st.enter_context(patched(torch.nn.Module, "cuda", lambda self, *a, **k: self))
            st.enter_context(patched(torch.Tensor, "cuda", lambda self, *a, **k: self))
        try:
            train_mod.run_training()
        except _SetupDone:
            return run
        finally:
            if env_before is None:
                os.environ.pop("CUDA_VISIBLE_DEVICES", None)
            else:
                os.environ["CUDA_VISIBLE_DEVICES"] = env_before
    run.final_state = {k: v.detach().cpu().clone() for k, v in run.model.state_dict().items()}
    return run


def steps_layout(steps: int) -> tuple[int, int]:
    """``(batches per epoch, epochs)`` for about ``steps`` optimiser steps over two epochs (the schedule
    steps once between them)."""
    per_epoch = max(1, math.ceil(max(2, steps) / 2))
    return per_epoch, 2
