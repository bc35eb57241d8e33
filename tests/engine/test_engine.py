"""The engine's run-directory contract, checkpoint reload, resume, errors (CPU, tiny synthetic runs)."""
import json

import numpy as np
import pytest
import torch
import yaml

from ferlib.data import DataNotFoundError
from ferlib.engine import DataOptions, load_run, predict, train
from ferlib.engine.checkpoint import load_checkpoint, save_checkpoint
from ferlib.metrics import classification_metrics

TINY = dict(dataset_kwargs={"n_train": 48, "n_test": 24, "progress": False}, batch_size=16,
            model_kwargs={"width": 8}, input_size=32, progress=False)


@pytest.fixture(scope="module")
def syn_root(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


def test_run_dir_holds_every_file_of_the_contract(syn_root, tmp_path):
    run = train("baseline", "synthetic", data=syn_root, run=tmp_path / "r", epochs=2, **TINY)
    d = run.run_dir
    for name in ("config.yaml", "metrics.jsonl", "last.pt", "best.pt", "predictions.npz", "summary.json"):
        assert (d / name).is_file(), name
    cfg = yaml.safe_load((d / "config.yaml").read_text())
    assert cfg["recipe"]["paper"] == "baseline" and cfg["environment"]["torch"] == torch.__version__
    assert cfg["environment"]["device"] == "cpu" and "git_commit" in cfg["environment"]
    assert cfg["resolved"] == {"precision": "fp32", "channels_last": True, "world_size": 1, "global_batch_size": 16,
                               "per_process_batch_size": 16, "effective_batch_size": 16, "deterministic": False,
                               "nondeterministic_ops": [], "scan_backend": []}
    backend = cfg["environment"]["backend"]
    assert backend["tf32_matmul"] is False and backend["tf32_cudnn"] is False  # fp32 means IEEE fp32
    assert sorted(cfg["environment"]["mamba_ssm"]) == ["import_error", "version"]
    assert cfg["data"]["eval"]["selected_on"] == "test_selected"
    rows = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and rows[-1]["step"] == 6
    with np.load(d / "predictions.npz") as z:
        assert z["logits"].shape == (24, 7) and z["features"].shape == (24, 64) and z["targets"].shape == (24,)
        assert list(z["classes"]) == ["surprise", "fear", "disgust", "happy", "sad", "anger", "neutral"]
    assert run.summary["selected_on"] == "test_selected"
    assert run.summary["test_selected"] == run.metrics and run.summary["test_last"]["accuracy"] == rows[-1]["eval_accuracy"]
    assert {r["selected_on"] for r in rows} == {"test_selected"} and {r["eval_split"] for r in rows} == {"test"}


def test_checkpoint_reloads_to_the_same_predictions(syn_root, tmp_path):
    run = train("baseline", "synthetic", data=syn_root, run=tmp_path / "r", epochs=1, **TINY)
    model, recipe = load_run(run.run_dir)
    from ferlib.data import load_dataset

    test = load_dataset("synthetic", syn_root, "test", n_train=48, n_test=24, progress=False)
    pred = predict(model, test, recipe, "cpu", progress=False)
    with np.load(run.run_dir / "predictions.npz") as z:
        np.testing.assert_allclose(pred["logits"], z["logits"], rtol=1e-5, atol=1e-6)


def test_resume_equals_uninterrupted(syn_root, tmp_path):
    full = train("baseline", "synthetic", data=syn_root, run=tmp_path / "full", epochs=2, **TINY)
    train("baseline", "synthetic", data=syn_root, run=tmp_path / "part", epochs=1, **TINY)
    part = train("baseline", "synthetic", data=syn_root, run=tmp_path / "part", epochs=2, **TINY)
    a = load_checkpoint(full.run_dir / "last.pt")["model"]
    b = load_checkpoint(part.run_dir / "last.pt")["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    assert len((part.run_dir / "metrics.jsonl").read_text().splitlines()) == 2


def test_validation_holdout_is_labelled(syn_root, tmp_path):
    run = train("baseline", "synthetic", tmp_path / "v", DataOptions(syn_root, val_fraction=0.25), epochs=1, **TINY)
    assert run.summary["selected_on"] == "val" and "val_selected" in run.summary and "test_selected" not in run.summary
    assert run.summary["test_at_val_selected"]["n"] == 24


def test_nan_loss_names_the_step(syn_root, tmp_path):
    with pytest.raises(FloatingPointError, match=r"loss is nan at epoch 1, step 0"):
        # std 0 turns the normalised pixels into inf - inf = nan (torch's optimisers refuse lr=nan)
        train("baseline", "synthetic", data=syn_root, run=tmp_path / "n", epochs=1, std=(0.0, 0.0, 0.0),
              **{**TINY, "batch_size": 48})


def test_missing_real_dataset_points_at_notebook_01(tmp_path):
    with pytest.raises(DataNotFoundError, match="01_prepare_data"):
        train("baseline", "rafdb", data=tmp_path / "RAF-DB", epochs=1)


def test_corrupt_checkpoint_falls_back_to_previous(tmp_path):
    p = tmp_path / "last.pt"
    save_checkpoint({"v": torch.tensor(1)}, p)
    save_checkpoint({"v": torch.tensor(2)}, p)
    p.write_bytes(p.read_bytes()[:20])
    with pytest.warns(UserWarning, match="unreadable"):
        assert int(load_checkpoint(p)["v"]) == 1


def test_metrics_against_hand_computed():
    logits = np.eye(3)[[0, 1, 1, 2, 0, 0]]
    targets = np.array([0, 1, 2, 2, 0, 1])
    m = classification_metrics(logits, targets, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["mean_class_accuracy"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert m["confusion_matrix"] == [[2, 0, 0], [1, 1, 0], [0, 1, 1]]
    # F1 per class: a 2/(2+1)*... precision a=2/3 recall 1 -> 0.8; b p=.5 r=.5 -> .5; c p=1 r=.5 -> 2/3
    assert m["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)


# ---- optimisers, schedules, accumulation, SAM, clipping, EMA (unit level, no training run) ----

from torch import nn  # noqa: E402

from ferlib.optim import build_optimizer, build_scheduler  # noqa: E402
from ferlib.engine.step import Stepper  # noqa: E402
from ferlib.models.registry import ModelOutput  # noqa: E402
from ferlib.recipes import load_recipe  # noqa: E402


class _Linear(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(5, 3)

    def forward(self, x):
        return ModelOutput(self.fc(x), x, {})


def _ce(out, y):
    return nn.functional.cross_entropy(out.logits, y)


def _data(n=12):
    g = torch.Generator().manual_seed(2)
    return torch.randn(n, 5, generator=g), torch.randint(0, 3, (n,), generator=g)


def _lrs(schedule, epochs=6, warmup=0, **kw):
    import dataclasses

    # dataclasses.replace: load_recipe treats None overrides as "keep the card's value"
    recipe = dataclasses.replace(load_recipe("baseline", "synthetic"), lr=1.0, schedule=schedule, schedule_kwargs=kw,
                                 warmup_epochs=warmup)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = build_scheduler(opt, recipe, epochs)
    out = []
    for _ in range(epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_schedules_follow_their_formulas():
    import math

    assert _lrs(None) == [1.0] * 6
    assert _lrs("exponential", gamma=0.5) == pytest.approx([0.5 ** e for e in range(6)])
    assert _lrs("step", step_size=2, gamma=0.1) == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    assert _lrs("cosine") == pytest.approx([0.5 * (1 + math.cos(math.pi * e / 6)) for e in range(6)])
    # 2 warm-up epochs at 1/3, 2/3, then the cosine over the remaining 4
    assert _lrs("cosine", warmup=2) == pytest.approx([1 / 3, 2 / 3] + [0.5 * (1 + math.cos(math.pi * e / 4))
                                                                        for e in range(4)])
    with pytest.raises(ValueError, match="unknown schedule 'linear'"):
        _lrs("linear")


def test_optimizers_and_sam_wrapper():
    from ferlib.optim import SAM

    p = [nn.Parameter(torch.zeros(2))]
    for name, cls in (("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW), ("sgd", torch.optim.SGD)):
        opt = build_optimizer(p, load_recipe("baseline", "synthetic", optimizer=name, lr=0.1, weight_decay=0.01))
        assert type(opt) is cls and opt.param_groups[0]["lr"] == 0.1 and opt.param_groups[0]["weight_decay"] == 0.01
    sam = build_optimizer(p, load_recipe("baseline", "synthetic", sam=True, sam_rho=0.1))
    assert isinstance(sam, SAM) and type(sam.base_optimizer) is torch.optim.Adam and sam.param_groups[0]["rho"] == 0.1
    with pytest.raises(ValueError, match="unknown optimizer 'lamb'"):
        build_optimizer(p, load_recipe("baseline", "synthetic", optimizer="lamb"))


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_fused_optimizer_is_the_default_and_matches_the_loop(name):
    """The engine's fused update equals torch's per-parameter loop (what the authors' code runs)."""
    torch.manual_seed(0)
    start = [torch.randn(5, 3), torch.randn(7)]
    grads = [[torch.randn_like(w) for w in start] for _ in range(4)]
    recipe = load_recipe("baseline", "synthetic", optimizer=name, lr=0.05, weight_decay=0.01,
                         optimizer_kwargs={"momentum": 0.9} if name == "sgd" else {})
    ours = [nn.Parameter(w.clone()) for w in start]
    ref = [nn.Parameter(w.clone()) for w in start]
    opt = build_optimizer(ours, recipe)
    loop = type(opt)(ref, lr=0.05, weight_decay=0.01, foreach=False, **recipe.optimizer_kwargs)
    assert opt.param_groups[0]["fused"] is True and not loop.param_groups[0]["fused"]
    for g in grads:
        for p, q, gi in zip(ours, ref, g):
            p.grad, q.grad = gi.clone(), gi.clone()
        opt.step()
        loop.step()
    for p, q in zip(ours, ref):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
    assert not torch.equal(ours[0], start[0])
    explicit = build_optimizer([nn.Parameter(torch.zeros(2))], load_recipe(
        "baseline", "synthetic", optimizer=name, optimizer_kwargs={"foreach": True}))
    assert not explicit.param_groups[0]["fused"]


def _train_linear(sizes_per_update, accumulate, sam=False, grad_clip=None, ema=None, lr=0.3):
    """Weights after updates whose micro-batch sizes are ``sizes_per_update`` (list of lists)."""
    from ferlib.optim import SAM

    model = _Linear()
    x, y = _data(sum(map(sum, sizes_per_update)))
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=lr) if sam else torch.optim.SGD(model.parameters(), lr=lr)
    avg = None
    if ema is not None:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        avg = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(ema), use_buffers=True)
    micro = max(max(s) for s in sizes_per_update)
    st = Stepper(model, _ce, opt, list(model.parameters()), [], torch.device("cpu"), "fp32", accumulate, micro,
                 grad_clip, avg, model)
    i, history = 0, []
    for group in sizes_per_update:
        for j, n in enumerate(group):
            _, _, updated = st.micro(x[i:i + n], y[i:i + n], boundary=j == len(group) - 1)
            assert updated == (j == len(group) - 1)
            i += n
        history.append(model.fc.weight.detach().clone())
    return model, history, avg


def test_accumulation_gives_the_big_batch_update():
    big, _, _ = _train_linear([[8], [8], [6]], accumulate=1)
    acc, _, _ = _train_linear([[4, 4], [4, 4], [4, 2]], accumulate=2)  # last group short: 6 images
    torch.testing.assert_close(acc.fc.weight, big.fc.weight, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(acc.fc.bias, big.fc.bias, rtol=1e-5, atol=1e-6)
    one, _, _ = _train_linear([[4], [4], [4], [4], [4], [2]], accumulate=1)
    assert not torch.allclose(one.fc.weight, big.fc.weight)  # updating per micro-batch is different


def test_sam_with_accumulation_is_sam_on_the_big_batch():
    big, _, _ = _train_linear([[8], [8]], accumulate=1, sam=True)
    acc, _, _ = _train_linear([[4, 4], [4, 4]], accumulate=2, sam=True)
    plain, _, _ = _train_linear([[8], [8]], accumulate=1, sam=False)
    torch.testing.assert_close(acc.fc.weight, big.fc.weight, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(big.fc.weight, plain.fc.weight)


def test_grad_clip_bounds_the_sgd_step():
    before = _Linear().fc.weight.detach().clone()
    clipped, _, _ = _train_linear([[8]], accumulate=1, grad_clip=1e-3, lr=1.0)
    free, _, _ = _train_linear([[8]], accumulate=1, lr=1.0)
    bias0 = _Linear().fc.bias.detach()
    step = torch.cat([(clipped.fc.weight - before).flatten(), (clipped.fc.bias - bias0).flatten()])
    assert float(step.detach().norm()) == pytest.approx(1e-3, rel=1e-4)  # lr 1 × gradient clipped to norm 1e-3
    assert (free.fc.weight - before).norm() > 1e-2


def test_ema_is_updated_once_per_optimizer_step():
    model, hist, avg = _train_linear([[4, 4], [4, 4], [4, 4]], accumulate=2, ema=0.5)
    expected = hist[0]
    for w in hist[1:]:
        expected = 0.5 * expected + 0.5 * w
    torch.testing.assert_close(avg.module.fc.weight, expected, rtol=1e-6, atol=1e-7)


def test_sam_with_fp16_is_refused():
    from ferlib.optim import SAM

    model = _Linear()
    with pytest.raises(ValueError, match="SAM with fp16"):
        Stepper(model, _ce, SAM(model.parameters(), torch.optim.SGD, lr=0.1), list(model.parameters()), [],
                torch.device("cpu"), "fp16")


def test_cached_batches_equal_the_per_image_path(syn_root, tmp_path):
    """The uint8-cache loader (one memmap gather per batch) yields the images and targets of the per-image
    loader, in the sampler's order, also through a Subset (the validation hold-out)."""
    from torch.utils.data import Subset

    from ferlib.data import load_dataset
    from ferlib.engine import EpochSampler
    from ferlib.engine.loader import CachedBatches, make_loader

    kw = dict(n_train=48, n_test=24, progress=False)
    files = load_dataset("synthetic", syn_root, "train", **kw)
    side = int(files[0][0].shape[-1])  # cache at the native size: no resize, bytes must match
    cached = load_dataset("synthetic", syn_root, "train", cache=tmp_path / "c", cache_size=side, **kw)
    sampler = EpochSampler(len(files), seed=4)
    sampler.set_epoch(1, start=5)
    fast, slow = make_loader(cached, 16, sampler), make_loader(files, 16, sampler)
    assert isinstance(fast.dataset, CachedBatches) and not isinstance(slow.dataset, CachedBatches)
    pairs = list(zip(fast, slow))
    assert len(pairs) == 3 and [len(y) for (_, y), _ in pairs] == [16, 16, 11]
    for (xa, ya), (xb, yb) in pairs:
        assert xa.dtype == torch.uint8 and torch.equal(xa, xb) and torch.equal(ya, yb)
    sub_c, sub_f = Subset(cached, [3, 1, 40]), Subset(files, [3, 1, 40])
    (xa, ya), = make_loader(sub_c, 8)
    (xb, yb), = make_loader(sub_f, 8)
    assert torch.equal(xa, xb) and torch.equal(ya, yb)


def _raf_fixture_run(tmp_path, monkeypatch, **kw):
    from ferlib.testing import FIXTURES_DIR

    monkeypatch.setenv("FERLIB_DATA", str(tmp_path / "data"))
    return train("baseline", "rafdb", tmp_path / kw.pop("name", "r"),
                 DataOptions(FIXTURES_DIR / "rafdb" / "basic", cache=kw.pop("cache", "auto")),
                 epochs=1, batch_size=8, input_size=32, stored_size=32, model_kwargs={"width": 8}, progress=False, **kw)


def test_real_dataset_is_read_from_the_cache_by_default(tmp_path, monkeypatch):
    """docs/design.md §5: training reads the uint8 cache (built on first use under data/cache), not the JPEGs."""
    from ferlib.data.cache import read_index

    run = _raf_fixture_run(tmp_path, monkeypatch)
    caches = sorted((tmp_path / "data" / "cache").iterdir())
    assert [c.name.split("-s")[0] for c in caches] == ["rafdb-test", "rafdb-train"]
    assert all(read_index(c)["size"] == 32 for c in caches)
    cfg = yaml.safe_load((run.run_dir / "config.yaml").read_text())
    assert cfg["data"]["source"]["cache"] == "auto"
    before = {c.name: (c / "images.npy").stat().st_mtime_ns for c in caches}
    _raf_fixture_run(tmp_path, monkeypatch, name="again")                   # reused, not rebuilt
    assert {c.name: (c / "images.npy").stat().st_mtime_ns for c in caches} == before
    _raf_fixture_run(tmp_path, monkeypatch, name="files", cache=False)
    assert len(list((tmp_path / "data" / "cache").iterdir())) == 2


def test_auto_cache_falls_back_to_the_files_when_the_disk_is_full(tmp_path, monkeypatch):
    import collections
    import shutil

    from ferlib.data.cache import CacheSpaceError

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(1 << 30, 1 << 30, 1 << 20))
    with pytest.warns(UserWarning, match=r"needs 0\.1 GiB .* 0\.0 GiB free.*reading the image files instead"):
        run = _raf_fixture_run(tmp_path, monkeypatch)
    assert run.summary["epochs_run"] == 1 and run.summary["steps"] == 3     # 23 readable train images, batch 8
    assert not (tmp_path / "data" / "cache").exists() or not any((tmp_path / "data" / "cache").iterdir())
    with pytest.raises(CacheSpaceError, match="cache=False to read the image files"):
        _raf_fixture_run(tmp_path, monkeypatch, name="forced", cache=True)


@pytest.mark.parametrize("cores, workers", [(1, 0), (2, 0), (4, 3), (16, 8)])
def test_cache_build_uses_the_spare_cores(monkeypatch, cores, workers):
    import os

    from ferlib.engine.training import default_cache_workers

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert default_cache_workers() == workers


def test_recipe_eval_split_picks_the_evaluation_split(tmp_path, monkeypatch):
    """FERMam's FERPlus code evaluates on PublicTest (ferlib "val"), not PrivateTest ("test")."""
    from ferlib.engine.training import eval_split
    from ferlib.testing import FIXTURES_DIR

    assert eval_split(load_recipe("fermam", "ferplus")) == "val"
    assert eval_split(load_recipe("baseline", "ferplus")) == "test"
    assert eval_split(load_recipe("baseline", "affectnet")) == "val"
    monkeypatch.setenv("FERLIB_DATA", str(tmp_path / "data"))
    runs = {}
    for split in ("val", None):
        runs[split] = train("baseline", "ferplus", data=FIXTURES_DIR / "ferplus", run=tmp_path / str(split),
                            epochs=1, batch_size=8, input_size=32, stored_size=32, model_kwargs={"width": 8},
                            progress=False, eval_split=split)
    rows = {s: json.loads((r.run_dir / "metrics.jsonl").read_text().splitlines()[-1]) for s, r in runs.items()}
    assert (rows["val"]["eval_split"], rows[None]["eval_split"]) == ("val", "test")
    expected = json.loads((FIXTURES_DIR / "expected.json").read_text())["ferplus"]["splits"]
    assert rows["val"]["eval_n"] == expected["PublicTest"]["modes"]["majority"]["kept_total"]
    assert rows[None]["eval_n"] == expected["PrivateTest"]["modes"]["majority"]["kept_total"]


def test_selection_starts_at_the_recipes_epoch(syn_root, tmp_path):
    """MMFRM saves its best checkpoint from epoch 6 on (select_from_epoch); a run shorter than that selects
    its last epoch, so best.pt always exists."""
    run = train("baseline", "synthetic", data=syn_root, run=tmp_path / "a", epochs=3, select_from_epoch=3,
                **TINY)
    assert run.summary["selected_epoch"] == 3
    assert load_checkpoint(run.run_dir / "best.pt")["state"]["best_epoch"] == 3
    short = train("baseline", "synthetic", data=syn_root, run=tmp_path / "b", epochs=2, select_from_epoch=6,
                  **TINY)
    assert short.summary["selected_epoch"] == 2
    assert load_checkpoint(short.run_dir / "best.pt")["state"]["best_epoch"] == 2
    assert load_recipe("mmfrm", "rafdb").select_from_epoch == 6


def test_summary_selects_only_eligible_epochs(tmp_path):
    from ferlib.run_dir import RunDir

    rows = [{"epoch": e, "step": 10 * e, "eval_accuracy": a} for e, a in ((1, 0.9), (2, 0.5), (3, 0.6))]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert RunDir(tmp_path).summarise("accuracy")["selected_epoch"] == 1
    assert RunDir(tmp_path).summarise("accuracy", select_from_epoch=2)["selected_epoch"] == 3
    assert RunDir(tmp_path).summarise("accuracy", select_from_epoch=6)["selected_epoch"] == 3   # run ended before 6
