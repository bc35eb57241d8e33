"""The run directory (docs/design.md §3): the one module that writes and reads its files.

::

    config.yaml       resolved recipe + environment + fit options + where the data came from (written once)
    metrics.jsonl     one JSON line per epoch (appended)
    last.pt, best.pt  checkpoints (written by ``ferlib.engine.checkpoint``; listed here in :data:`RUN_FILES`)
    predictions.npz   logits, targets, features and class names of the selected model on the evaluation split
    summary.json      last-epoch and selected-epoch metrics, ``selected_on``, completeness (written once)
    plan.json         what a dry run would do
    eval_<tag>.json   a later evaluation (``python -m ferlib evaluate``), beside ``predictions_<tag>.npz``
    ablation.json     an ablation grid entry's identity (:mod:`ferlib.ablations`)
    run.lock          present while a process writes the run (:meth:`RunDir.lock`: one writer at a time)

The engine writes through :class:`RunDir`; results tables, figures, ablations and ``ferlib.evaluation`` read
through it. Whole-file writes go to a temporary file in the same folder, then ``os.replace``: a reader never
sees half a file. :func:`aggregate` is the one mean ± std over seeds of every table.

One writer at a time: training holds ``run.lock`` (:meth:`RunDir.lock`), an exclusive-create lock file of
``filelock.SoftFileLock`` recording the holder's PID and host (its modification time is when the lock was taken).
It works on NFS and the other shared file systems of GPU clusters, where ``fcntl``/``flock`` locks can be
missing or silently local to one machine; a lock left by a killed process on this host is taken over with a
warning, one from another host is reported and broken only when asked (``break_lock``). Readers never see half
a file (atomic replaces), and :meth:`RunDir.in_progress` says a live writer holds the run.

This is a leaf below the engine, viz, results and ablations: it imports NumPy, YAML, ``ferlib.metrics`` and
``filelock`` only (pandas inside :func:`aggregate`).
"""
from __future__ import annotations

import dataclasses
import json
import os
import socket
import time
import warnings
from pathlib import Path

import numpy as np
import yaml

from ferlib.metrics import format_mean_std

__all__ = ["CONFIG", "LOCK", "METRICS", "PLAN", "PREDICTIONS", "RUN_FILES", "SUMMARY", "LockHolder", "RunDir",
           "RunLock", "RunLockedError", "aggregate", "find_runs"]

CONFIG, METRICS, SUMMARY, PREDICTIONS, PLAN = "config.yaml", "metrics.jsonl", "summary.json", "predictions.npz", "plan.json"
ABLATION = "ablation.json"
LOCK = "run.lock"

#: The files of a run; a fresh run into a directory holding any of them needs ``overwrite``.
RUN_FILES = ("last.pt", "last.pt.prev", "best.pt", PREDICTIONS, SUMMARY, METRICS)


def _plain(obj):
    """JSON-safe form (tuples → lists, paths and other objects → str)."""
    return json.loads(json.dumps(obj, default=str))


# ---------------------------------------------------------------------------------------------
# One writer per run directory
# ---------------------------------------------------------------------------------------------

class RunLockedError(RuntimeError):
    """Another process writes the run directory (nothing was touched); ``holder`` is its :class:`LockHolder`."""

    def __init__(self, message: str, holder: "LockHolder | None" = None):
        super().__init__(message)
        self.holder = holder


def _host_id() -> str:
    """This host as ``filelock`` records it in a lock file: the host name, with ``?pidns-<inode>`` when this
    process runs in a PID namespace of its own (a container), whose PIDs mean nothing outside it."""
    name = socket.gethostname()
    try:
        ns = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return name
    return name if ns == 0xEFFFFFFC else f"{name}?pidns-{ns:x}"  # 0xEFFFFFFC: the initial namespace


@dataclasses.dataclass(frozen=True)
class LockHolder:
    """Who holds a run directory's ``run.lock``: PID and host as ``filelock.SoftFileLock`` wrote them (None when
    the file is being written or unreadable) and ``started``, when the lock was taken (the file's mtime)."""

    pid: int | None
    host: str | None
    started: float

    @property
    def on_this_host(self) -> bool:
        return self.host == _host_id()

    @property
    def alive(self) -> bool | None:
        """Whether the holder still runs: known on this host only (None elsewhere, or without a PID)."""
        if not self.on_this_host or self.pid is None:
            return None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # another user's live process
            return True
        return True

    @property
    def is_this_process(self) -> bool:
        return self.on_this_host and self.pid == os.getpid()

    def __str__(self) -> str:
        host = (self.host or "an unknown host").split("?pidns-")[0]
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.started))
        return f"PID {self.pid if self.pid is not None else '?'} on {host}, started {when}"


def _read_holder(lock_file: Path, wait_s: float = 0.0) -> LockHolder | None:
    """The holder ``lock_file`` names; ``wait_s``: how long to wait for a lock file just created to be written."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            started = lock_file.stat().st_mtime
            text = lock_file.read_text(errors="replace")
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError:
            text, started = "", time.time()
        lines = text.splitlines()
        if text.endswith("\n") and len(lines) >= 2 and lines[0].strip().isdigit():  # "<pid>\n<host>\n[...]"
            return LockHolder(int(lines[0]), lines[1].strip(), started)
        if time.monotonic() >= deadline:
            return LockHolder(None, None, started)
        time.sleep(0.01)


#: Locks this process holds: {lock file (resolved): [SoftFileLock, depth, whether acquiring created the folder]}
#: (``train`` inside ``run_entry``, ``fit`` inside ``train``: the same process enters its own lock again).
_HELD: dict[str, list] = {}


class RunLock:
    """``with RunDir(path).lock(): ...``: this process is the run directory's one writer until the block ends.

    ``run.lock`` is created with ``O_CREAT | O_EXCL`` (``filelock.SoftFileLock``, which writes PID and host into
    it), the one primitive that is atomic on every shared file system including NFS, unlike ``fcntl``/``flock``
    locks. A second process refuses at once with :class:`RunLockedError` naming the holder. A lock file left by
    a process that is gone (``kill -9``) is taken over with a warning when that process ran on this host; one
    from another host cannot be checked and is only broken with ``break_lock=True``. Re-entrant within a
    process; released (the file removed) when the block ends, also on an exception."""

    def __init__(self, run_dir: "RunDir", break_lock: bool = False):
        self.run_dir, self.break_lock = run_dir, break_lock
        self.file = run_dir.path / LOCK
        self._key: str | None = None

    def acquire(self) -> "RunLock":
        from filelock import SoftFileLock, Timeout

        key = os.path.realpath(self.file)
        if key in _HELD:
            _HELD[key][1] += 1
            self._key = key
            return self
        created = not self.run_dir.path.exists()
        self.run_dir.path.mkdir(parents=True, exist_ok=True)
        before = _read_holder(self.file)
        if before is not None and self.break_lock and not before.on_this_host:
            warnings.warn(f"{self.run_dir.path}: breaking the lock of {before} (break_lock / --break-lock)",
                          stacklevel=3)
            SoftFileLock(self.file).break_lock()
        lock = SoftFileLock(self.file, timeout=0)
        try:
            try:
                lock.acquire()
            except FileNotFoundError:  # the folder, empty, was just removed by a writer that failed: once more
                self.run_dir.path.mkdir(parents=True, exist_ok=True)
                lock.acquire()
        except Timeout:
            holder = _read_holder(self.file, wait_s=2.0)  # created an instant ago: its PID and host follow
            raise RunLockedError(locked_message(self.run_dir.path, holder), holder) from None
        if before is not None and before.alive is False:  # filelock took over the marker of a dead process
            warnings.warn(f"{self.run_dir.path}: took over the lock left by {before}: that process is gone (killed?); "
                          f"the run directory holds what it wrote", stacklevel=3)
        _HELD[key] = [lock, 1, created]
        self._key = key
        return self

    def release(self) -> None:
        if self._key is None:
            return
        held = _HELD[self._key]
        held[1] -= 1
        if held[1] == 0:
            del _HELD[self._key]
            held[0].release()
            if held[2]:  # a run that stopped before writing anything leaves no empty folder behind
                try:
                    self.run_dir.path.rmdir()
                except OSError:
                    pass
        self._key = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def locked_message(path, holder: LockHolder | None) -> str:
    """The one line a second writer gets: who holds ``path`` and what to do."""
    who = str(holder) if holder is not None else "another process"
    msg = (f"{path} is being written by another run ({who}); nothing was changed. One writer per run directory: "
           f"wait for that run to finish, or choose another run directory (run_name / --run-dir).")
    if holder is not None and not holder.on_this_host:
        msg += (f" It runs on another host, which this one cannot check: if it is gone, pass --break-lock "
                f"(break_lock=True) or remove {Path(path) / LOCK}.")
    return msg


class RunDir:
    """One run directory: ``RunDir(path).write_summary(s)``, ``RunDir(path).summary()``, ..."""

    def __init__(self, path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @property
    def files(self) -> list[str]:
        """The :data:`RUN_FILES` present (an empty ``metrics.jsonl`` does not count): a previous run's files."""
        return [n for n in RUN_FILES if (self.path / n).exists() and (n != METRICS or (self.path / n).stat().st_size)]

    def remove(self, names) -> None:
        for name in names:
            (self.path / name).unlink(missing_ok=True)

    # --- one writer at a time ----------------------------------------------------------------------

    def lock(self, break_lock: bool = False) -> RunLock:
        """The run directory's writer lock (a context manager, see :class:`RunLock`)."""
        return RunLock(self, break_lock)

    def lock_holder(self) -> LockHolder | None:
        """Who holds ``run.lock`` (None when nobody does); the holder may be gone (:attr:`LockHolder.alive`)."""
        return _read_holder(self.path / LOCK)

    def in_progress(self) -> bool:
        """Another process writes the run now: its ``run.lock`` is held by a live process on this host, or by
        one on another host (which cannot be checked). A lock left by a killed process does not count."""
        holder = self.lock_holder()
        return holder is not None and not holder.is_this_process and holder.alive is not False

    # --- writing ---------------------------------------------------------------------------------

    def _replace(self, name: str, text: str) -> Path:
        """Write ``name`` atomically: a temporary file in the same folder, fsynced, then ``os.replace``."""
        self.path.mkdir(parents=True, exist_ok=True)
        target, tmp = self.path / name, self.path / f".{name}.tmp"
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
        return target

    def write_config(self, cfg: dict) -> Path:
        """``config.yaml`` (the whole of it, once per run)."""
        return self._replace(CONFIG, yaml.safe_dump(_plain(cfg), sort_keys=False))

    def start_metrics(self) -> None:
        """An empty ``metrics.jsonl`` (a fresh run)."""
        self._replace(METRICS, "")

    def append_metrics(self, row: dict) -> None:
        """One epoch's line at the end of ``metrics.jsonl`` (a reader skips a line cut short by a crash)."""
        with open(self.path / METRICS, "a") as f:
            f.write(json.dumps(row) + "\n")

    def truncate_metrics(self, epochs: int) -> None:
        """Keep the rows of the first ``epochs`` epochs (what a checkpoint has seen; ``last.pt.prev`` may be
        older than the last line); damaged lines are dropped with a warning."""
        path = self.path / METRICS
        if not path.exists():
            self.start_metrics()
            return
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        keep = []
        for line in lines:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                warnings.warn(f"{path}: dropped a damaged line ({line[:60]!r}); the checkpoint's epoch count stands")
                continue
            if row.get("epoch", epochs + 1) <= epochs:
                keep.append(line)
        if len(keep) != len(lines):
            self._replace(METRICS, "".join(line + "\n" for line in keep))

    def save_predictions(self, predictions: dict, classes, name: str = PREDICTIONS) -> Path:
        """``name`` (default ``predictions.npz``): an evaluation's ``predictions`` (``logits`` [N,C], ``targets``
        [N] or [N,C], ``features`` [N,D]) and the class names."""
        self.path.mkdir(parents=True, exist_ok=True)
        tmp = self.path / f".{name}.tmp.npz"
        np.savez_compressed(tmp, logits=predictions["logits"], targets=predictions["targets"],
                            features=predictions["features"], classes=np.array(list(classes)))
        os.replace(tmp, self.path / name)
        return self.path / name

    def write_summary(self, summary: dict) -> Path:
        """``summary.json`` (the whole of it, once per ``train``/``fit`` call)."""
        return self._replace(SUMMARY, json.dumps(summary, indent=2))

    def write_plan(self, plan: dict) -> Path:
        """``plan.json`` of a dry run."""
        return self._replace(PLAN, json.dumps(plan, indent=2, default=str))

    def write_evaluation(self, tag: str, result: dict) -> Path:
        """``eval_<tag>.json``: a later evaluation of the run (``python -m ferlib evaluate --run-dir``)."""
        return self._replace(f"eval_{tag}.json", json.dumps(result, indent=2, default=str))

    def write_ablation_spec(self, spec: dict) -> Path:
        """``ablation.json``: what identifies an ablation grid entry's run (:mod:`ferlib.ablations`)."""
        return self._replace(ABLATION, json.dumps(spec, indent=2, default=str))

    # --- reading ---------------------------------------------------------------------------------

    def config(self) -> dict:
        """``config.yaml`` as a dict (empty when the run has none)."""
        path = self.path / CONFIG
        return (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}

    def metrics(self) -> list[dict]:
        """``metrics.jsonl``: one dict per epoch ([] when absent; a damaged line is skipped)."""
        path = self.path / METRICS
        rows = []
        for line in (path.read_text().splitlines() if path.exists() else ()):
            try:
                rows.append(json.loads(line)) if line.strip() else None
            except json.JSONDecodeError:
                continue  # cut short by a crash (reported when the run resumes)
        return rows

    def predictions(self, name: str = PREDICTIONS) -> dict:
        """``predictions.npz``: ``{"logits", "targets", "features", "classes"}`` arrays."""
        path = self.path / name
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: train the run first (ferlib.engine.train)")
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    def evaluation(self, tag: str) -> dict:
        """``eval_<tag>.json`` as a dict (``{}`` when the run has none)."""
        path = self.path / f"eval_{tag}.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def ablation_spec(self) -> dict:
        """``ablation.json`` as a dict (``{}`` when absent or damaged: the entry is then run afresh)."""
        path = self.path / ABLATION
        try:
            return json.loads(path.read_text()) if path.exists() else {}
        except json.JSONDecodeError:
            return {}

    def summary(self) -> dict:
        """``summary.json`` as a dict (``FileNotFoundError`` when the run has not finished once)."""
        return json.loads((self.path / SUMMARY).read_text())

    def is_complete(self, epochs: int, max_steps: int | None = None) -> bool:
        """``summary.json`` exists and shows ``epochs`` epochs run, or at least ``max_steps`` steps, and no other
        process is writing the run (:meth:`in_progress`)."""
        if self.in_progress():
            return False
        try:
            s = self.summary()
        except (FileNotFoundError, json.JSONDecodeError):
            return False
        if int(s.get("epochs_run", 0)) >= int(epochs):
            return True
        return max_steps is not None and int(s.get("steps", 0)) >= int(max_steps)

    def summarise(self, sel: str, selected_on: str = "test_selected", select_from_epoch: int = 1) -> dict:
        """The summary ``metrics.jsonl`` implies: ``last`` (last epoch), ``selected`` = ``<split>_selected``
        (best epoch by ``eval_<sel>`` among the epochs from ``select_from_epoch`` on; the last epoch when the
        run ends before it), ``selected_on``."""
        rows = self.metrics()
        if not rows:
            return {"selected_on": selected_on}
        eligible = [r for r in rows if r["epoch"] >= select_from_epoch] or rows[-1:]
        best = max(eligible, key=lambda r: r[f"eval_{sel}"])
        last = {k[5:]: v for k, v in rows[-1].items() if k.startswith("eval_")}
        selected = {k[5:]: v for k, v in best.items() if k.startswith("eval_")}
        split = "test" if selected_on == "test_selected" else "val"
        return {"epochs_run": rows[-1]["epoch"], "steps": rows[-1]["step"], "selection_metric": sel,
                "selected_on": selected_on, "last": last, "selected": selected, "selected_epoch": best["epoch"],
                f"{split}_last": last, f"{split}_selected": selected}


def find_runs(root, in_progress: bool = False) -> list[Path]:
    """Every run directory (holding ``summary.json`` and ``config.yaml``) under ``root``, sorted;
    ``in_progress``: also those a live process is writing that have no ``summary.json`` yet."""
    root = Path(root)
    if not root.exists():
        return []
    found = {p.parent for p in root.rglob(SUMMARY) if (p.parent / CONFIG).exists()}
    if in_progress:
        found |= {p.parent for p in root.rglob(LOCK) if (p.parent / CONFIG).exists() and RunDir(p.parent).in_progress()}
    return sorted(found)


# ---------------------------------------------------------------------------------------------
# The one aggregator
# ---------------------------------------------------------------------------------------------

def aggregate(runs, keys, metrics, sort: bool = False, drop_empty: bool = False, any_of=()):
    """Mean and sample standard deviation (ddof 1; NaN for one seed) of each of ``metrics`` over the runs
    (seeds) sharing ``keys``.

    Columns: ``keys``, ``n_seeds``, then per ``any_of`` column whether any run of the group has it true,
    then per metric ``<m>_mean``, ``<m>_std`` and ``<m>`` as text, ``"0.8125 ± 0.0442"`` (``"0.8125"`` alone
    for one seed). ``sort``: groups sorted by key (else in order of first appearance); ``drop_empty``: leave
    out metrics absent from ``runs`` or NaN in every run. Keys missing from ``runs`` are ignored.
    """
    import pandas as pd

    keys = [k for k in keys if k in runs]
    metrics = [m for m in metrics if not drop_empty or (m in runs and runs[m].notna().any())]
    if runs.empty or not keys:
        return pd.DataFrame(columns=[*keys, "n_seeds", *any_of])
    g = runs.groupby(keys, sort=sort, dropna=False)
    out = g.size().rename("n_seeds").to_frame()
    for col in any_of:
        out[col] = g[col].any()
    for m in metrics:
        out[f"{m}_mean"] = g[m].mean()
        out[f"{m}_std"] = g[m].std(ddof=1)
        out[m] = [format_mean_std(a, b) for a, b in zip(out[f"{m}_mean"], out[f"{m}_std"])]
    return out.reset_index()
