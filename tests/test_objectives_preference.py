"""Flow-DPO levels and DiffPhy's judged terms against plain per-sample references, values and gradients."""

import math

import pytest
import torch

from physalign.objectives import flow_dpo_loss, phenomena_loss, predicted_x0, rating_loss

pytestmark = pytest.mark.usefixtures("one_thread")


def plain_level_mse(e: torch.Tensor, level: str) -> float:
    """One sample's error (C, T, H, W), written out element by element."""
    c, t, h, w = e.shape
    if level in ("instance", "semantic"):
        cells = [e[ci, ti, hi, wi] for ci in range(c) for ti in range(t) for hi in range(h) for wi in range(w)]
    elif level == "state":
        cells = [e[ci, ti, hi, wi] for ci in range(c) for ti in (0, t - 1) for hi in range(h) for wi in range(w)]
    else:
        cells = [e[ci, ti + 1, hi, wi] - e[ci, ti, hi, wi] for ci in range(c) for ti in range(t - 1) for hi in range(h) for wi in range(w)]
    return sum(x * x for x in cells) / len(cells)


def plain_dpo(ew, el, rw, rl, beta, level):
    losses, margins, right = [], [], []
    for i in range(len(ew)):
        delta = (plain_level_mse(ew[i], level) - plain_level_mse(rw[i], level)) - (plain_level_mse(el[i], level) - plain_level_mse(rl[i], level))
        z = -beta / 2 * delta
        losses.append(torch.log1p(torch.exp(-z)))  # -log sigmoid(z)
        margins.append(z)
        right.append(float(delta < 0))
    return sum(losses) / len(losses), sum(margins) / len(margins), sum(right) / len(right)


@pytest.mark.parametrize("level", ["instance", "state", "motion", "semantic"])
def test_flow_dpo_matches_the_plain_reference_with_gradients(level):
    g = torch.Generator().manual_seed(0)
    shape = (3, 2, 4, 2, 3)
    ew, el = (torch.randn(shape, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(2))
    rw, rl = (torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(2))
    beta = 0.7  # small, so the sigmoid is not saturated and the gradients are informative
    terms = flow_dpo_loss(ew, el, rw, rl, beta=beta, level=level)
    ref_loss, ref_margin, ref_acc = plain_dpo(ew, el, rw, rl, beta, level)
    assert torch.allclose(terms["loss"], ref_loss)
    assert terms["margin"].item() == pytest.approx(float(ref_margin.detach()))
    assert terms["accuracy"].item() == pytest.approx(ref_acc)
    grads = torch.autograd.grad(terms["loss"], (ew, el))
    ref_grads = torch.autograd.grad(ref_loss, (ew, el))
    for a, b in zip(grads, ref_grads):
        assert torch.allclose(a, b) and a.abs().sum() > 0


def test_flow_dpo_invariances():
    g = torch.Generator().manual_seed(1)
    ew, el = torch.randn(4, 2, 3, 2, 2, generator=g), torch.randn(4, 2, 3, 2, 2, generator=g)
    same = flow_dpo_loss(ew, el, ew, el)  # the model is the reference: Δ = 0, loss log 2, no preference
    assert same["loss"].item() == pytest.approx(math.log(2)) and same["margin"].item() == 0.0 and same["accuracy"].item() == 0.0
    better = flow_dpo_loss(0.5 * ew, el, ew, el)  # the model fits the winner better than the reference does
    assert better["loss"].item() < math.log(2) and better["accuracy"].item() == 1.0 and better["margin"].item() > 0
    # the state level sees only the boundary frames: a change in a middle frame does not move it
    moved = ew.clone()
    moved[:, :, 1] += 3.0
    assert flow_dpo_loss(moved, el, ew, el, level="state")["loss"].item() == pytest.approx(math.log(2))
    # the motion level ignores an error that is constant over time
    assert flow_dpo_loss(ew + 5.0 * torch.ones(4, 2, 1, 2, 2), el, ew, el, level="motion")["loss"].item() == pytest.approx(math.log(2), abs=1e-5)
    with pytest.raises(ValueError, match="level must be one of"):
        flow_dpo_loss(ew, el, ew, el, level="frame")
    with pytest.raises(ValueError, match="must share a shape"):
        flow_dpo_loss(ew, el[:2], ew, el)


def test_reference_errors_carry_no_gradient():
    ew, el = torch.randn(2, 1, 2, 2, 2, requires_grad=True), torch.randn(2, 1, 2, 2, 2)
    rw = torch.randn(2, 1, 2, 2, 2, requires_grad=True)
    flow_dpo_loss(ew, el, rw, el.clone())["loss"].backward()
    assert rw.grad is None and ew.grad is not None


def test_diffphy_terms_match_plain_references_with_gradients():
    g = torch.Generator().manual_seed(2)
    p = torch.rand(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]], dtype=torch.bool)
    plain = sum((p[b, k] - 1) ** 2 for b in range(3) for k in range(4) if mask[b, k]) / 3
    value = phenomena_loss(p, mask)
    assert torch.allclose(value, plain)
    assert torch.allclose(torch.autograd.grad(value, p)[0], torch.autograd.grad(plain, p)[0])
    r = torch.tensor([1.0, 3.0, 5.0], dtype=torch.float64, requires_grad=True)
    plain_r = sum((r[i] / 5.0 - 1) ** 2 for i in range(3)) / 3
    assert torch.allclose(rating_loss(r), plain_r)
    assert torch.allclose(torch.autograd.grad(rating_loss(r), r)[0], torch.autograd.grad(plain_r, r)[0])
    assert rating_loss(torch.full((2,), 5.0)).item() == 0.0  # a perfect rating costs nothing at tau = 5
    with pytest.raises(ValueError, match="tau must be positive"):
        rating_loss(r, tau=0.0)


def test_predicted_x0_inverts_the_path():
    g = torch.Generator().manual_seed(3)
    x0, eps = torch.randn(2, 4, 3, 2, 2, generator=g), torch.randn(2, 4, 3, 2, 2, generator=g)
    t = torch.tensor([0.2, 0.9])
    x_t = (1 - t.view(-1, 1, 1, 1, 1)) * x0 + t.view(-1, 1, 1, 1, 1) * eps
    assert torch.allclose(predicted_x0(x_t, eps - x0, t), x0, atol=1e-6)  # the true velocity gives back x0
    with pytest.raises(ValueError, match="t be \\(B,\\)"):
        predicted_x0(x_t, eps - x0, t[:1])
