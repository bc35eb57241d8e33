"""MFER has no runnable training code: ``python -m ferlib parity mfer`` says so and exits 0 (issue 23)."""
from __future__ import annotations

from ferlib.cli.parity import main


def test_parity_mfer_prints_that_nothing_runs_and_exits_0(tmp_path, capsys):
    assert main(["mfer", "--upstream", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "none runnable: nothing compared" in out
    assert "parity mfer: PARITY OK (1 checks)" in out
