"""ferlib.parity.core: the comparisons, the report table, recordings and the authors' checkout on sys.path."""
import sys

import numpy as np
import pytest
import torch

from ferlib.parity import ParityInputError, ParityOptions, list_parity, run_parity
from ferlib.parity.core import (Check, Report, compare_state_dicts, compare_tensors, grey_levels, load_record,
                                save_record, state_digest, two_sample, upstream_code)


def test_compare_tensors_scales_the_tolerance_by_the_reference():
    ref = torch.tensor([300.0, -2.0, 0.5])
    assert compare_tensors("train", "x", ref + 2e-3, ref).ok  # 2e-3 / 300 < 1e-5
    row = compare_tensors("train", "x", ref + 4e-3, ref)  # 4e-3 / 300 > 1e-5
    assert not row.ok and row.value.startswith("1.3e-05 (max|Δ| / 300)")
    small = torch.tensor([1e-3, 2e-3])  # scale is at least 1
    assert compare_tensors("train", "x", small + 9e-6, small).ok
    assert not compare_tensors("train", "x", small + 2e-5, small).ok


def test_compare_tensors_shape_and_integers():
    assert compare_tensors("eval", "y", torch.zeros(2, 3), torch.zeros(3, 2)).value == "shape (2, 3) vs (3, 2)"
    row = compare_tensors("data", "labels", torch.tensor([0, 1, 2]), torch.tensor([0, 1, 3]))
    assert not row.ok and row.value == "1 of 3 differ"


def test_compare_state_dicts_covers_buffers_and_missing_keys():
    theirs = {"w": torch.ones(4), "bn.running_var": torch.ones(3), "bn.num_batches_tracked": torch.tensor(3)}
    ours = {"w": torch.ones(4), "bn.running_var": torch.tensor([1.0, 1.0, 1.1]), "bn.num_batches_tracked": torch.tensor(3),
            "extra": torch.zeros(1)}
    rows = compare_state_dicts("train", ours, theirs)
    assert not rows[0].ok and rows[0].value.startswith("2/3 tensors within; worst 1.0e-01 (bn.running_var)")
    assert {r.name for r in rows[1:]} == {"extra", "bn.running_var"}
    assert [r.ok for r in compare_state_dicts("train", theirs, dict(theirs))] == [True]


def test_compare_state_dicts_collapses_many_failures():
    theirs = {f"t{i}": torch.zeros(2) for i in range(20)}
    ours = {k: v + 1 for k, v in theirs.items()}
    rows = compare_state_dicts("train", ours, theirs, max_rows=3)
    assert len(rows) == 5 and rows[-1].name == "… 17 more tensors"


def test_grey_levels_uint8_and_normalised():
    a = torch.full((3, 4, 4), 100, dtype=torch.uint8)
    b = a.clone()
    b[0, 0, 0] = 101
    row = grey_levels("data", "img", a, b)
    assert row.ok and row.value == "max 1.00, mean 0.021 grey levels"
    b[0, 0, 1] = 102
    assert not grey_levels("data", "img", a, b).ok
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    norm = lambda u8: (u8.float() / 255 - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)  # noqa: E731
    assert grey_levels("data", "img", norm(a), norm(a), mean, std).value == "max 0.00, mean 0.000 grey levels"
    assert not grey_levels("data", "img", norm(a), norm(b), mean, std).ok


def test_two_sample_detects_a_different_distribution():
    rng = np.random.default_rng(0)
    same = two_sample("augment", "area", rng.uniform(0, 1, 3000), rng.uniform(0, 1, 3000))
    assert same.ok and "KS p=" in same.value
    assert not two_sample("augment", "area", rng.uniform(0, 1, 3000), rng.uniform(0.05, 1, 3000)).ok
    assert two_sample("augment", "flip", rng.random(4000) < 0.5, rng.random(4000) < 0.5, "binary").ok
    flips = two_sample("augment", "flip", rng.random(4000) < 0.5, rng.random(4000) < 0.4, "binary")
    assert not flips.ok and "Fisher p=" in flips.value
    cats = two_sample("augment", "choice", rng.integers(0, 3, 3000), rng.choice(3, 3000, p=[0.5, 0.25, 0.25]),
                      "categorical")
    assert not cats.ok and "χ² p=" in cats.value
    with pytest.raises(ValueError, match="kind must be"):
        two_sample("augment", "x", [1], [1], "ordinal")


def test_report_table_and_dict():
    r = Report("demo").add(Check("train", "loss", "0.0e+00", True, "≤ 1e-05")).add(
        [Check("data", "img", "max 3.00", False, "≤ 1 grey level", "BGR?")])
    assert not r.ok and r.failed_stages() == ["data"]
    lines = r.table().splitlines()
    assert lines[0].split() == ["stage", "check", "measured", "tolerance", "result", "note"]
    assert lines[2].split()[:2] == ["data", "img"] and "FAIL" in lines[2]  # stage order: data before train
    assert lines[-1] == "parity demo: PARITY FAILED: 1 check(s); stages ['data'] (2 checks)"
    assert r.to_dict()["checks"][1]["name"] == "img"
    with pytest.raises(ValueError, match="unknown parity stage"):
        Check("training", "x", "", True)


def test_record_round_trip(tmp_path):
    rec = {"losses": torch.tensor([1.0, 2.0]), "names": [("a.jpg", 3)], "seed": 4}
    path = save_record(tmp_path / "sub" / "r.pt", rec)
    back = load_record(path)
    assert back["seed"] == 4 and back["names"] == [("a.jpg", 3)] and torch.equal(back["losses"], rec["losses"])
    with pytest.raises(FileNotFoundError, match="parity recording .* not found"):
        load_record(tmp_path / "missing.pt")
    assert state_digest({"a": torch.ones(2)}) != state_digest({"a": torch.ones(2) + 1e-7})


def test_upstream_code_isolates_modules_and_stands_in_for_mamba(tmp_path):
    (tmp_path / "dataset.py").write_text("WHO = 'checkout'\n")
    (tmp_path / "scan.py").write_text("from mamba_ssm.ops.selective_scan_interface import selective_scan_fn\n"
                                      "from mamba_ssm import selective_scan_fn as again\n")
    outside = type(sys)("dataset")
    outside.WHO = "outside"
    sys.modules["dataset"] = outside
    try:
        report = Report()
        with upstream_code(tmp_path, report=report) as code:
            assert code.import_module("dataset").WHO == "checkout"
            scan = code.import_module("scan")
            from ferlib.ops.selective_scan import selective_scan

            u = torch.randn(1, 4, 6)
            A, B, C, D = -torch.rand(4, 2), torch.randn(1, 2, 6), torch.randn(1, 2, 6), torch.randn(4)
            torch.testing.assert_close(scan.selective_scan_fn(u, u.abs(), A, B, C, D, delta_softplus=True),
                                       selective_scan(u, u.abs(), A, B, C, D, None, True, backend="reference"))
        assert sys.modules["dataset"] is outside and "scan" not in sys.modules
        assert "mamba_ssm" not in sys.modules or not getattr(sys.modules["mamba_ssm"], "__ferlib_standin__", False)
        if report.checks:  # mamba_ssm does not import on this machine: the table says so
            assert report.checks[0].name == "mamba_ssm" and "stand-in" in report.checks[0].value
    finally:
        sys.modules.pop("dataset", None)


def test_run_parity_names_the_missing_checkout_and_the_fix(tmp_path):
    assert "emonet" in list_parity()
    with pytest.raises(ParityInputError, match=r"checkout .*nope does not exist; fix: git clone "
                                               r"https://github.com/xiayu-cell/EMO-Net .*nope"):
        run_parity("emonet", ParityOptions(upstream=tmp_path / "nope"))
    with pytest.raises(ParityInputError, match="no parity adapter for 'nosuchpaper'; papers with one: .*emonet"):
        run_parity("nosuchpaper", {"upstream": tmp_path})
