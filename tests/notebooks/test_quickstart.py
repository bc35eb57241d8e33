"""``ferlib.quickstart``: the quickstart's run directory, trained by the quickstart's own call only when missing."""
from __future__ import annotations

import ferlib.engine
from ferlib.engine import RunDirOptions
from ferlib.quickstart import RUN_NAME, quickstart_dir, quickstart_run


class _Trained:
    def __init__(self, run_dir):
        self.run_dir = run_dir


def test_a_trained_quickstart_run_is_returned_without_training(tmp_path, monkeypatch):
    monkeypatch.setenv("FERLIB_RESULTS", str(tmp_path))
    run = tmp_path / "runs" / "quickstart"
    run.mkdir(parents=True)
    (run / "best.pt").write_bytes(b"")
    monkeypatch.setattr(ferlib.engine, "train", lambda *a, **k: (_ for _ in ()).throw(AssertionError("trained")))
    assert RUN_NAME == "quickstart" and quickstart_dir() == run
    assert quickstart_run() == run


def test_a_missing_quickstart_run_is_trained_by_the_quickstarts_call(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FERLIB_RESULTS", str(tmp_path))
    calls = []

    def train(*args, **kwargs):
        calls.append((args, kwargs))
        return _Trained(tmp_path / "runs" / args[2].run_name)

    monkeypatch.setattr(ferlib.engine, "train", train)
    assert quickstart_run(max_steps=2, device="cpu", run_name="qs") == tmp_path / "runs" / "qs"
    assert calls == [(("baseline", "synthetic", RunDirOptions(run_name="qs", resume=True)),
                      {"device": "cpu", "max_steps": 2, "seed": 0})]
    assert capsys.readouterr().out == (f"no trained quickstart model at {tmp_path / 'runs' / 'qs'}: training it now "
                                       "(as notebooks/00_quickstart.ipynb does)\n")
