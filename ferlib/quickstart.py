"""The quickstart's model: the run notebook 00 (and ``make demo``) trains, ``results/runs/quickstart``, which
notebook 11 predicts with when it is given no other model."""
from __future__ import annotations

from pathlib import Path

from ferlib.paths import results_dir

#: The quickstart run's folder name under ``results/runs`` (notebook 00's ``run_name`` default).
RUN_NAME = "quickstart"


def quickstart_dir(run_name: str = RUN_NAME) -> Path:
    """``results/runs/<run_name>`` (``$FERLIB_RESULTS`` moves ``results/``), trained or not."""
    return results_dir() / "runs" / run_name


def quickstart_run(max_steps: int | None = None, device: str = "auto", run_name: str = RUN_NAME) -> Path:
    """The quickstart's run directory (:func:`quickstart_dir`); when it has no ``best.pt`` yet, the quickstart's
    model is trained here by the same call the quickstart makes (``ferlib.engine.train("baseline", "synthetic", …)``;
    ``max_steps`` makes it a smoke run)."""
    run = quickstart_dir(run_name)
    if (run / "best.pt").is_file():
        return run
    from ferlib.engine import RunDirOptions, train

    print(f"no trained quickstart model at {run}: training it now (as notebooks/00_quickstart.ipynb does)", flush=True)
    return train("baseline", "synthetic", RunDirOptions(run_name=run_name, resume=True), device=device,
                 max_steps=max_steps, seed=0).run_dir  # an interrupted run continues where it stopped
