"""Execute the numbered notebooks headlessly with papermill (``python -m ferlib notebooks run-all``, :mod:`ferlib.cli.notebooks`).

Outputs go to ``results/notebooks/<name>.ipynb``; the stored notebooks stay output-free.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path

from ferlib.paths import project_root, results_dir


def notebooks_dir() -> Path:
    return project_root() / "notebooks"


def list_notebooks() -> list[Path]:
    return sorted(notebooks_dir().glob("[0-9][0-9]_*.ipynb"))


def find(name: str) -> Path:
    matches = [p for p in list_notebooks() if p.stem == name or p.stem.startswith(name)]
    if not matches:
        raise FileNotFoundError(f"no notebook matching {name!r} in {notebooks_dir()}")
    return matches[0]


def execute(name, parameters: dict | None = None, output_dir=None, kernel: str = "python3") -> Path:
    """Run one notebook (a name such as ``"03_train_fermam"``, or a path) with papermill, cwd = its folder;
    returns the executed copy (in ``output_dir``, default ``results/notebooks``). A failing cell raises
    ``papermill.PapermillExecutionError``."""
    import papermill

    src = Path(name) if str(name).endswith(".ipynb") else find(name)
    out_dir = Path(output_dir) if output_dir else results_dir() / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / src.name
    t0 = time.time()
    papermill.execute_notebook(str(src), str(out), parameters=parameters or {}, kernel_name=kernel,
                               cwd=str(src.parent), progress_bar=False, config=kernel_config())
    print(f"{src.name}: {time.time() - t0:.0f}s -> {out}", flush=True)
    return out


def kernel_config():
    """The kernel manager's configuration for :func:`execute`: CurveZMQ transport encryption when pyzmq has it
    and the kernelspec declares it (``ipykernel`` ≥ 7 does), so the kernel does not print its warning about plain
    TCP into ``make notebooks``' output (``KernelManager.transport_encryption``)."""
    import zmq
    from traitlets.config import Config

    config = Config()
    if zmq.has("curve"):
        config.KernelManager.transport_encryption = "auto"
    return config


# --- run-all --jobs N: notebooks side by side, each in its own process ------------------------------------------

#: What each numbered notebook reads that other notebooks write, so ``run-all --jobs N`` (N > 1) starts it only
#: after those have finished. A notebook missing here waits for every notebook numbered before it.
NEEDS: dict[str, tuple[str, ...]] = {
    "00_quickstart": (),
    # caches the synthetic set 00 generates: it must exist before processes start in parallel, so that two of
    # them never write it at once (the generator has no lock)
    "01_prepare_data": ("00_quickstart",),
    "02_explore_data": ("00_quickstart",),  # reads 00's synthetic set
    # 03–08 train on 00's synthetic set (read from its image files; a real dataset from the uint8 caches 01
    # builds, and a cache two of them ask for at once, e.g. EMO-Net's for 05 and 08, is built once:
    # ferlib.data.cache builds one folder at a time, <folder>.lock). Each writes only its own run directories
    # under results/runs (locked by ferlib.run_dir's run.lock): 08's are results/runs/ablations/<dataset>/<sweep>/…,
    # not 05's emonet_synthetic or 07's mfer_synthetic_none, so 08 runs beside them.
    "03_train_fermam": ("01_prepare_data",),
    "04_train_mmfrm": ("01_prepare_data",),
    "05_train_emonet": ("01_prepare_data",),
    "06_train_grefel": ("01_prepare_data",),
    "07_train_mfer": ("01_prepare_data",),
    "08_ablations": ("01_prepare_data",),
    # draws every run under results/runs (00's and 03–08's) into results/figures, and its gallery indexes the
    # figures 08 wrote there
    "09_figures": ("00_quickstart", "03_train_fermam", "04_train_mmfrm", "05_train_emonet", "06_train_grefel",
                   "07_train_mfer", "08_ablations"),
    # tabulates every run into results/tables (08 writes its sweep tables there first); it writes no figure and
    # no run, so it runs beside 09
    "10_results": ("00_quickstart", "03_train_fermam", "04_train_mmfrm", "05_train_emonet", "06_train_grefel",
                   "07_train_mfer", "08_ablations"),
    "11_predict": ("00_quickstart",),  # predicts with 00's run (it trains one only when 00's is missing)
}

#: The order in which ``run-all --jobs N`` starts the notebooks whose needs are met: 01 first (every training
#: waits for it), then the short 02 and 11, then the trainings longest first at the synthetic defaults (issue 24's
#: budgets), so that the longest does not start last and run alone. A stale order costs idle time, never results.
#: Notebooks missing here start after these, in numbered order.
START_ORDER = ("00_quickstart", "01_prepare_data", "02_explore_data", "11_predict", "04_train_mmfrm",
               "03_train_fermam", "06_train_grefel", "08_ablations", "05_train_emonet", "07_train_mfer",
               "09_figures", "10_results")

#: The default ``--jobs`` is the cores this process may use, at most this many: each job is a Jupyter kernel
#: holding a whole training (a model, its optimiser state and a data cache in memory), and the widest stage of
#: :data:`NEEDS` has six trainings whose longest bounds the run however many lanes there are.
MAX_DEFAULT_JOBS = 4


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask; ``os.cpu_count()`` where there is none)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def default_jobs() -> int:
    return max(1, min(available_cores(), MAX_DEFAULT_JOBS))


def job_environment(jobs: int, environ=None, cores: int | None = None) -> dict:
    """The environment of each of ``jobs`` notebook processes: ``environ`` (default ``os.environ``) with
    ``OMP_NUM_THREADS`` = max(1, cores // jobs) when it is unset, kept when set. Without it every kernel's torch
    would take one thread per core, and ``jobs`` of them oversubscribe the cores (5–10× slower on 2 cores)."""
    env = dict(os.environ if environ is None else environ)
    if "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, (cores or available_cores()) // jobs))
    return env


def prerequisites(name: str, names: list[str], needs: dict) -> set[str]:
    """The notebooks of ``names`` that ``name`` waits for: its :data:`NEEDS` entry, else every notebook of
    ``names`` numbered (sorted) before it."""
    if name in needs:
        return set(needs[name]) & set(names)
    return {n for n in names if n < name}


class NotebookProcess:
    """One notebook run in its own process group: ``python -m ferlib notebooks run NAME -p NAME VALUE …`` with
    environment ``env``. Its stdout and stderr go to temporary files and are handed back whole when it ends, so
    the lines of notebooks running side by side do not interleave."""

    def __init__(self, name: str, parameter_args, env: dict):
        import subprocess
        import tempfile

        self.name = name
        self._out, self._err = (tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") for _ in "12")
        command = [sys.executable, "-m", "ferlib", "notebooks", "run", str(name)]
        for key, value in parameter_args:
            command += ["-p", str(key), str(value)]
        self.process = subprocess.Popen(command, env=env, stdout=self._out, stderr=self._err,
                                        start_new_session=True)

    def poll(self) -> int | None:
        return self.process.poll()

    def output(self) -> tuple[str, str]:
        """(stdout, stderr) of the finished process."""
        texts = []
        for f in (self._out, self._err):
            f.seek(0)
            texts.append(f.read())
            f.close()
        return texts[0], texts[1]

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM to its process group, SIGKILL after ``grace_s``. Its kernel (in a session of its own) sees its
        parent gone and exits within a second (ipykernel's parent poller); a run lock it held is taken over by the
        next run, as the lock of any dead process."""
        import signal
        import subprocess

        for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, None)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.process.wait(wait_s)
                break
            except subprocess.TimeoutExpired:
                continue
        self.output()  # closes its files


@contextlib.contextmanager
def _terminate_as_exit():
    """Within it, SIGTERM (a CI timeout, ``kill``) raises ``SystemExit(143)``, so :func:`run_parallel`'s ``finally``
    stops the notebooks: they run in sessions of their own, which a signal to run-all's process group misses."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_parallel(names: list[str], parameter_args=(), jobs: int = 2, needs: dict = NEEDS,
                 order: tuple = START_ORDER, start=NotebookProcess, poll_s: float = 0.2) -> int:
    """Run the notebooks ``names`` (stems, or paths of .ipynb files) in up to ``jobs`` processes at once, each
    started when its :func:`prerequisites` have finished, in ``order`` (then numbered order), each with
    :func:`job_environment`. ``parameter_args`` are ``(name, text)`` pairs passed as ``-p name text`` (parsed by
    the child as the ``run`` command parses them).

    Each finished notebook's output is printed when it ends (``execute``'s one line). The first that fails
    stops the rest: queued ones do not start, running ones get :meth:`NotebookProcess.stop`. Returns 0, the
    failed process's 2 for a user's error (its one ``error:`` line printed), or 1 (its traceback printed)."""
    names = [str(n) for n in names]
    rank = {n: (order.index(Path(n).stem) if Path(n).stem in order else len(order), i) for i, n in enumerate(names)}
    queue = sorted(names, key=rank.get)
    waits = {n: prerequisites(n, names, needs) for n in names}
    env = job_environment(jobs)
    running: dict = {}
    done: set = set()
    with _terminate_as_exit():
        try:
            while queue or running:
                for n in [n for n in queue if waits[n] <= done][:max(0, jobs - len(running))]:
                    queue.remove(n)
                    running[n] = start(n, parameter_args, env)
                if not running:
                    raise RuntimeError(f"notebooks {queue} wait for each other: check ferlib.notebooks.NEEDS")
                time.sleep(poll_s)
                for n, job in list(running.items()):
                    rc = job.poll()
                    if rc is None:
                        continue
                    del running[n]
                    out, err = job.output()
                    print(out, end="", flush=True)
                    print(err, end="", file=sys.stderr, flush=True)
                    if rc == 0:
                        done.add(n)
                        continue
                    for other, other_job in running.items():
                        print(f"stopping {Path(other).stem}: {Path(n).stem} failed", file=sys.stderr, flush=True)
                        other_job.stop()
                    running.clear()
                    if rc != 2:
                        print(f"error: {Path(n).stem} exited with status {rc}", file=sys.stderr, flush=True)
                    return 2 if rc == 2 else 1
        finally:  # an interrupted run-all (Ctrl-C, SIGTERM) leaves no notebook running
            for job in running.values():
                job.stop()
    return 0


class ParameterError(ValueError):
    """A notebook parameter has the wrong type or range (the message is one line naming it)."""


#: Parameters that count things: at least 1 when given.
_COUNTS = ("epochs", "batch_size", "max_steps", "threads", "num_anchors")


def check_parameters(namespace: dict, minimum: dict | None = None) -> None:
    """Check a notebook's parameters against the annotations of its ``parameters`` cell, before anything runs.

    ``namespace`` is the notebook's ``globals()``: the annotated assignments of the parameters cell
    (``epochs: Optional[int] = None``) leave their types in ``__annotations__``, and papermill's injected
    cell the values. A value of the wrong type (``-p epochs abc``) or out of range (``-p epochs 0``) raises
    :class:`ParameterError` naming the parameter, so nothing on disk is touched by a mistyped run.
    ``minimum`` adds lower bounds (counts in ``_COUNTS`` must be ≥ 1).
    """
    import typing

    bounds = {**{k: 1 for k in _COUNTS}, **(minimum or {})}
    for name, annotation in (namespace.get("__annotations__") or {}).items():
        if name not in namespace:
            continue
        value = namespace[name]
        allowed = typing.get_args(annotation) if typing.get_origin(annotation) is typing.Union else (annotation,)
        allowed = tuple(a for a in allowed if isinstance(a, type))
        ok = any(_is(value, a) for a in allowed)
        if not ok:
            names = " or ".join("None" if a is type(None) else a.__name__ for a in allowed)
            raise ParameterError(f"parameter {name} must be {names}, got {value!r} ({type(value).__name__})")
        if name in bounds and isinstance(value, (int, float)) and not isinstance(value, bool) and value < bounds[name]:
            raise ParameterError(f"parameter {name} must be at least {bounds[name]}, got {value!r}")


#: The parameters every training notebook shares, passed to ``ferlib.engine.train`` under the same names:
#: its own, the run directory's (``run=RunDirOptions(…)``) and the data's (``data=DataOptions(…)``).
TRAIN_PARAMETERS = ("epochs", "batch_size", "pretrained", "precision", "max_steps", "device", "seed", "threads")
RUN_PARAMETERS = ("run_name", "resume", "overwrite", "reuse")
DATA_PARAMETERS = ("data_root", "base_recipe")


def train_options(namespace: dict, **paper_options) -> dict:
    """The keyword arguments of ``ferlib.engine.train`` from a training notebook's parameters: the shared
    :data:`TRAIN_PARAMETERS`, ``run`` from :data:`RUN_PARAMETERS` (``run_name`` with its ``{fields}`` filled from
    the parameters, None as ``none``), ``data`` from :data:`DATA_PARAMETERS`, then ``paper_options`` (the paper's
    own switches as ``model_kwargs`` / ``loss_kwargs``). A switch set to None is left out, so the card's value
    holds; a dict of switches left with none is dropped."""
    from ferlib.engine import DataOptions, RunDirOptions

    values = {k: namespace[k] for k in (namespace.get("__annotations__") or {}) if k in namespace}
    options = {k: values[k] for k in TRAIN_PARAMETERS if k in values}
    run = {k: values[k] for k in RUN_PARAMETERS if k in values}
    if "run_name" in run:
        run["run_name"] = run["run_name"].format(**{k: "none" if v is None else v for k, v in values.items()})
    if run:
        options["run"] = RunDirOptions(**run)
    data = {k: values[k] for k in DATA_PARAMETERS if k in values}
    if data:
        options["data"] = DataOptions(**data)
    for name, switches in paper_options.items():
        if isinstance(switches, dict):
            switches = {k: v for k, v in switches.items() if v is not None}
            if not switches:
                continue
        options[name] = switches
    return options


def _is(value, kind: type) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def script_path(notebook: Path) -> Path:
    """The py:percent script paired with ``notebook`` by ``notebooks/jupytext.toml``: ``py/<name>.py``."""
    return Path(notebook).parent / "py" / (Path(notebook).stem + ".py")


def script_text(notebook: Path) -> str:
    """``notebook`` as a py:percent script, with the folder's jupytext configuration (what Jupyter saves)."""
    import jupytext
    from jupytext.config import load_jupytext_config

    config = load_jupytext_config(str(notebook))
    return jupytext.writes(jupytext.read(notebook), "py:percent", config=config)


def sync() -> list[Path]:
    """Regenerate ``notebooks/py/*.py`` from the .ipynb files (the .ipynb are the source); drop orphans."""
    written = []
    for nb in list_notebooks():
        path = script_path(nb)
        text = script_text(nb)
        if not path.exists() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"{nb.name} -> {path.relative_to(notebooks_dir())}", flush=True)
        written.append(path)
    for orphan in sorted((notebooks_dir() / "py").glob("*.py")):
        if orphan not in written:
            orphan.unlink()
            print(f"removed {orphan.relative_to(notebooks_dir())} (no notebook)", flush=True)
    return written
