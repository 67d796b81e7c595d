"""Flow matching, ΔFM, motion_mask and DiReCT against plain references (values and gradients, float64), their
invariances and their shape errors. REPA / TRD / TSA: tests/test_objectives_stss.py."""

import pytest
import torch

from physalign.objectives import (alignment_condition, contrastive_fm_loss, direct_loss, exclusive_negatives,
                                  flow_matching_loss, mmd_rbf, motion_mask, tubelet_motion, velocity_regularizer)

SHAPE = (4, 2, 3, 4, 4)  # B, C, T, H, W


def video(seed, shape=SHAPE, grad=False):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_(grad)


def close(a, b):
    torch.testing.assert_close(a, torch.as_tensor(b, dtype=torch.float64), rtol=1e-9, atol=1e-12)


def grads(loss, *inputs):
    return torch.autograd.grad(loss, inputs)


def sq(a, b):
    """mean over elements of (a - b)^2, written as a plain sum."""
    return ((a - b) ** 2).sum() / a.numel()


# ---- ΔFM ---------------------------------------------------------------------------------------------------

def test_contrastive_fm_matches_reference_and_reduces_to_fm():
    v = video(0, grad=True)
    x0, eps, nx0, neps = (video(s) for s in (1, 2, 3, 4))
    loss = contrastive_fm_loss(v, x0, eps, nx0, neps, weight=0.3)
    reference = sq(v, eps - x0) - 0.3 * sq(v, neps - nx0)
    close(loss, reference)
    close(grads(loss, v)[0], grads(reference, v)[0])
    close(contrastive_fm_loss(v, x0, eps, nx0, neps, weight=0.0), flow_matching_loss(v, x0, eps))


def test_contrastive_fm_valid_mask_matches_a_per_sample_reference():
    v = video(0, grad=True)
    x0, eps, nx0, neps = (video(s) for s in (1, 2, 3, 4))
    valid = torch.tensor([True, False, True, False])
    loss = contrastive_fm_loss(v, x0, eps, nx0, neps, weight=0.3, valid=valid)
    reference = sq(v, eps - x0) - 0.3 * sum(sq(v[i], neps[i] - nx0[i]) for i in (0, 2)) / 4
    close(loss, reference)
    close(grads(loss, v)[0], grads(reference, v)[0])
    every = contrastive_fm_loss(v, x0, eps, nx0, neps, weight=0.3, valid=torch.ones(4, dtype=torch.bool))
    close(every, contrastive_fm_loss(v, x0, eps, nx0, neps, weight=0.3))
    with pytest.raises(ValueError, match="valid must be a bool tensor of shape"):
        contrastive_fm_loss(v, x0, eps, nx0, neps, valid=torch.ones(3, dtype=torch.bool))


def test_contrastive_fm_names_bad_shapes():
    a, b = video(0), video(1, shape=(4, 2, 3, 4, 5))
    with pytest.raises(ValueError, match=r"\[4, 2, 3, 4, 5\]"):
        contrastive_fm_loss(a, a, a, b, a)


def test_exclusive_negatives_never_share_a_group_and_cover_the_others():
    groups = torch.tensor([0, 0, 1, 1, 2, 5])
    seen = torch.zeros(6, 6, dtype=torch.bool)
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        j = exclusive_negatives(groups, g)
        assert (groups[j] != groups).all()
        seen[torch.arange(6), j] = True
    assert torch.equal(seen, groups[:, None] != groups[None, :])  # every allowed partner drawn
    assert (exclusive_negatives(torch.zeros(4, dtype=torch.long)) == -1).all()  # one group: none
    j = exclusive_negatives(torch.arange(5), g)
    assert (j != torch.arange(5)).all() and (j >= 0).all()  # ΔFM: any other sample
    with pytest.raises(ValueError, match=r"\(B,\)"):
        exclusive_negatives(torch.zeros(2, 2, dtype=torch.long))


# ---- motion mask -------------------------------------------------------------------------------------------

def moving_square(frames=8, size=16, token=4, tubelet=2):
    """A 4x4-pixel square aligned to the token grid, one token further right every token frame (still within
    a tubelet), on a black background: token frame f has it at token (row 1, column f)."""
    v = torch.zeros(1, 3, frames, size, size)
    for t in range(frames):
        col = t // tubelet
        v[0, :, t, token:2 * token, col * token:(col + 1) * token] = torch.tensor([1.0, 0.5, 0.2])[:, None, None]
    return v


def test_motion_mask_picks_the_moving_square():
    mask = motion_mask(moving_square(), grid=(4, 4, 4), ratio=2 / 16)  # k = 2 tokens per frame
    assert mask.shape == (1, 4, 4, 4) and mask.dtype == torch.bool
    for f in range(1, 4):
        expected = torch.zeros(4, 4, dtype=torch.bool)
        expected[1, f - 1] = expected[1, f] = True  # where it left and where it arrived
        assert torch.equal(mask[0, f], expected), f
    assert torch.equal(mask[0, 0], mask[0, 1])
    assert (mask.flatten(2).sum(-1) == 2).all()


def test_motion_mask_on_noisy_uint8_video_still_finds_motion():
    v = moving_square() * 200 + torch.rand(1, 3, 8, 16, 16, generator=torch.Generator().manual_seed(0)) * 20
    mask = motion_mask(v.to(torch.uint8), grid=(4, 4, 4), ratio=0.125)
    for f in range(1, 4):
        assert mask[0, f, 1, f - 1] and mask[0, f, 1, f]


def test_tubelet_motion_matches_loop():
    v = video(0, shape=(2, 3, 6, 4, 6))
    delta = tubelet_motion(v, (3, 2, 3))  # tubelets 2 x 2 x 2
    for b in range(2):
        for f in range(1, 3):
            for h in range(2):
                for w in range(3):
                    tube = lambda g: v[b, :, 2 * g:2 * g + 2, 2 * h:2 * h + 2, 2 * w:2 * w + 2]  # noqa: E731
                    close(delta[b, f, h, w], (tube(f) - tube(f - 1)).abs().sum())
    close(delta[:, 0], delta[:, 1])


def test_motion_mask_rounds_ratio_and_rejects_bad_arguments():
    v = video(0, shape=(2, 1, 4, 10, 15))
    assert (motion_mask(v, (2, 10, 15), ratio=0.2).flatten(2).sum(-1) == 30).all()  # VideoREPA's grid: 20% of 150
    assert (motion_mask(v, (2, 10, 15), ratio=1e-4).flatten(2).sum(-1) == 1).all()
    for grid in ((3, 10, 15), (2, 4, 15), (1, 10, 15)):
        with pytest.raises(ValueError, match="grid"):
            motion_mask(v, grid)
    with pytest.raises(ValueError, match="ratio"):
        motion_mask(v, (2, 10, 15), ratio=0)
    with pytest.raises(ValueError, match=r"\[2, 4, 10, 15\]"):
        motion_mask(v[:, 0], (2, 10, 15))


# ---- DiReCT pieces -----------------------------------------------------------------------------------------

def mmd_loop(x, y):
    z = torch.cat([x, y])
    d2 = [((z[p] - z[q]) ** 2).sum().item() for p in range(len(z)) for q in range(p + 1, len(z))]
    h = sorted(d2)[(len(d2) - 1) // 2]  # the lower median, as torch.median

    def k(a, b):
        return sum(torch.exp(-((a[i] - b[j]) ** 2).sum() / h) for i in range(len(a)) for j in range(len(b))) / (
            len(a) * len(b))

    return k(x, x) + k(y, y) - 2 * k(x, y)


def test_mmd_matches_loop_and_vanishes_on_equal_samples():
    x, y = video(0, shape=(5, 3), grad=True), video(1, shape=(4, 3))
    close(mmd_rbf(x, y), mmd_loop(x, y))
    close(grads(mmd_rbf(x, y), x)[0], grads(mmd_loop(x, y), x)[0])
    assert mmd_rbf(x, y).item() > 0
    same = mmd_rbf(x, x.detach())
    assert abs(same.item()) < 1e-12 and grads(same, x)[0].abs().max().item() < 1e-12
    with pytest.raises(ValueError, match=r"\[4, 2\]"):
        mmd_rbf(x, y[:, :2])


def test_velocity_regularizers_match_references():
    v, ref = video(0, grad=True), video(1)
    pooled = lambda a: a.mean((3, 4)).flatten(1)  # noqa: E731  (B, C*T)
    dims = (0, 2, 3, 4)
    cases = {
        "mmd": mmd_loop(pooled(v), pooled(ref)),
        "moments": ((v.mean(dims) - ref.mean(dims)) ** 2 + (v.std(dims) - ref.std(dims)) ** 2).mean(),
        "l2": sq(v, ref),
    }
    for kind, expected in cases.items():
        got = velocity_regularizer(v, ref, kind)
        close(got, expected)
        close(grads(got, v)[0], grads(expected, v)[0])
        assert abs(velocity_regularizer(v, v.detach(), kind).item()) < 1e-12, kind
    ref.requires_grad_()  # the frozen model's velocities get no gradient
    for kind in cases:
        assert torch.autograd.grad(velocity_regularizer(v, ref, kind), ref, allow_unused=True)[0] is None
    with pytest.raises(ValueError, match="kind"):
        velocity_regularizer(v, ref, "kl")


def test_alignment_condition_sign():
    u = torch.zeros(2, 3)
    v = torch.tensor([[1.0, 0, 0], [1.0, 0, 0]])
    w = torch.tensor([[2.0, 0, 0], [0.0, 0, 0]])  # beyond v away from u: pushing v from w moves it to u
    assert alignment_condition(v, u, w).tolist() == [True, False]


def direct_reference(v, x0, eps, j, w_micro, micro_valid, v_ref, lm, lu, lr, gate):
    """Per-sample loop of DiReCT's terms."""
    b = v.shape[0]
    u = eps - x0
    fm = sq(v, u)
    macro = micro = 0.0
    aligned = []
    for i in range(b):
        for w, valid, kind in ((u[j[i]] if j[i] >= 0 else None, j[i] >= 0, "macro"),
                               (None if w_micro is None else w_micro[i], micro_valid[i], "micro")):
            if w is None or not valid:
                continue
            ok = bool(((u[i] - v[i].detach()) * (v[i].detach() - w)).sum() >= 0)
            aligned.append(ok)
            if ok or not gate:
                term = sq(v[i], w) / b
                macro, micro = (macro + term, micro) if kind == "macro" else (macro, micro + term)
    reg = mmd_loop(v.mean((3, 4)).flatten(1), v_ref.mean((3, 4)).flatten(1))
    return fm - lm * macro - lu * micro + lr * reg, sum(aligned) / len(aligned)


@pytest.mark.parametrize("gate", [False, True])
def test_direct_matches_per_sample_reference(gate):
    v = video(0, grad=True)
    x0, eps, x0_micro, v_ref = video(1), video(2), video(3), video(4)
    partition = torch.tensor([0, 0, 1, 2])
    micro_valid = torch.tensor([True, True, False, True])
    j = exclusive_negatives(partition, torch.Generator().manual_seed(7))
    expected, aligned = direct_reference(v, x0, eps, j, eps - x0_micro, micro_valid, v_ref, 0.2, 0.3, 0.5, gate)
    terms = direct_loss(v, x0, eps, partition, micro_x0=x0_micro, micro_valid=micro_valid, v_ref=v_ref,
                        macro_weight=0.2, micro_weight=0.3, reg_weight=0.5, gate=gate,
                        generator=torch.Generator().manual_seed(7))
    close(terms["loss"], expected)
    close(grads(terms["loss"], v)[0], grads(expected, v)[0])
    close(terms["aligned_frac"], aligned)
    assert set(terms) >= {"loss", "fm", "macro", "micro", "reg", "aligned_frac"}
    assert all(not t.requires_grad for k, t in terms.items() if k != "loss")
    assert terms["micro_frac"].item() <= 0.75


def test_direct_gate_keeps_only_aligned_samples():
    u = torch.zeros(2, 1, 1, 1, 3, dtype=torch.float64)  # x0 = 0, eps = 0
    v = torch.tensor([1.0, 0, 0], dtype=torch.float64).expand(2, 1, 1, 1, 3).clone()
    w = torch.tensor([[2.0, 0, 0], [0.0, 0, 0]], dtype=torch.float64).reshape(2, 1, 1, 1, 3)
    partition = torch.zeros(2, dtype=torch.long)  # one partition: no macro negative
    common = dict(micro_v=w, macro_weight=0.0, micro_weight=1.0, reg_weight=0.0)
    plain = direct_loss(v, u, u, partition, **common)
    gated = direct_loss(v, u, u, partition, gate=True, **common)
    close(plain["aligned_frac"], 0.5)
    close(plain["micro"], (1.0 / 3 + 1.0 / 3) / 2)
    close(gated["micro"], (1.0 / 3) / 2)  # only sample 0 satisfies the condition
    close(gated["micro_frac"], 0.5)
    assert plain["macro"].item() == 0 and plain["macro_frac"].item() == 0


def test_direct_reduces_to_fm_and_accepts_either_micro_form():
    v = video(0, grad=True)
    x0, eps, x0_micro = video(1), video(2), video(3)
    partition = torch.tensor([0, 1, 0, 1])
    terms = direct_loss(v, x0, eps, partition, micro_x0=x0_micro, macro_weight=0, micro_weight=0)
    close(terms["loss"], flow_matching_loss(v, x0, eps))
    close(terms["reg"], 0.0)
    a = direct_loss(v, x0, eps, partition, micro_x0=x0_micro, generator=torch.Generator().manual_seed(1))
    b = direct_loss(v, x0, eps, partition, micro_v=eps - x0_micro, generator=torch.Generator().manual_seed(1))
    for k in a:
        close(a[k], b[k])
    none = direct_loss(v, x0, eps, partition)
    assert none["micro"].item() == 0 and none["micro_frac"].item() == 0 and none["aligned_micro"].item() == 0


def test_direct_macro_negatives_are_partition_exclusive():
    """Each macro negative is the target of a sample of another partition: with the targets made equal to
    the partition id, the macro term reveals which targets were used."""
    b = 6
    partition = torch.tensor([0, 0, 0, 1, 1, 2])
    eps = partition.double().reshape(b, 1, 1, 1, 1).expand(b, 1, 1, 1, 2).clone()
    x0 = torch.zeros_like(eps)
    v = torch.zeros_like(eps)  # C(v, u_j) = partition[j]^2
    for seed in range(20):
        macro = direct_loss(v, x0, eps, partition, generator=torch.Generator().manual_seed(seed))["macro"]
        j = exclusive_negatives(partition, torch.Generator().manual_seed(seed))
        close(macro, (partition[j].double() ** 2).sum() / b)
        assert (partition[j] != partition).all()


def test_direct_names_bad_inputs():
    v = video(0)
    with pytest.raises(ValueError, match=r"\[4, 2, 3, 4, 5\]"):
        direct_loss(v, v, v, torch.zeros(4, dtype=torch.long), v_ref=video(1, shape=(4, 2, 3, 4, 5)))
    with pytest.raises(ValueError, match="partition"):
        direct_loss(v, v, v, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="not both"):
        direct_loss(v, v, v, torch.zeros(4, dtype=torch.long), micro_x0=v, micro_v=v)
    with pytest.raises(ValueError, match="micro_valid"):
        direct_loss(v, v, v, torch.zeros(4, dtype=torch.long), micro_x0=v, micro_valid=torch.ones(4))

