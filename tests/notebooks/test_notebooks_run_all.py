"""``python -m ferlib notebooks run-all --jobs N``: notebooks side by side, each in its own process, started only
after the notebooks whose files they read (``ferlib.notebooks.NEEDS``), each with ``OMP_NUM_THREADS`` = cores // N
unless it is set; the first failure stops the rest; ``--jobs 1`` runs them one after another as before.

The schedule is tested on stand-in jobs (no notebook runs); the process path on throw-away notebooks."""
import os
import time
from pathlib import Path

import nbformat
import pytest

import ferlib.notebooks as nbmod
from ferlib.notebooks import NEEDS, START_ORDER, job_environment, list_notebooks, prerequisites, run_parallel

STEMS = [p.stem for p in list_notebooks()]
TRAININGS = ["03_train_fermam", "04_train_mmfrm", "05_train_emonet", "06_train_grefel", "07_train_mfer",
             "08_ablations"]


class Recorder:
    """Stand-in for :class:`ferlib.notebooks.NotebookProcess`: a job ends (with ``rcs[name]``, default 0) after
    ``polls[name]`` polls (default 2), and every start, end and stop is recorded in ``events``."""

    def __init__(self, polls=None, rcs=None, outputs=None):
        self.events, self.envs, self.polls, self.rcs = [], {}, polls or {}, rcs or {}
        self.outputs = outputs or {}

    def __call__(self, name, parameter_args, env):
        recorder = self
        recorder.events.append(("start", name))
        recorder.envs[name] = (env.get("OMP_NUM_THREADS"), list(parameter_args))

        class Job:
            left = recorder.polls.get(name, 2)

            def poll(self):
                self.left -= 1
                if self.left > 0:
                    return None
                recorder.events.append(("end", name))
                return recorder.rcs.get(name, 0)

            def output(self):
                return recorder.outputs.get(name, (f"{name}.ipynb: 1s -> out\n", ""))

            def stop(self):
                recorder.events.append(("stop", name))

        return Job()

    def started(self):
        return [n for e, n in self.events if e == "start"]

    def running_at_once(self) -> int:
        running, most = set(), 0
        for event, name in self.events:
            if event == "start":
                running.add(name)
            else:
                running.discard(name)
            most = max(most, len(running))
        return most


def test_the_table_names_every_notebook_and_only_earlier_ones():
    assert sorted(NEEDS) == STEMS and sorted(START_ORDER) == STEMS
    for name, needs in NEEDS.items():
        assert all(n in STEMS and n < name for n in needs), name
    assert NEEDS["01_prepare_data"] == ("00_quickstart",)  # the synthetic set exists before anything runs beside
    for name in TRAININGS:
        assert "01_prepare_data" in prerequisites(name, STEMS, NEEDS)
        assert not set(TRAININGS) & prerequisites(name, STEMS, NEEDS)  # the trainings run side by side
    for name in ("09_figures", "10_results"):
        assert set(TRAININGS) <= prerequisites(name, STEMS, NEEDS)


def test_a_notebook_missing_from_the_table_waits_for_every_earlier_one():
    names = ["00_a", "01_b", "02_c", "03_new"]
    assert prerequisites("03_new", names, {"01_b": ()}) == {"00_a", "01_b", "02_c"}
    assert prerequisites("01_b", names, {"01_b": ("00_a", "99_gone")}) == {"00_a"}  # only what is being run


def test_two_jobs_start_each_notebook_after_what_it_reads_and_run_two_at_once(monkeypatch, capsys):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    # the trainings take long, the others one poll or two
    rec = Recorder(polls={"04_train_mmfrm": 9, "03_train_fermam": 8, "06_train_grefel": 7, "08_ablations": 6,
                          "05_train_emonet": 5, "07_train_mfer": 4})
    assert run_parallel(STEMS, [("epochs", "1e-5")], jobs=2, start=rec, poll_s=0) == 0
    position = {(e, n): i for i, (e, n) in enumerate(rec.events)}
    for name in STEMS:
        for need in NEEDS[name]:
            assert position[("end", need)] < position[("start", name)], (need, name)
    assert rec.running_at_once() == 2
    assert rec.started()[0] == "00_quickstart"
    trainings_started = [n for n in rec.started() if n in TRAININGS]
    assert trainings_started == ["04_train_mmfrm", "03_train_fermam", "06_train_grefel", "08_ablations",
                                 "05_train_emonet", "07_train_mfer"]  # longest first
    assert all(env == ("1", [("epochs", "1e-5")]) for env in rec.envs.values())  # set: kept; -p text as given
    out = capsys.readouterr().out.splitlines()
    assert sorted(out) == sorted(f"{n}.ipynb: 1s -> out" for n in STEMS)  # one line per notebook, whole


def test_one_job_per_core_share_of_threads_when_omp_is_unset(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(nbmod, "available_cores", lambda: 8)
    rec = Recorder()
    assert run_parallel(STEMS[:3], jobs=3, start=rec, poll_s=0) == 0
    assert {env for env, _ in rec.envs.values()} == {"2"}  # 8 cores // 3 jobs
    assert job_environment(3, {}, cores=2)["OMP_NUM_THREADS"] == "1"  # never 0
    assert job_environment(2, {"OMP_NUM_THREADS": "3", "X": "y"}, cores=16) == {"OMP_NUM_THREADS": "3", "X": "y"}


def test_the_first_failure_stops_the_running_and_starts_nothing_more(monkeypatch, capsys):
    line = "error: 07_train_mfer: RecipeChangedError: results/runs/mfer_synthetic_none holds a finished run\n"
    rec = Recorder(polls={"03_train_fermam": 50, "06_train_grefel": 50, "08_ablations": 50, "07_train_mfer": 1},
                   rcs={"07_train_mfer": 2}, outputs={"07_train_mfer": ("", line)})
    order = ("00_quickstart", "01_prepare_data", "07_train_mfer", "03_train_fermam")
    assert run_parallel(STEMS, jobs=2, start=rec, poll_s=0, order=order) == 2
    assert ("end", "07_train_mfer") in rec.events
    assert [n for e, n in rec.events if e == "stop"] == ["03_train_fermam"]  # the one running beside it
    assert "09_figures" not in rec.started() and "06_train_grefel" not in rec.started()
    err = capsys.readouterr().err
    assert err == line + "stopping 03_train_fermam: 07_train_mfer failed\n"


def test_a_crash_that_is_not_a_users_error_exits_1():
    rec = Recorder(rcs={"01_prepare_data": 1}, outputs={"01_prepare_data": ("", "Traceback ...\nZeroDivisionError\n")})
    assert run_parallel(STEMS, jobs=2, start=rec, poll_s=0) == 1
    assert rec.started() == ["00_quickstart", "01_prepare_data", "02_explore_data"]


def test_sigterm_to_run_all_stops_the_running_notebooks():
    """The notebooks run in sessions of their own, so a CI timeout's SIGTERM reaches only run-all: it stops them."""
    import signal

    rec = Recorder(polls={"00_quickstart": 10**9})

    def start(name, parameter_args, env):
        job = rec(name, parameter_args, env)
        job.poll = lambda: os.kill(os.getpid(), signal.SIGTERM)  # run-all is killed while 00 runs
        return job

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as stopped:
        run_parallel(STEMS, jobs=2, start=start, poll_s=0.01)
    assert stopped.value.code == 128 + signal.SIGTERM
    assert rec.events == [("start", "00_quickstart"), ("stop", "00_quickstart")]
    assert signal.getsignal(signal.SIGTERM) is before


def test_cli_jobs_1_runs_in_numbered_order_in_this_process(monkeypatch):
    import ferlib.cli.notebooks as cli

    calls = []
    monkeypatch.setattr(cli, "execute", lambda name, params: calls.append((name, params)))
    monkeypatch.setattr(cli, "run_parallel", lambda *a, **k: pytest.fail("--jobs 1 runs no process"))
    assert cli.main(["run-all", "--jobs", "1", "-p", "max_steps", "3"]) == 0
    assert calls == [(n, {"max_steps": 3}) for n in STEMS]


def test_cli_jobs_2_passes_the_parameters_as_typed(monkeypatch):
    import ferlib.cli.notebooks as cli

    seen = {}
    monkeypatch.setattr(cli, "run_parallel", lambda names, args, jobs: seen.update(names=names, args=args, jobs=jobs) or 2)
    assert cli.main(["run-all", "-j", "2", "-p", "lr", "1e-5"]) == 2
    assert seen == {"names": STEMS, "args": [["lr", "1e-5"]], "jobs": 2}


def _waiting_notebook(path: Path, me: str, other: str | None, cell: str = "") -> Path:
    """A notebook that writes ``<me>.started`` (its OMP_NUM_THREADS) and waits until ``<other>.started`` exists:
    two of them finish only when run at the same time."""
    d = path.parent
    source = (f"import os, pathlib, time\nd = pathlib.Path({str(d)!r})\n"
              f"(d / '{me}.started').write_text(os.environ.get('OMP_NUM_THREADS', 'unset') + ' ' + str(os.getpid()))\n"
              f"deadline = time.time() + 120\n")
    if other:
        source += (f"while not (d / '{other}.started').exists():\n"
                   f"    assert time.time() < deadline, 'the other notebook did not run at the same time'\n"
                   f"    time.sleep(0.1)\n")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)] + (
        [nbformat.v4.new_code_cell(cell)] if cell else []))
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


@pytest.mark.slow  # real processes
def test_real_processes_run_side_by_side_and_a_failure_stops_the_other(tmp_path, monkeypatch, capsys):
    pytest.importorskip("papermill")
    monkeypatch.setenv("FERLIB_RESULTS", str(tmp_path / "results"))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(nbmod, "available_cores", lambda: 4)
    a = _waiting_notebook(tmp_path / "a.ipynb", "a", "b")
    b = _waiting_notebook(tmp_path / "b.ipynb", "b", "a")
    assert run_parallel([str(a), str(b)], jobs=2, needs={str(a): (), str(b): ()}, poll_s=0.1) == 0
    assert [(tmp_path / f"{n}.started").read_text().split()[0] for n in "ab"] == ["2", "2"]  # 4 cores // 2 jobs
    assert (tmp_path / "results" / "notebooks" / "a.ipynb").is_file()
    lines = capsys.readouterr().out.splitlines()
    assert sorted(line.split(":")[0] for line in lines) == ["a.ipynb", "b.ipynb"]

    # c stops on a user's error while d waits for a file that never comes: d's process and kernel are ended
    c = _waiting_notebook(tmp_path / "c.ipynb", "c", "d",
                          "from ferlib.notebooks import ParameterError\n"
                          "raise ParameterError('parameter epochs must be int, got \\'x\\' (str)')")
    d = _waiting_notebook(tmp_path / "d.ipynb", "d", "never")
    assert run_parallel([str(c), str(d)], jobs=2, needs={str(c): (), str(d): ()}, poll_s=0.1) == 2
    err = capsys.readouterr().err
    assert "error: " + str(c) + ": ParameterError: parameter epochs must be int, got 'x' (str)\n" in err
    assert "stopping d: c failed" in err
    kernel = int((tmp_path / "d.started").read_text().split()[1])
    deadline = time.time() + 30
    while time.time() < deadline and _alive(kernel):
        time.sleep(0.2)
    assert not _alive(kernel), "d's kernel outlived run-all"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (an exited child not yet reaped) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] != "Z"
    except OSError:
        return False
