"""Every paper notebook at its defaults learns the synthetic set (issue 24.1): the card's ``synthetic`` recipe,
run by notebooks 03–07 exactly as ``make notebooks`` runs them, reaches a last-epoch test accuracy of at least
the majority class + 20 points, on an evaluation split of ≥ 300 images with every class present.

Slow (the five default runs, ~45 minutes of CPU time, MMFRM the longest at ~26); the assertions read the run directories the
notebooks write (``summary.json``, ``predictions.npz``), so nothing is trained twice."""
import json

import numpy as np
import pytest

pytestmark = pytest.mark.slow

NOTEBOOKS = {"fermam": "03_train_fermam", "mmfrm": "04_train_mmfrm", "emonet": "05_train_emonet",
             "grefel": "06_train_grefel", "mfer": "07_train_mfer"}
#: Papers whose CPU demo is measured not to learn within the budget (see the card's synthetic notes);
#: strict, so the day it learns this test says to move it back.
NOT_YET: dict[str, str] = {}
MARGIN = 0.20


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Notebooks 03–07 at their defaults, in a fresh results/ and data/ folder."""
    pytest.importorskip("papermill")
    from ferlib.data.readers.synthetic import load_synthetic
    from ferlib.notebooks import run_parallel

    tmp = tmp_path_factory.mktemp("learn")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FERLIB_DATA", str(tmp / "data"))
        mp.setenv("FERLIB_RESULTS", str(tmp / "results"))
        load_synthetic(split="train")  # generated once here: the notebooks then run two at a time, as run-all does
        assert run_parallel(list(NOTEBOOKS.values()), jobs=2) == 0
    return tmp / "results" / "runs"


#: Close enough to the line that another CPU's rounding may cross it either way: not strict.
NEAR_THE_LINE: set[str] = set()


def _evaluated(results, paper):
    found = sorted(results.glob(f"{paper}_synthetic*/summary.json"))  # MFER's name carries its feature loss
    assert len(found) == 1, found
    run = found[0].parent
    summary = json.loads((run / "summary.json").read_text())
    with np.load(run / "predictions.npz") as z:
        targets, classes = z["targets"], z["classes"]
    return summary, np.bincount(targets, minlength=len(classes)), classes


@pytest.mark.parametrize("paper", list(NOTEBOOKS))
def test_the_default_synthetic_run_is_evaluated_on_300_images_of_every_class(paper, results):
    summary, counts, classes = _evaluated(results, paper)
    assert counts.sum() == summary["last"]["n"] >= 300, (paper, counts.sum())
    assert (counts > 0).all(), (paper, dict(zip(classes, counts)))
    assert summary["complete"], (paper, summary)


@pytest.mark.parametrize("paper", [
    pytest.param(p, marks=pytest.mark.xfail(strict=p not in NEAR_THE_LINE, reason=NOT_YET[p])) if p in NOT_YET else p
    for p in NOTEBOOKS])
def test_the_default_synthetic_run_learns(paper, results):
    summary, counts, _ = _evaluated(results, paper)
    majority = counts.max() / counts.sum()
    assert summary["last"]["accuracy"] >= majority + MARGIN, (paper, summary["last"], majority)
