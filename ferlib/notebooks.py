"""Execute the numbered notebooks headlessly with papermill (``python -m ferlib notebooks run-all``, :mod:`ferlib.cli.notebooks`).

Outputs go to ``results/notebooks/<name>.ipynb``; the stored notebooks stay output-free.
"""
from __future__ import annotations

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


#: The parameters every training notebook shares, passed to ``ferlib.engine.train`` under the same names.
TRAIN_PARAMETERS = ("data_root", "base_recipe", "epochs", "batch_size", "pretrained", "precision", "max_steps",
                    "device", "seed", "threads", "reuse")


def train_options(namespace: dict, **paper_options) -> dict:
    """The keyword arguments of ``ferlib.engine.train`` from a training notebook's parameters: the shared
    :data:`TRAIN_PARAMETERS`, ``run_name`` with its ``{fields}`` filled from the parameters (None as
    ``none``), then ``paper_options`` (the paper's own switches as ``model_kwargs`` / ``loss_kwargs``)."""
    values = {k: namespace[k] for k in (namespace.get("__annotations__") or {}) if k in namespace}
    options = {k: values[k] for k in TRAIN_PARAMETERS if k in values}
    if "run_name" in values:
        options["run_name"] = values["run_name"].format(**{k: "none" if v is None else v for k, v in values.items()})
    return {**options, **paper_options}


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
