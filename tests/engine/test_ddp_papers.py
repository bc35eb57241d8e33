"""Every paper model trains under DDP without ``find_unused_parameters`` (issue 27).

DDP requires a gradient for every trainable parameter. Parameters the authors build but never use
(FERMam's IR-50 ``output_layer`` and ASFR ``D``, MMFRM's ``network.bn1``, GReFEL's ``patch_embed``,
``CON1``, ``IRLinear*`` and blocks' ``conv``) are frozen where they are built, keys unchanged.

- every trainable parameter of each paper model (and of the switches that disable parts) gets a
  gradient from the card's loss;
- 2 processes (gloo, one spawn looping over the five papers, tiny sizes, the engine's ``Stepper`` with
  the card's loss and SAM where the card has it) make the update of one process on the whole batch.
  The models run in eval mode so that BatchNorm does not see per-rank batches (the only
  difference the test does not check: BatchNorm statistics are per rank under DDP).
"""
import dataclasses
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from ferlib.optim import build_optimizer
from ferlib.engine.training import build_loss
from ferlib.engine.step import Stepper
from ferlib.models import create_model
from ferlib.recipes import load_recipe

from test_ddp import _free_port

PAPERS = ("fermam", "mmfrm", "emonet", "grefel", "mfer")
#: tiny sizes (input side, factory keywords); the eval-mode switches keep BatchNorm off batch statistics
TINY = {
    "fermam": (32, {"landmark_bn_train": False}),
    "mmfrm": (32, {"landmark_mode": "eval"}),
    "emonet": (32, {"alpha": 0.25}),
    "grefel": (32, {"dim_emb": 32, "depth": 1, "num_heads": 2, "head_hidden": (16, 8), "num_anchors": 2}),
    "mfer": (32, {"dims": (16, 32, 64, 128), "depths": (1, 1, 2, 1), "drop_path_rate": 0.0}),
}
#: switches that leave part of a model unused (each frozen accordingly)
VARIANTS = [("fermam", {"conv_ssm_mode": "conv_only"}), ("fermam", {"conv_ssm_mode": "ssm_only"}),
            ("fermam", {"asfr_skip": "param"}), ("mmfrm", {"train_landmark": True}),
            ("grefel", {"freeze_backbones": False}), ("grefel", {"variant": "arbex"})]
GLOBAL_BATCH = 4

# Spawns processes or trains end to end: the slow tier, so that make test-fast stays quick.
pytestmark = [pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not built"), pytest.mark.slow]


def _build(paper: str, **extra):
    side, kw = TINY[paper]
    torch.manual_seed(0)
    model = create_model(paper, num_classes=7, **{**kw, **extra})
    recipe = dataclasses.replace(load_recipe(paper, "synthetic"), optimizer="sgd", lr=0.05, weight_decay=0.0,
                                 optimizer_kwargs={}, grad_clip=None)
    return model, build_loss(recipe), recipe, side


@pytest.mark.parametrize("paper,extra", [(p, {}) for p in PAPERS] + VARIANTS,
                         ids=[p for p in PAPERS] + [f"{p}-{next(iter(v.values()))}" for p, v in VARIANTS])
def test_every_trainable_parameter_reaches_the_loss(paper, extra):
    model, loss, _, side = _build(paper, **extra)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(2, 3, side, side, generator=g), torch.tensor([0, 3])
    loss(model.train()(x), y).backward()
    missed = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missed == [], f"{paper} {extra}: trainable parameters without a gradient (DDP would fail): {missed}"


def _one_update(paper: str, rank: int, world: int, x, y) -> list[torch.Tensor]:
    model, loss, recipe, _ = _build(paper)
    model.eval()
    net = nn.parallel.DistributedDataParallel(model) if world > 1 else model  # as fit() wraps it
    params = [p for p in model.parameters() if p.requires_grad]
    loss_params = [p for p in loss.parameters() if p.requires_grad]
    opt = build_optimizer(params + loss_params, recipe)
    st = Stepper(net, loss, opt, params + loss_params, loss_params, torch.device("cpu"), "fp32", 1, len(y) // world)
    mine = torch.arange(len(y))[rank::world]
    st.micro(x[mine], y[mine], boundary=True)
    return [p.detach().clone() for p in model.parameters()]


def _worker(rank, world, port, inputs, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        for paper in PAPERS:
            x, y = inputs[paper]
            torch.save(_one_update(paper, rank, world, x, y), os.path.join(out_dir, f"{paper}_rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_processes_update_every_paper_like_one_process_on_the_whole_batch(tmp_path):
    g = torch.Generator().manual_seed(2)
    inputs = {p: (torch.randn(GLOBAL_BATCH, 3, TINY[p][0], TINY[p][0], generator=g),
                  torch.randint(0, 7, (GLOBAL_BATCH,), generator=g)) for p in PAPERS}
    mp.spawn(_worker, args=(2, _free_port(), inputs, str(tmp_path)), nprocs=2, join=True)
    for paper in PAPERS:
        before = [p.detach().clone() for p in _build(paper)[0].parameters()]
        one = _one_update(paper, 0, 1, *inputs[paper])
        r0, r1 = (torch.load(tmp_path / f"{paper}_rank{r}.pt") for r in (0, 1))
        assert any(not torch.equal(a, b) for a, b in zip(one, before)), f"{paper}: the update changed nothing"
        for w0, a, b, c in zip(before, one, r0, r1):
            torch.testing.assert_close(c, b, rtol=0, atol=0)  # the ranks hold the same weights
            # the update of each tensor equals one process's, up to float32 summation order, which Adam's
            # normalisation amplifies for tiny gradients (FERMam: 1.1e-3 measured); a gradient of half the
            # batch, or not averaged, would differ by tens of per cent
            step_one, step_two = a - w0, b - w0
            assert (step_two - step_one).norm() <= 1e-2 * step_one.norm() + 1e-7, paper
