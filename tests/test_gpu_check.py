"""benchmarks/gpu_check.py cannot rot between GPU loans: its CPU smoke run (--tiny) goes through every step,
it starts without the optional packages, and a small --budget-s skips what does not fit, saying so."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
PAPERS = ("fermam", "mmfrm", "emonet", "grefel", "mfer")
STEPS = ("environment", "throughput", "data_pipeline", "selective_scan", "correctness")


def env_1_thread() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_script(out: Path, *args: str, timeout: int = 900) -> tuple[subprocess.CompletedProcess, dict]:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--tiny", "--out", str(out), *args],
                          cwd=ROOT, env=env_1_thread(), capture_output=True, text=True, timeout=timeout)
    report = json.loads((out / "gpu_check.json").read_text())
    return proc, report


def is_skip(v) -> bool:
    return isinstance(v, str) and v.startswith("skipped:") or isinstance(v, dict) and str(
        v.get("status", "")).startswith("skipped:")


@pytest.mark.slow
def test_tiny_cpu_run_measures_every_step(tmp_path):
    proc, rep = run_script(tmp_path, "--budget-s", "1200")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert rep["meta"]["finished"] and rep["meta"]["failures"] == []
    steps = rep["steps"]
    assert [steps[s]["status"] for s in STEPS] == ["done"] * len(STEPS)
    for s in STEPS:  # one progress line per step at least
        assert f"{s}: starting" in proc.stdout and f"{s}: done" in proc.stdout

    env = steps["environment"]
    assert env["torch"] and env["threads"] == 1 and env["mamba_ssm_selective_scan_imports"] in (True, False)

    papers = steps["throughput"]["papers"]
    assert set(papers) == set(PAPERS)
    for paper, row in papers.items():
        v = row["variants"]
        for k in ("authors_fp32", "engine_fp32", "engine_tf32", "engine_bf16"):
            assert v[k]["img_s"] > 0 and v[k]["peak_memory_mb"] > 0, (paper, k, v[k])
        assert row["ratios"]["engine_fp32_vs_authors_fp32"] > 0 and row["ratios"]["tf32_vs_fp32"] > 0
        if paper == "emonet":  # the one model --tiny compiles (aot_eager)
            assert v["engine_bf16_compile"]["img_s"] > 0 and v["engine_bf16_compile"]["compile_s"] >= 0
        else:
            assert is_skip(v["engine_bf16_compile"])

    dp = steps["data_pipeline"]
    assert dp["a_pil_per_sample_img_s"] > 0 and dp["b_cache_batched_img_s"] > 0

    sc = steps["selective_scan"]
    for be in ("reference", "torch", "torch_compiled"):
        assert sc["backends"][be]["total_ms"] > 0
    assert is_skip(sc["backends"]["mamba_ssm"])  # CUDA only
    assert set(sc["diff_vs_reference"]) == {"torch", "torch_compiled"} and sc["agree"]
    assert all(d["max_rel"] < 1e-4 for d in sc["diff_vs_reference"].values())

    for paper, row in steps["correctness"]["papers"].items():
        assert row["ok"] is True, (paper, row)
        for run in ("train_fp32", "train_bf16"):
            assert row[run]["finite_losses"] and row[run]["checkpoint_written"], (paper, run, row[run])
        assert row["resume"]["equal"] and row["resume"]["max_abs_weight_diff"] == 0.0
        assert row["resume"]["nondeterministic_ops"] == [] and row["resume"]["tolerance"] == 0.0  # exact on CPU
        assert row["evaluate_device_vs_cpu"]["equal_within_fp32_tolerance"]
    assert set(steps["correctness"]["papers"]) == set(PAPERS)

    md = (tmp_path / "gpu_check.md").read_text()
    assert "## Training throughput" in md and "## Correctness on the device" in md and "| fermam |" in md
    assert "epoch 1/1" in (tmp_path / "gpu_check_train.log").read_text()


def test_small_budget_skips_steps_and_says_so(tmp_path):
    proc, rep = run_script(tmp_path, "--budget-s", "0.5", "--papers", "emonet", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    steps = rep["steps"]
    assert steps["environment"]["status"] == "done"
    for s in STEPS[1:]:
        assert steps[s]["status"].startswith("skipped: budget"), (s, steps[s])
        assert f"{s}: skipped: budget" in proc.stdout
    assert "skipped: budget" in (tmp_path / "gpu_check.md").read_text()


def test_resume_tolerance_only_where_the_run_says_it_is_not_deterministic(tmp_path):
    sys.path.insert(0, str(SCRIPT.parent))
    import gpu_check
    import yaml

    cases = {"exact": {"deterministic": True, "nondeterministic_ops": []},
             "atomic": {"deterministic": True, "nondeterministic_ops": ["AdaptiveAvgPool2d backward (CUDA atomic adds)"]},
             "loose": {"deterministic": False, "nondeterministic_ops": []}}
    for name, resolved in cases.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.yaml").write_text(yaml.safe_dump({"resolved": resolved}))
    assert gpu_check.run_nondeterminism(tmp_path / "exact") == []
    assert gpu_check.run_nondeterminism(tmp_path / "atomic") == ["AdaptiveAvgPool2d backward (CUDA atomic adds)"]
    assert gpu_check.run_nondeterminism(tmp_path / "loose") == ["the run was not deterministic (--deterministic off)"]


def test_the_throughput_step_measures_the_cards_batch():
    sys.path.insert(0, str(SCRIPT.parent))
    import gpu_check

    assert gpu_check.Plan().max_batch is None  # GPU default: FERMam at 300, no cap


def test_budget_shares_and_estimates():
    sys.path.insert(0, str(SCRIPT.parent))
    import gpu_check

    b = gpu_check.Budget(100.0)
    b.start_step("throughput")  # 0.38 of what is left over the weights of the steps still to come
    assert 35 < b.step_left() <= 100 * 0.38 / 0.98 + 0.1
    assert b.skip(1.0) is None
    reason = b.skip(1000.0)
    assert reason.startswith("skipped: budget (needs ~1000 s") and "left for this step" in reason
    b.start_step("correctness")  # the last step gets all that is left
    assert b.step_left() > 95


BLOCKED = ("papermill", "facenet_pytorch", "jupytext", "ipywidgets", "seaborn", "cv2")
BLOCKING_PROBE = """
import importlib.abc, json, sys
BLOCKED = set({blocked!r})

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{{name}} is blocked by the test")
        return None

sys.meta_path.insert(0, Refuse())
import ferlib.engine, ferlib.models, ferlib.data.synthetic_faces, ferlib.data.transforms, ferlib.data.cache, ferlib.ops
sys.path.insert(0, {bench!r})
import gpu_check
rc = gpu_check.main(["--device", "cpu", "--tiny", "--budget-s", "0", "--out", {out!r} + "/a"])
# with time to spare, the data steps say that drawing the synthetic faces needs OpenCV
rc_data = gpu_check.main(["--device", "cpu", "--tiny", "--papers", "emonet", "--out", {out!r} + "/b"])
print(json.dumps({{"rc": rc, "rc_data": rc_data, "loaded": sorted(m for m in BLOCKED if m in sys.modules)}}))
"""


def test_engine_and_script_import_without_optional_packages(tmp_path):
    """A bare CUDA machine has torch and friends, not papermill, facenet-pytorch, jupytext, ipywidgets,
    seaborn or OpenCV: importing the engine and starting the script must not need them."""
    code = BLOCKING_PROBE.format(blocked=BLOCKED, bench=str(SCRIPT.parent), out=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env_1_thread(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got == {"rc": 0, "rc_data": 1, "loaded": []}
    env = json.loads((tmp_path / "a" / "gpu_check.json").read_text())["steps"]["environment"]
    assert env["status"] == "done" and env["cv2"].startswith("missing")
    steps = json.loads((tmp_path / "b" / "gpu_check.json").read_text())["steps"]
    assert steps["environment"]["status"] == "done"
    assert all("OpenCV" in steps[s]["status"] for s in STEPS[1:]), steps
