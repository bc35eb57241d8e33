"""The shell commands live in ``ferlib.cli`` and nowhere else; no library name means two things (issue 18)."""
import importlib
import inspect
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import ferlib
import ferlib.cli
import ferlib.data
import ferlib.engine

ROOT = Path(ferlib.__file__).resolve().parent


def _library_modules():
    for p in sorted(ROOT.rglob("*.py")):
        rel = p.relative_to(ROOT.parent).with_suffix("")
        if rel.parts[1] == "cli" or p.name == "__main__.py":
            continue
        yield ".".join(rel.parts).removesuffix(".__init__"), p


def test_argument_parsing_lives_in_the_cli_package_only():
    parsing = [name for name, p in _library_modules() if "argparse" in p.read_text()]
    assert parsing == []


def test_every_command_is_a_cli_module_with_main():
    names = sorted(m.name for m in pkgutil.iter_modules(ferlib.cli.__path__))
    assert names == sorted(ferlib.cli.COMMANDS)
    for name in names:
        assert callable(importlib.import_module(f"ferlib.cli.{name}").main), name


@pytest.mark.parametrize("package", [ferlib.engine, ferlib.data])
def test_no_top_level_module_is_named_like_a_library_function(package):
    """``ferlib.train`` was both the CLI module and ``ferlib.engine.train``; ``ferlib.evaluation`` likewise."""
    top = {m.name for m in pkgutil.iter_modules(ferlib.__path__)}
    functions = {n for n in package.__all__ if inspect.isfunction(getattr(package, n))}
    assert top & functions == set()


def test_data_and_engine_share_no_function_name():
    """``ferlib.data.load_splits(name, root)`` and the engine's recipe loader were two signatures under one name."""
    data_fns = {n for n in ferlib.data.__all__ if inspect.isfunction(getattr(ferlib.data, n))}
    engine_fns = {n for n in ferlib.engine.__all__ if inspect.isfunction(getattr(ferlib.engine, n))}
    assert data_fns & engine_fns == set()


def test_python_m_ferlib_dispatches_and_refuses_unknown_commands():
    ok = subprocess.run([sys.executable, "-m", "ferlib", "weights", "--help"], capture_output=True, text=True)
    assert ok.returncode == 0 and "sha256" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "ferlib", "trian"], capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.strip() == ("error: unknown command 'trian'; commands: train, evaluate, prepare, predict, "
                                  "weights, notebooks, demo, parity")
    usage = subprocess.run([sys.executable, "-m", "ferlib", "--help"], capture_output=True, text=True)
    assert usage.returncode == 0 and "re-evaluate a run directory" in usage.stdout


def test_a_new_file_in_a_discovered_package_registers_without_any_other_edit(tmp_path, monkeypatch):
    """What ferlib/data/readers, ferlib/models and ferlib/losses rely on: every module there is imported."""
    from ferlib.discover import import_submodules

    pkg = tmp_path / "toy_readers"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("SEEN = []\n")
    (pkg / "sfew.py").write_text("from toy_readers import SEEN\nSEEN.append('sfew')\n")
    (pkg / "expw.py").write_text("from toy_readers import SEEN\nSEEN.append('expw')\n")
    (pkg / "_private.py").write_text("raise AssertionError('private modules are not imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    toy = importlib.import_module("toy_readers")
    assert import_submodules("toy_readers", toy.__path__) == ["toy_readers.expw", "toy_readers.sfew"]
    assert toy.SEEN == ["expw", "sfew"]
    (pkg / "broken.py").write_text("import a_module_that_does_not_exist\n")
    with pytest.raises(ModuleNotFoundError, match="a_module_that_does_not_exist"):  # never a silent gap
        import_submodules("toy_readers", toy.__path__)


def test_every_reader_model_and_loss_module_is_found():
    from ferlib.data import list_datasets
    from ferlib.losses import loss_class
    from ferlib.models import list_models

    assert list_datasets() == ["affectnet", "affectnet8", "fer2013", "ferplus", "imagefolder", "rafdb", "synthetic"]
    assert {"fermam", "mmfrm", "emonet", "grefel", "mfer", "baseline"} <= set(list_models())
    for name in ("rfloss", "cross_entropy"):
        assert loss_class(name)
