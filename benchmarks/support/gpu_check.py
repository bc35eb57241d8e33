"""``make gpu-check``: the one prepared run for a lent GPU, < 8 minutes, no network, no install step.

    PYTHONPATH=. python benchmarks/support/gpu_check.py --out results/bench/      # what make gpu-check runs

One after the other, each in its own process with a share of ``--budget-s`` (default 420) as its time limit:

1. the environment probe (``benchmarks/support/environment.py``);
2. ``pytest -m gpu tests/engine/test_cuda.py tests/models/test_selective_scan.py``: bf16, fp16, resume and GPU-vs-CPU evaluation
   per paper, mamba_ssm's kernel against ferlib's scan;
3. ``benchmarks/paper_throughput.py`` (told the seconds it has: it skips what does not fit, saying so);
4. ``benchmarks/data_pipeline.py --loader`` (the loader feeding the device);
5. ``benchmarks/scan_backends.py``.

A step's share is its weight over the weights of the steps still to come, of the time left, so a quick step
leaves its time to the next. Everything lands in ONE markdown table, ``gpu_check.md`` in ``--out`` (rewritten
after every step, so a run cut off keeps what it measured), with ``gpu_check.json`` and each step's own files and
``<step>.log``. Exit status 1 when a test failed or a step failed or ran out of time.

Without CUDA it runs the CPU smoke: the benchmarks with ``--tiny --device cpu`` and the tests on the CPU at toy
sizes (``FERLIB_CUDA_TESTS_ON_CPU=1``), so that the whole command is tested here; its numbers measure no GPU.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"
#: (step, weight): a step may use weight / (sum of the weights still to come) of the time left when it starts.
STEPS = (("tests", 0.40), ("paper_throughput", 0.40), ("data_pipeline", 0.08), ("scan_backends", 0.12))
TESTS = ("tests/engine/test_cuda.py", "tests/models/test_selective_scan.py")
#: Seconds a step needs at the least (start-up included); with less left it is skipped, saying so.
MIN_S = {"tests": 20.0, "paper_throughput": 30.0, "data_pipeline": 10.0, "scan_backends": 10.0}


def step_command(name: str, a, out: Path, seconds: float) -> tuple[list[str], dict]:
    """(argv, extra environment) of one step on ``a.device``."""
    py, dev = sys.executable, ["--device", a.device]
    tiny = ["--tiny"] if a.tiny else []
    if name == "tests":
        cmd = [py, "-m", "pytest", "-m", "gpu", *TESTS, "-v", "-p", "no:cacheprovider", f"--junitxml={out / 'tests.xml'}"]
        if a.papers:
            cmd += ["-k", " or ".join(a.papers.split(",")) + " or kernel"]
        return cmd, {"FERLIB_CUDA_TESTS_ON_CPU": "1"} if a.device == "cpu" else {}
    if name == "paper_throughput":
        cmd = [py, str(BENCH / "paper_throughput.py"), *dev, *tiny, "--out", str(out), "--budget-s", f"{0.9 * seconds:.0f}"]
        cmd += (["--papers", a.papers] if a.papers else []) + (["--max-batch", str(a.max_batch)] if a.max_batch else [])
        return cmd, {}
    if name == "data_pipeline":
        size = ["--images", "48", "--size", "32", "--workers", "1", "--batch-size", "8"] if a.tiny else ["--images", "1024"]
        return [py, str(BENCH / "data_pipeline.py"), "--loader", *dev, *size, "--root", str(a.work / "loader"),
                "--out", str(out / "data_pipeline_loader.json")], {}
    return [py, str(BENCH / "scan_backends.py"), *dev, *(tiny or ["--iters", "5"]), "--out", str(out)], {}


def test_rows(out: Path, log_text: str) -> list[list[str]]:
    """One row per test from pytest's JUnit XML; from the ``-v`` log when the run was cut off before writing it."""
    xml = out / "tests.xml"
    if not xml.is_file():
        return [[line.split(" ")[0].split("::", 1)[-1], line.split(" ")[1]] for line in log_text.splitlines()
                if line.startswith("tests/") and " " in line and line.split(" ")[1] in ("PASSED", "FAILED", "ERROR")]
    rows = []
    for case in ET.parse(xml).getroot().iter("testcase"):
        outcome = next(iter(case), None)
        if outcome is None:
            status = f"passed ({float(case.get('time', 0)):.1f} s)"
        else:
            msg = (outcome.get("message") or "").splitlines()[0][:300] if outcome.get("message") else ""
            status = {"skipped": "skipped", "failure": "FAILED", "error": "ERROR"}.get(outcome.tag, outcome.tag) + f": {msg}"
        rows.append([case.get("name"), status])
    return rows


def step_rows(name: str, out: Path, log_text: str) -> list[list[str]]:
    if name == "tests":
        return test_rows(out, log_text)
    path = out / ("data_pipeline_loader.json" if name == "data_pipeline" else f"{name}.json")
    return json.loads(path.read_text()).get("summary", []) if path.is_file() else []


def markdown(report: dict) -> str:
    m = report["meta"]
    lines = ["# ferlib GPU check", "", f"`{m['command']}` on {m['device']}{' (CPU smoke: --tiny)' if m['tiny'] else ''}, "
             f"{m['elapsed_s']} s of a {m['budget_s']} s budget{'' if m['finished'] else ' (running or cut off)'}.", "",
             "| step | item | result |", "|---|---|---|"]
    for step, r in report["steps"].items():
        lines.append(f"| {step} | status | {r['status']}" + (f" ({r['seconds']} s)" if "seconds" in r else "") + " |")
        lines += [f"| {step} | {item} | {str(text).replace('|', '/')} |" for item, text in r.get("rows", [])]
    return "\n".join(lines) + "\n"


def save(report: dict, out: Path) -> None:
    for name, text in (("gpu_check.json", json.dumps(report, indent=1)), ("gpu_check.md", markdown(report))):
        (out / f".{name}.tmp").write_text(text)
        os.replace(out / f".{name}.tmp", out / name)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("results/bench"), help="folder for gpu_check.md / .json")
    p.add_argument("--device", default="auto", help="auto (CUDA when present, else the CPU smoke), cuda, cuda:N or cpu")
    p.add_argument("--tiny", action="store_true", help="toy sizes (always on for --device cpu)")
    p.add_argument("--budget-s", type=float, default=420.0, help="seconds for the whole run (default 420)")
    p.add_argument("--papers", default=None, help="comma-separated subset of the papers (default: all)")
    p.add_argument("--max-batch", type=int, default=None, help="cap on the cards' batch sizes in paper_throughput")
    return p.parse_args(argv)


def main(argv=None) -> int:
    a = parse_args(argv)
    import torch

    if a.device == "auto":
        a.device = "cuda" if torch.cuda.is_available() else "cpu"
    if a.device == "cpu" and not a.tiny:
        print("gpu_check: no CUDA device: running the CPU smoke version (--tiny); its numbers measure no GPU", flush=True)
        a.tiny = True
    out = a.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    a.work = Path(tempfile.mkdtemp(prefix="ferlib_gpu_check_"))  # the loader step's synthetic files
    t0 = time.perf_counter()
    sys.path.insert(0, str(BENCH))
    from support.environment import probe, summary

    env = probe(torch.device(a.device))
    (out / "environment.json").write_text(json.dumps(env, indent=1, default=str))
    report = {"meta": {"command": " ".join(["gpu_check.py"] + (sys.argv[1:] if argv is None else list(argv))),
                       "device": env.get("gpu") or a.device, "tiny": a.tiny, "budget_s": a.budget_s, "finished": False,
                       "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "elapsed_s": 0.0},
              "steps": {"environment": {"status": "done", "rows": summary(env)},
                        **{name: {"status": "pending"} for name, _ in STEPS}}}
    failed = []
    for i, (name, weight) in enumerate(STEPS):
        left = a.budget_s - (time.perf_counter() - t0)
        seconds = left * weight / sum(w for _, w in STEPS[i:])
        st = report["steps"][name]
        if seconds < MIN_S[name]:
            st["status"] = f"skipped: budget (needs ~{MIN_S[name]:.0f} s, {max(0.0, seconds):.0f} s left for this step)"
        else:
            cmd, extra = step_command(name, a, out, seconds)
            print(f"[gpu_check {time.perf_counter() - t0:6.1f}s] {name}: {' '.join(cmd[1:])} ({seconds:.0f} s)", flush=True)
            s0 = time.perf_counter()
            with open(out / f"{name}.log", "w") as log:
                try:
                    rc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, **extra}, stdout=log, stderr=subprocess.STDOUT,
                                        timeout=seconds).returncode
                    st["status"] = "done" if rc == 0 else f"failed (exit status {rc}; see {name}.log)"
                except subprocess.TimeoutExpired:
                    st["status"] = f"cut off after its {seconds:.0f} s (see {name}.log)"
            st["seconds"] = round(time.perf_counter() - s0, 1)
            st["rows"] = step_rows(name, out, (out / f"{name}.log").read_text(errors="replace"))
            if st["status"] != "done":
                failed.append(f"{name}: {st['status']}")
        print(f"[gpu_check {time.perf_counter() - t0:6.1f}s] {name}: {st['status']}", flush=True)
        report["meta"]["elapsed_s"] = round(time.perf_counter() - t0, 1)
        save(report, out)
    report["meta"].update(finished=True, failures=failed)
    save(report, out)
    shutil.rmtree(a.work, ignore_errors=True)
    print(f"wrote {out / 'gpu_check.md'}; {len(failed)} failure(s)" + (": " + "; ".join(failed) if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
