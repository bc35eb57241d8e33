"""One writer per run directory (issue 26): real processes racing for one run directory, a holder killed with
SIGKILL, two processes sharing an ablation grid, and readers of a run that is still training.

Racing processes import torch and ferlib first, say "ready", then wait for a file to appear: they start their
command within milliseconds of each other, while the winner's run lasts seconds."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ferlib.run_dir import LOCK, RunDir, RunLockedError

# Spawns processes or trains end to end: the slow tier, so that make test-fast stays quick.
pytestmark = pytest.mark.slow

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
TINY_DATA = {"n_train": 32, "n_test": 16, "progress": False}
TINY_SET = ["--set", "input_size=32", "--set", "model_kwargs.width=8",
            "--set", "dataset_kwargs={n_train: 32, n_test: 16, progress: false}"]

#: argv: go-file, then the arguments of ``python -m ferlib``
LAUNCH_CLI = """
import sys, time
from pathlib import Path
import ferlib.engine, ferlib.cli.train
from ferlib.cli import main
print("ready", flush=True)
go = Path(sys.argv[1])
while not go.exists():
    time.sleep(0.002)
sys.exit(main(sys.argv[2:]))
"""

#: argv: go-file, then a JSON dict of run_grid's arguments; prints the runs table's (variant, status) as JSON
LAUNCH_GRID = """
import json, sys, time
from pathlib import Path
import ferlib.engine
from ferlib.ablations import run_grid
print("ready", flush=True)
go = Path(sys.argv[1])
while not go.exists():
    time.sleep(0.002)
res = run_grid(**json.loads(sys.argv[2]))
print(json.dumps(res.runs[["variant", "status"]].to_dict("records")))
"""

#: holds a run directory's lock until killed (no torch: starts fast)
HOLD = """
import sys, time
from ferlib.run_dir import RunDir
RunDir(sys.argv[1]).lock().acquire()
print("ready", flush=True)
time.sleep(600)
"""


def _synthetic(data: Path) -> Path:
    """The tiny synthetic set, generated once before the processes race for a run directory."""
    from ferlib.data import load_dataset

    for split in ("train", "test"):
        load_dataset("synthetic", data, split, **TINY_DATA)
    return data


def _train_argv(run_dir, data, *extra) -> list[str]:
    return ["train", "--model", "baseline", "--dataset", "synthetic", "--data-root", str(data), "--run-dir",
            str(run_dir), "--batch-size", "8", "--device", "cpu", "--no-progress", "--deterministic", *TINY_SET, *extra]


def _start_together(tmp_path, script: str, *argvs) -> list[subprocess.Popen]:
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", script, str(go), *argv], env=ENV, cwd=tmp_path, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for argv in argvs]
    for p in procs:
        assert p.stdout.readline().strip() == "ready", p.communicate()
    go.touch()
    return procs


def _finish(procs) -> list[tuple[int, str, str]]:
    outputs = [p.communicate(timeout=300) for p in procs]
    return [(p.returncode, *out) for p, out in zip(procs, outputs)]


def _one_run(run_dir: Path, seed: int, epochs: int) -> list[dict]:
    """The directory's files all belong to one run of ``seed``: config.yaml, every metrics.jsonl line, best.pt and
    summary.json agree; no lock is left. Returns the metrics rows."""
    from ferlib.engine.checkpoint import load_checkpoint

    rd = RunDir(run_dir)
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["fit"]["seed"] == seed
    rows = rd.metrics()
    assert [r["epoch"] for r in rows] == list(range(1, epochs + 1))
    summary = rd.summary()
    assert summary["epochs_run"] == epochs and not summary.get("stopped")
    assert summary["last"]["accuracy"] == rows[-1]["eval_accuracy"]
    best = load_checkpoint(run_dir / "best.pt")
    sel = summary["selected_epoch"]
    assert best["state"]["epoch"] == sel
    assert best["metrics"]["accuracy"] == summary["selected"]["accuracy"] == rows[sel - 1]["eval_accuracy"]
    assert load_checkpoint(run_dir / "last.pt")["state"]["epoch"] == epochs
    assert not (run_dir / LOCK).exists()
    return rows


def _without_time(rows):
    return [{k: v for k, v in r.items() if k != "time_s"} for r in rows]


def _refusal(err: str, winner: subprocess.Popen) -> None:
    """One ``error:`` line naming the winner: PID, host and start time."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "is being written by another run" in lines[0]
    assert f"(PID {winner.pid} on {socket.gethostname()}, started 20" in lines[0]


# ---------------------------------------------------------------------------------------------
# The lock itself
# ---------------------------------------------------------------------------------------------

def test_second_writer_refused_naming_holder_and_killed_holder_taken_over(tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], env=ENV, text=True, stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == "ready"
        rd = RunDir(run)
        rd.write_summary({"epochs_run": 1, "steps": 4})  # as a resumed run leaves it: a previous summary.json
        with pytest.raises(RunLockedError) as info:
            rd.lock().acquire()
        started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime((run / LOCK).stat().st_mtime))
        assert str(info.value) == (
            f"{run} is being written by another run (PID {holder.pid} on {socket.gethostname()}, started {started}); "
            f"nothing was changed. One writer per run directory: wait for that run to finish, or choose another run "
            f"directory (run_name / --run-dir).")
        assert info.value.holder.pid == holder.pid and info.value.holder.alive
        assert rd.in_progress() and not rd.is_complete(1)  # a live writer: never taken for finished
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (run / LOCK).exists() and not rd.in_progress() and rd.is_complete(1)  # stale: the writer is gone
    with pytest.warns(UserWarning, match=f"took over the lock left by PID {holder.pid} on "):
        with rd.lock():
            assert rd.lock_holder().is_this_process and not rd.in_progress()
            with rd.lock():  # re-entrant within the process (train() inside an ablation entry, fit() inside train())
                pass
            assert (run / LOCK).exists()
    assert not (run / LOCK).exists()


def test_lock_of_another_host_is_reported_and_broken_only_when_asked(tmp_path):
    rd = RunDir(tmp_path / "run")
    rd.path.mkdir()
    (rd.path / LOCK).write_text("4242\ngpu-node-17\n")  # filelock's marker: PID, host
    with pytest.raises(RunLockedError, match=r"\(PID 4242 on gpu-node-17, started .*It runs on another host, which "
                                             r"this one cannot check: if it is gone, pass --break-lock"):
        rd.lock().acquire()
    assert rd.in_progress() and rd.lock_holder().alive is None
    with pytest.warns(UserWarning, match="breaking the lock of PID 4242 on gpu-node-17"):
        with rd.lock(break_lock=True):
            assert rd.lock_holder().is_this_process
    assert not (rd.path / LOCK).exists()


# ---------------------------------------------------------------------------------------------
# Two trainings into one run directory
# ---------------------------------------------------------------------------------------------

def test_two_fresh_runs_into_one_directory_one_trains_other_exits_2(tmp_path):
    from ferlib.engine import train

    data, run = _synthetic(tmp_path / "data"), tmp_path / "same_run"
    procs = _start_together(tmp_path, LAUNCH_CLI, _train_argv(run, data, "--epochs", "2", "--seed", "1"),
                            _train_argv(run, data, "--epochs", "2", "--seed", "2"))
    results = _finish(procs)
    assert sorted(rc for rc, _, _ in results) == [0, 2], "\n".join(f"{rc}\n{out}\n{err}" for rc, out, err in results)
    win = 0 if results[0][0] == 0 else 1
    _refusal(results[1 - win][2], procs[win])
    rows = _one_run(run, seed=1 + win, epochs=2)
    # the same run as the winner's alone: every metrics line is its seed's
    alone = train("baseline", "synthetic", data=data, run=tmp_path / "alone", epochs=2, batch_size=8,
                  seed=1 + win, device="cpu", input_size=32, model_kwargs={"width": 8}, dataset_kwargs=TINY_DATA,
                  fit_options={"deterministic": True}, threads=1, progress=False)
    assert _without_time(rows) == _without_time(RunDir(alone.run_dir).metrics())


def test_resume_racing_a_fresh_run(tmp_path):
    from ferlib.engine import train

    data, run = _synthetic(tmp_path / "data"), tmp_path / "run"
    stopped = train("baseline", "synthetic", data=data, run=run, epochs=2, batch_size=8, seed=1, device="cpu",
                    input_size=32, model_kwargs={"width": 8}, dataset_kwargs=TINY_DATA, threads=1, progress=False,
                    fit_options={"deterministic": True, "stop_after_steps": 5})
    assert stopped.summary["stopped"]
    procs = _start_together(tmp_path, LAUNCH_CLI, _train_argv(run, data, "--epochs", "2", "--seed", "1", "--resume"),
                            _train_argv(run, data, "--epochs", "2", "--seed", "2", "--overwrite"))
    results = _finish(procs)
    assert sorted(rc for rc, _, _ in results) == [0, 2], "\n".join(f"{rc}\n{out}\n{err}" for rc, out, err in results)
    win = 0 if results[0][0] == 0 else 1
    _refusal(results[1 - win][2], procs[win])
    if win == 0:
        assert "resumed" in results[0][1]
    _one_run(run, seed=1 + win, epochs=2)


# ---------------------------------------------------------------------------------------------
# Readers of a run that is training; a holder killed with SIGKILL
# ---------------------------------------------------------------------------------------------

def test_read_while_training_then_sigkill_and_next_run_takes_over(tmp_path, capsys):
    from ferlib import tables
    from ferlib.engine import load_run
    from ferlib.engine.checkpoint import load_checkpoint
    from ferlib.evaluation import evaluate_run

    data, run = _synthetic(tmp_path / "data"), tmp_path / "runs" / "live"
    proc = subprocess.Popen([sys.executable, "-m", "ferlib", *_train_argv(run, data, "--epochs", "1000",
                                                                          "--checkpoint-every-steps", "1")],
                            env=ENV, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rd = RunDir(run)
    try:
        while proc.poll() is None and not (rd.metrics() and (run / "best.pt").exists()):
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be read"
        assert rd.in_progress() and not rd.is_complete(1)
        table = tables.runs_table(tmp_path / "runs")
        assert table[["run", "status", "complete"]].values.tolist() == [["live", "in progress", False]]
        res = evaluate_run(run, device="cpu", progress=False)  # best.pt, while the run replaces it
        assert f"PID {proc.pid} on {socket.gethostname()}" in res["in_progress"] and res["n"] == 16
        assert "is still in progress" in capsys.readouterr().out
        assert not list(run.glob("eval_*")) and not list(run.glob("predictions_*"))  # a reader writes nothing there
        for _ in range(5):
            load_run(run, "last")  # last.pt is replaced after every step: never read half-written
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert (run / LOCK).exists() and not rd.in_progress()
    epochs = load_checkpoint(run / "last.pt")["state"]["epoch"] + 1  # finish the epoch it was killed in
    resume = _train_argv(run, data, "--epochs", str(epochs), "--resume")
    done = subprocess.run([sys.executable, "-m", "ferlib", *resume], env=ENV, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"took over the lock left by PID {proc.pid} on {socket.gethostname()}" in done.stderr
    assert RunDir(run).summary()["epochs_run"] == epochs and not (run / LOCK).exists()


# ---------------------------------------------------------------------------------------------
# An ablation grid from two processes
# ---------------------------------------------------------------------------------------------

def test_grid_from_two_processes_runs_each_variant_once(tmp_path):
    data = _synthetic(tmp_path / "data")
    tiny = {"input_size": 32, "model_kwargs": {"width": 8}, "batch_size": 8}
    grid = {"paper": "baseline", "name": "lr",
            "variants": {f"lr={lr}": {"lr": lr, **tiny} for lr in (0.01, 0.02, 0.03)}}
    kw = dict(dataset="synthetic", grid=grid, epochs=1, seeds=[0], data_root=str(data), runs_dir=str(tmp_path / "runs"),
              dataset_kwargs=TINY_DATA, plot=False)
    procs = _start_together(tmp_path, LAUNCH_GRID, *([json.dumps({**kw, "tables_dir": str(tmp_path / f"t{i}")})]
                                                     for i in range(2)))
    results = _finish(procs)
    assert [rc for rc, _, _ in results] == [0, 0], results
    tables = [json.loads(out.strip().splitlines()[-1]) for _, out, _ in results]
    for variant in grid["variants"]:
        statuses = sorted(r["status"] for t in tables for r in t if r["variant"] == variant)
        assert statuses == ["ran", "skipped"], (variant, tables)  # trained by one process, found complete by the other
        run = tmp_path / "runs" / "ablations" / "synthetic" / "lr" / f"{variant}__s0"
        assert [r["epoch"] for r in RunDir(run).metrics()] == [1] and not (run / LOCK).exists()
