"""Every notebook in notebooks/ is executed by some test: its name appears in a test module that runs
notebooks (papermill). Each notebook's owner tests it with tiny max_steps; this check keeps a new
notebook from being left out."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
RUNS_NOTEBOOKS = re.compile(r"papermill|execute_notebook")


def executing_test_modules(folder: Path = ROOT / "tests") -> dict[str, str]:
    """Test modules (other than this one) that execute notebooks, by file name → source text."""
    here = Path(__file__).name
    return {p.name: p.read_text() for p in sorted(Path(folder).rglob("test_*.py"))
            if p.name != here and RUNS_NOTEBOOKS.search(p.read_text())}


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 11, [p.name for p in NOTEBOOKS]


def covering(stem: str, modules: dict[str, str]) -> list[str]:
    return [name for name, text in modules.items() if stem in text]


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_is_executed_by_a_test(notebook):
    modules = executing_test_modules()
    assert covering(notebook.stem, modules), (
        f"no test executes notebooks/{notebook.name}: add a papermill test (tiny max_steps, "
        f"@pytest.mark.slow) that names it; notebook-running test modules: {sorted(modules)}")


def test_the_check_can_fail(tmp_path):
    """Modules that only mention a notebook without running notebooks do not count; unknown names are uncovered."""
    (tmp_path / "test_a.py").write_text("papermill.execute_notebook(NB / '08_ablations.ipynb')")
    (tmp_path / "test_b.py").write_text("NAMES = ['11_other']")
    modules = executing_test_modules(tmp_path)
    assert sorted(modules) == ["test_a.py"]
    assert covering("08_ablations", modules) == ["test_a.py"]
    assert covering("11_other", modules) == []
    assert covering("99_never_written", executing_test_modules()) == []
    assert "test_notebooks_all.py" not in executing_test_modules()
