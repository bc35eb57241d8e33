"""Where ferlib reads data and writes results: ``$FERLIB_HOME`` or the project checkout (else the cwd)."""
from __future__ import annotations

import os
from pathlib import Path


def project_root() -> Path:
    env = os.environ.get("FERLIB_HOME")
    if env:
        return Path(env).expanduser()
    repo = Path(__file__).resolve().parent.parent
    if (repo / "pyproject.toml").exists():
        return repo
    return Path.cwd()


def data_dir() -> Path:
    return Path(os.environ.get("FERLIB_DATA", project_root() / "data"))


def results_dir() -> Path:
    return Path(os.environ.get("FERLIB_RESULTS", project_root() / "results"))
