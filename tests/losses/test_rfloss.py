"""RFLoss (MMFRM §5): the as-coded constant against the upstream value, the intended per-class form by hand."""
import pytest
import torch
import torch.nn.functional as F

from ferlib.losses import create_loss, list_losses
from ferlib.losses.rfloss import rfloss
from ferlib.models import ModelOutput
from ferlib.testing import load_ref

REF = load_ref("mmfrm_rfloss_ref.pt")
CASES = sorted(REF)


def out(logits):
    return ModelOutput(logits, logits, {})


# True-class confidences p = [0.2, 0.6, 0.5, 0.9] for targets [0, 0, 1, 2] (logits = log-probabilities).
SMALL_PROBS = torch.tensor([[0.2, 0.5, 0.3], [0.6, 0.2, 0.2], [0.1, 0.5, 0.4], [0.05, 0.05, 0.9]])
SMALL_TARGETS = torch.tensor([0, 0, 1, 2])


def test_losses_are_registered():
    assert {"rfloss", "ce_rfloss"} <= set(list_losses())


@pytest.mark.parametrize("case", CASES)
def test_as_coded_reproduces_upstream_value(case):
    ref = REF[case]
    assert ref["upstream_RR_loss2_type"] == "float"
    logits = ref["logits"].clone().requires_grad_(True)
    value = create_loss("rfloss", variant="as_coded")(out(logits), ref["targets"])
    assert abs(value.item() - ref["upstream_RR_loss2"]) < 1e-6
    assert not value.requires_grad                    # upstream's math.sqrt strips the gradient


@pytest.mark.parametrize("case", CASES)
def test_intended_matches_reference_closed_form(case):
    ref = REF[case]
    value = rfloss(ref["logits"], ref["targets"], "intended")
    assert abs(value.item() - ref["closed_form_per_class"]) < 1e-6


@pytest.mark.parametrize("case", CASES)
def test_epoch_gated_mix_reproduces_upstream_loss(case):
    ref = REF[case]
    loss = create_loss("ce_rfloss", variant="as_coded", num_classes=7)
    for epoch, key in ((0, "loss_epoch_le_50"), (49, "loss_epoch_le_50"), (50, "loss_epoch_gt_50"), (199, "loss_epoch_gt_50")):
        loss.set_epoch(epoch)
        assert abs(loss(out(ref["logits"]), ref["targets"]).item() - ref[key]) < 1e-5, (epoch, key)


def test_as_coded_small_case_by_hand():
    logits = SMALL_PROBS.log()
    # m ≈ [0.4, 0.5, 0.9]; every sample against every class mean:
    # k=0: .2+.2+.1+.5, k=1: .3+.1+0+.4, k=2: .7+.3+.4+0 → 3.2; classes 3..6 are absent (m=0): 4·Σp = 8.8.
    assert rfloss(logits, SMALL_TARGETS, "as_coded", num_classes=7).item() == pytest.approx(12.0 / 64, abs=1e-4)
    assert rfloss(logits, SMALL_TARGETS, "as_coded", num_classes=3).item() == pytest.approx(3.2 / 64, abs=1e-4)


def test_intended_small_case_by_hand():
    logits = SMALL_PROBS.log()
    # class 0: |0.2−0.4| + |0.6−0.4| = 0.4; classes 1 and 2 have one sample each → 0.
    assert rfloss(logits, SMALL_TARGETS, "intended").item() == pytest.approx(0.4 / 64, abs=1e-7)
    assert rfloss(logits, SMALL_TARGETS, "intended", normalizer="batch").item() == pytest.approx(0.4 / 4, abs=1e-7)
    same = torch.tensor([0.3, 0.3]).log()[:, None].expand(2, 3) + torch.tensor([[0.0, 1.0, 2.0], [0.0, 1.0, 2.0]])
    assert rfloss(same, torch.tensor([0, 0]), "intended").item() == pytest.approx(0.0, abs=1e-7)


def test_intended_is_differentiable_and_pulls_a_class_together():
    logits = SMALL_PROBS.log().requires_grad_(True)
    value = rfloss(logits, SMALL_TARGETS, "intended")
    value.backward()
    grad = logits.grad
    # d/dp of |p0 − m| + |p1 − m| = |p1 − p0|: raising p0 (below the mean) and lowering p1 reduce it.
    assert grad[0, 0] < 0 and grad[1, 0] > 0
    assert torch.all(grad[2:] == 0)                   # singleton classes have no dispersion
    stepped = rfloss((logits - 0.5 * grad.sign()).detach(), SMALL_TARGETS, "intended")
    assert stepped < value


def test_as_coded_mix_has_only_the_scaled_ce_gradient():
    ref = REF["random_bs32_all_classes"]
    logits = ref["logits"].clone().requires_grad_(True)
    loss = create_loss("ce_rfloss", variant="as_coded")
    loss.set_epoch(60)
    loss(out(logits), ref["targets"]).backward()
    ce_logits = ref["logits"].clone().requires_grad_(True)
    (0.9 * F.cross_entropy(ce_logits, ref["targets"])).backward()
    torch.testing.assert_close(logits.grad, ce_logits.grad)


def test_intended_mix_adds_a_gradient_and_off_is_plain_ce():
    ref = REF["random_bs32_all_classes"]
    intended = create_loss("ce_rfloss", variant="intended", rf_weight=0.2)
    intended.set_epoch(50)
    logits = ref["logits"].clone().requires_grad_(True)
    intended(out(logits), ref["targets"]).backward()
    ce_logits = ref["logits"].clone().requires_grad_(True)
    (0.9 * F.cross_entropy(ce_logits, ref["targets"])).backward()
    assert not torch.allclose(logits.grad, ce_logits.grad)
    off = create_loss("ce_rfloss", variant="off")
    off.set_epoch(150)
    assert not off.mixing
    assert off(out(ref["logits"]), ref["targets"]).item() == pytest.approx(ref["ce"], abs=1e-5)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="variant"):
        create_loss("ce_rfloss", variant="per_class_typo")
    with pytest.raises(ValueError, match="variant"):
        create_loss("rfloss", variant="off")
    with pytest.raises(ValueError, match="class-index targets"):
        rfloss(torch.zeros(2, 7), torch.zeros(2, 7), "intended")
