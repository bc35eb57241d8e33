"""Notebooks paired with py:percent scripts (notebooks/jupytext.toml): lossless round trip, committed scripts in sync."""
import pytest

from ferlib import notebooks as nbs

jupytext = pytest.importorskip("jupytext")
NOTEBOOKS = nbs.list_notebooks()


def _cells(nb):
    # py:percent has no way to keep blank lines at the end of a cell (some parameter cells end with one)
    return [(c.cell_type, c.source.rstrip("\n"), list(c.metadata.get("tags", []))) for c in nb.cells]


def test_config_pairs_each_notebook_with_a_script_in_py():
    from jupytext.config import load_jupytext_config
    from jupytext.paired_paths import paired_paths

    nb = NOTEBOOKS[0]
    config = load_jupytext_config(str(nb))
    assert config is not None, "notebooks/jupytext.toml not found"
    paths = [p for p, _ in paired_paths(str(nb), "ipynb", config.default_formats(str(nb)))]
    assert paths == [str(nb), str(nbs.script_path(nb))]
    assert nbs.script_path(nb).parent.name == "py"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_round_trip_keeps_sources_and_parameters_tag(path):
    nb = jupytext.read(path)
    back = jupytext.reads(nbs.script_text(path), "py:percent")
    assert _cells(back) == _cells(nb)
    tagged = [i for i, c in enumerate(back.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and back.cells[tagged[0]].cell_type == "code"
    assert back.metadata["kernelspec"]["name"] == "python3"


def test_committed_scripts_are_in_sync():
    stale = [p.name for p in NOTEBOOKS
             if not nbs.script_path(p).exists() or nbs.script_path(p).read_text() != nbs.script_text(p)]
    orphans = sorted({p.stem for p in (nbs.notebooks_dir() / "py").glob("*.py")} - {p.stem for p in NOTEBOOKS})
    assert not stale and not orphans, (
        f"notebooks/py is out of date (stale: {stale}, without notebook: {orphans}): run "
        "`python -m ferlib notebooks sync` and commit notebooks/py")


def test_sync_writes_the_scripts(tmp_path, monkeypatch):
    import shutil

    folder = tmp_path / "notebooks"
    folder.mkdir()
    shutil.copy(nbs.notebooks_dir() / "jupytext.toml", folder)
    shutil.copy(NOTEBOOKS[0], folder)
    (folder / "py").mkdir()
    (folder / "py" / "99_gone.py").write_text("# %%\n")
    monkeypatch.setattr(nbs, "notebooks_dir", lambda: folder)
    written = nbs.sync()
    assert written == [folder / "py" / (NOTEBOOKS[0].stem + ".py")]
    assert sorted(p.name for p in (folder / "py").iterdir()) == [NOTEBOOKS[0].stem + ".py"]
    assert written[0].read_text() == (nbs.script_path(NOTEBOOKS[0])).read_text()
    assert '# %% tags=["parameters"]' in written[0].read_text()
