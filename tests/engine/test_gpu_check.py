"""``make gpu-check`` cannot rot between GPU loans: its CPU smoke runs the CUDA tests on the CPU and every benchmark
at toy sizes into ONE markdown table, it starts without the optional packages, a small ``--budget-s`` skips what does
not fit, saying so, and ``tests/engine/test_cuda.py`` skips without CUDA, saying why. ``make bench`` finds benchmarks only."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

# Spawns processes or trains end to end: the slow tier, so that make test-fast stays quick.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DRIVER = ROOT / "benchmarks" / "support" / "gpu_check.py"
STEPS = ("environment", "tests", "paper_throughput", "data_pipeline", "scan_backends")


def env_1_thread(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "FERLIB_CUDA_TESTS_ON_CPU"}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""), **extra)
    return env


def run_driver(out: Path, *args: str, timeout: int = 900, env: dict | None = None):
    proc = subprocess.run([sys.executable, str(DRIVER), "--device", "cpu", "--out", str(out), *args], cwd=ROOT,
                          env=env or env_1_thread(), capture_output=True, text=True, timeout=timeout)
    assert (out / "gpu_check.json").is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, json.loads((out / "gpu_check.json").read_text())


def table(md: str) -> dict[tuple[str, str], str]:
    """``(step, item) → result`` of the one table in ``md``; fails unless the table is one block of rows."""
    lines = md.splitlines()
    rows = [i for i, line in enumerate(lines) if line.startswith("|")]
    assert rows == list(range(rows[0], rows[-1] + 1)), "gpu_check.md holds more than one table"
    assert lines[rows[0]] == "| step | item | result |" and md.count("| step | item | result |") == 1
    return {tuple(c.strip() for c in lines[i].strip("|").split("|")[:2]): lines[i].strip("|").split("|", 2)[2].strip()
            for i in rows[2:]}


@pytest.mark.slow
def test_cpu_smoke_runs_the_tests_and_every_benchmark_into_one_table(tmp_path):
    proc, rep = run_driver(tmp_path, "--papers", "emonet", "--budget-s", "1200")
    assert proc.returncode == 0, proc.stdout[-3000:] + (tmp_path / "tests.log").read_text()[-3000:]
    assert "CPU smoke version (--tiny)" in proc.stdout
    assert rep["meta"]["finished"] and rep["meta"]["tiny"] and rep["meta"]["failures"] == []
    assert [rep["steps"][s]["status"] for s in STEPS] == ["done"] * len(STEPS)
    t = table((tmp_path / "gpu_check.md").read_text())
    assert t[("environment", "device")].startswith("cpu (no GPU")
    # the CUDA tests, run on the CPU at toy sizes: trained, resumed exactly, second precision; no device to compare
    for name in ("test_deterministic_run_trains", "test_resume_equals_the_uninterrupted_run",
                 "test_second_precision_trains"):
        assert t[("tests", f"{name}[emonet]")].startswith("passed ("), (name, t)
    assert t[("tests", "test_evaluate_on_the_device_gives_the_cpus_logits[emonet]")] == \
        "skipped: a CPU run has no device to compare with the CPU"
    assert t[("tests", "test_cuda_kernel_matches_torch")].startswith("skipped: no CUDA device")
    # paper throughput: every variant measured (emonet is the one model --tiny compiles), ratios in the table
    tp = json.loads((tmp_path / "paper_throughput.json").read_text())["papers"]["emonet"]
    for k in ("authors_fp32", "engine_fp32", "engine_tf32", "engine_bf16", "engine_bf16_compile"):
        assert tp["variants"][k]["img_s"] > 0 and tp["variants"][k]["peak_memory_mb"] > 0, (k, tp["variants"][k])
    ratio = tp["variants"]["engine_fp32"]["img_s"] / tp["variants"]["authors_fp32"]["img_s"]
    assert tp["ratios"]["engine_fp32_vs_authors_fp32"] == pytest.approx(ratio, abs=1e-3)
    assert t[("paper_throughput", "emonet engine_fp32_vs_authors_fp32 (target >= 1.5)")] == \
        f"{tp['ratios']['engine_fp32_vs_authors_fp32']} (CPU run: not a measurement of the target)"
    dp = json.loads((tmp_path / "data_pipeline_loader.json").read_text())
    assert dp["images"] == 48 and dp["a_pil_per_sample_img_s"] > 0 and dp["b_cache_batched_img_s"] > 0
    sc = json.loads((tmp_path / "scan_backends.json").read_text())["ss2d"]
    assert set(sc["diff_vs_reference"]) == {"torch", "torch_compiled"} and sc["agree"]
    assert all(d["max_rel"] < 1e-4 for d in sc["diff_vs_reference"].values())
    assert sc["backends"]["mamba_ssm"] == "skipped: mamba_ssm's kernel runs on CUDA only"
    assert t[("scan_backends", "backends agree with the reference")] == "True"


def test_small_budget_skips_steps_and_says_so(tmp_path):
    proc, rep = run_driver(tmp_path, "--budget-s", "0.5", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert rep["steps"]["environment"]["status"] == "done"
    t = table((tmp_path / "gpu_check.md").read_text())
    for s in STEPS[1:]:
        assert re.fullmatch(r"skipped: budget \(needs ~\d+ s, 0 s left for this step\)", rep["steps"][s]["status"]), s
        assert t[(s, "status")] == rep["steps"][s]["status"]
        assert f"{s}: skipped: budget" in proc.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA machine runs the tests instead of skipping them")
def test_cuda_tests_skip_without_cuda_and_say_why():
    proc = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "tests/engine/test_cuda.py", "-q", "-rs",
                           "-p", "no:cacheprovider"], cwd=ROOT, env=env_1_thread(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert re.search(r"\b20 skipped, 1 deselected\b", proc.stdout), proc.stdout[-2000:]
    reason = "no CUDA device: the CUDA correctness tests need one (FERLIB_CUDA_TESTS_ON_CPU=1 runs them on the CPU)"
    assert proc.stdout.count(reason) == 4  # one summary line per test function (5 papers each)


def test_make_runs_the_driver_and_the_benchmarks_only():
    dry = subprocess.run(["make", "-n", "gpu-check", "bench", "STAMP=/dev/null"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert "benchmarks/support/gpu_check.py --out results/bench/" in dry.stdout, dry.stdout + dry.stderr
    scripts = sorted(p.name for p in (ROOT / "benchmarks").glob("*.py"))
    assert scripts == ["data_pipeline.py", "paper_throughput.py", "precision_ablation.py", "scan_backends.py",
                       "train_throughput.py"]
    for name in scripts:  # each one question, on the device asked for
        assert 'add_argument("--device"' in (ROOT / "benchmarks" / name).read_text(), name


BLOCKED = ("papermill", "facenet_pytorch", "jupytext", "ipywidgets", "seaborn", "cv2")
#: sitecustomize: the driver's steps are processes of their own, and each must refuse the blocked packages too.
SITECUSTOMIZE = """
import importlib.abc, sys
BLOCKED = set({blocked!r})

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{{name}} is blocked by the test")
        return None

sys.meta_path.insert(0, Refuse())
"""
PROBE = """
import json, sys
import ferlib.engine, ferlib.models, ferlib.data.synthetic_faces, ferlib.data.transforms, ferlib.data.cache, ferlib.ops
sys.path.insert(0, {bench!r})
from support import gpu_check
rc = gpu_check.main(["--device", "cpu", "--budget-s", "0", "--out", {out!r}])
print(json.dumps({{"rc": rc, "loaded": sorted(m for m in {blocked!r} if m in sys.modules)}}))
"""


def test_engine_and_driver_start_without_optional_packages(tmp_path):
    """A bare CUDA machine has torch and friends, not papermill, facenet-pytorch, jupytext, ipywidgets, seaborn or
    OpenCV: importing the engine and starting make gpu-check must not need them (the probe says cv2 is missing)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE.format(blocked=BLOCKED))
    env = env_1_thread()
    env["PYTHONPATH"] = str(site) + os.pathsep + env["PYTHONPATH"]
    code = PROBE.format(bench=str(ROOT / "benchmarks"), out=str(tmp_path / "out"), blocked=BLOCKED)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"rc": 0, "loaded": []}
    env_json = json.loads((tmp_path / "out" / "environment.json").read_text())
    assert env_json["optional"]["cv2"] == "missing (ImportError: cv2 is blocked by the test)"
