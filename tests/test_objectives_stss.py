"""REPA, TRD, TSA and M-TSA against plain references (loops or full N x N matrices), values and gradients in
float64; their invariances; the chunked computation equal to the full one and never holding an N x N tensor."""

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from physalign.objectives import motion_mask, repa_loss, stss_row_sum, trd_loss, tsa_loss

GRID = (3, 2, 3)  # F, H, W: N = 18, H*W = 6


def features(channels, batch=2, seed=0, grid=GRID):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, *grid, channels, generator=g, dtype=torch.float64).requires_grad_()


def grads(loss, *inputs):
    return torch.autograd.grad(loss, inputs)


def close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def full_stss(x):
    """(B, F, H, W, C) -> R (B, N, N) of channel-normalised tokens."""
    e = x.flatten(1, 3)
    e = e / e.norm(dim=-1, keepdim=True)
    return e @ e.transpose(1, 2)


# ---- plain references -------------------------------------------------------------------------------------

def repa_loop(s, t):
    cos = [s[b, f, h, w] @ t[b, f, h, w] / (s[b, f, h, w].norm() * t[b, f, h, w].norm())
           for b in range(s.shape[0]) for f in range(s.shape[1]) for h in range(s.shape[2]) for w in range(s.shape[3])]
    return -torch.stack(cos).mean()


def trd_full(s, t, margin):
    return ((full_stss(s) - full_stss(t)).abs() - margin).relu().mean()


def tsa_loop(s, t, tau, mask=None):
    """Σ over queries (b, i) in the mask and frames f of KL(softmax(R_t[i, f]/tau) || softmax(R_s[i, f]/tau)),
    written out term by term, divided by |M| F."""
    rs, rt = full_stss(s), full_stss(t)
    b_, frames, hw = s.shape[0], s.shape[1], s.shape[2] * s.shape[3]
    mask = torch.ones(s.shape[:4], dtype=torch.bool) if mask is None else mask
    total, count = 0.0, 0
    for b in range(b_):
        for i in range(rs.shape[1]):
            if not mask[b].flatten()[i]:
                continue
            count += 1
            for f in range(frames):
                keys = slice(f * hw, (f + 1) * hw)
                p_t = torch.softmax(rt[b, i, keys] / tau, 0)
                p_s = torch.softmax(rs[b, i, keys] / tau, 0)
                total = total + (p_t * (p_t.log() - p_s.log())).sum()
    return total / (count * frames)


def tsa_full(s, t, tau):
    """The plain full-matrix version (what VideoREPA-style code would do)."""
    frames = s.shape[1]
    log_s = (full_stss(s).unflatten(-1, (frames, -1)) / tau).log_softmax(-1)
    log_t = (full_stss(t).unflatten(-1, (frames, -1)) / tau).log_softmax(-1)
    return F.kl_div(log_s, log_t, log_target=True, reduction="sum") / (log_s.shape[0] * log_s.shape[1] * frames)


# ---- values and gradients against the references ----------------------------------------------------------

def test_repa_matches_loop_and_is_minus_one_for_identical():
    s, t = features(5), features(5, seed=1)
    close(repa_loss(s, t), repa_loop(s, t))
    for a, b in zip(grads(repa_loss(s, t), s, t), grads(repa_loop(s, t), s, t)):
        close(a, b)
    close(repa_loss(s, s), torch.tensor(-1.0, dtype=torch.float64))
    close(repa_loss(s, 3 * s), torch.tensor(-1.0, dtype=torch.float64))  # cosine: scale-free
    close(repa_loss(s, -s), torch.tensor(1.0, dtype=torch.float64))


@pytest.mark.parametrize("margin", [0.1, 0.3])
def test_trd_matches_full_matrix(margin):
    s, t = features(5), features(7, seed=1)  # the channel counts may differ: only relations are compared
    loss = trd_loss(s, t, margin=margin, chunk_size=5)
    close(loss, trd_full(s, t, margin))
    for a, b in zip(grads(loss, s, t), grads(trd_full(s, t, margin), s, t)):
        close(a, b)


def test_trd_zero_within_margin_and_for_identical_relations():
    s = features(5)
    assert trd_loss(s, s.detach()).item() == 0
    assert trd_loss(s, 2 * s.detach()).item() == 0
    assert trd_loss(s, features(5, seed=1), margin=2.0).item() == 0  # |S_s - S_t| <= 2 always


@pytest.mark.parametrize("tau", [0.1, 1.0])
def test_tsa_matches_term_by_term_loop(tau):
    s, t = features(5), features(4, seed=1)
    loss = tsa_loss(s, t, tau=tau, chunk_size=4)
    close(loss, tsa_loop(s, t, tau))
    for a, b in zip(grads(loss, s, t), grads(tsa_loop(s, t, tau), s, t)):  # student and teacher gradients
        close(a, b)


def test_mtsa_counts_only_masked_queries():
    s, t = features(5), features(4, seed=1)
    mask = torch.rand(2, *GRID, generator=torch.Generator().manual_seed(3)) < 0.3
    mask[1] = False
    mask[1, 2, 1, 0] = True  # unequal counts per sample: padded rows must not count
    loss = tsa_loss(s, t, query_mask=mask, chunk_size=3)
    close(loss, tsa_loop(s, t, 0.1, mask))
    for a, b in zip(grads(loss, s, t), grads(tsa_loop(s, t, 0.1, mask), s, t)):
        close(a, b)
    everything = torch.ones(2, *GRID, dtype=torch.bool)
    close(tsa_loss(s, t, query_mask=everything), tsa_loss(s, t))


def test_mtsa_takes_motion_mask_on_the_teacher_grid():
    s, t = features(5), features(4, seed=1)
    clip = torch.rand(2, 3, 6, 8, 9, generator=torch.Generator().manual_seed(2))  # tubelets 2 x 4 x 3
    mask = motion_mask(clip, GRID, ratio=0.5)  # 3 of the 6 tokens of each frame
    close(tsa_loss(s, t, query_mask=mask), tsa_loop(s, t, 0.1, mask))


def test_mtsa_empty_mask_is_zero_with_zero_gradient():
    s, t = features(5), features(4, seed=1)
    loss = tsa_loss(s, t, query_mask=torch.zeros(2, *GRID, dtype=torch.bool))
    assert loss.item() == 0
    assert grads(loss, s)[0].abs().max().item() == 0


# ---- invariances ------------------------------------------------------------------------------------------

def test_tsa_is_zero_when_student_equals_teacher():
    s = features(5)
    assert abs(tsa_loss(s, s.detach()).item()) < 1e-12
    assert abs(tsa_loss(s, 4 * s.detach()).item()) < 1e-12  # tokens are normalised first
    assert grads(tsa_loss(s, s.detach()), s)[0].abs().max().item() < 1e-10
    assert tsa_loss(s, features(5, seed=1)).item() > 0


def test_tsa_kl_direction_is_teacher_to_student():
    """One query, one frame of two keys: teacher probabilities (p, 1-p), student (q, 1-q) with closed forms;
    KL(t || s) != KL(s || t) here, so the direction is pinned."""
    tau = 1.0
    # F=1, H=1, W=2: tokens at angles; R = cos of angle differences.
    def tokens(angle):
        return torch.tensor([[[[[1.0, 0.0], [float(torch.cos(angle)), float(torch.sin(angle))]]]]],
                            dtype=torch.float64)
    t, s = tokens(torch.tensor(0.2)), tokens(torch.tensor(2.5))
    r_t, r_s = full_stss(t)[0], full_stss(s)[0]  # (2, 2)
    p = torch.softmax(r_t / tau, -1)
    q = torch.softmax(r_s / tau, -1)
    t_to_s = (p * (p / q).log()).sum() / 2  # mean over the 2 queries, F = 1
    s_to_t = (q * (q / p).log()).sum() / 2
    assert abs(t_to_s - s_to_t) > 1e-3
    close(tsa_loss(s, t, tau=tau), t_to_s)


def test_tsa_student_gradient_is_probability_mismatch():
    """dL/dR_s[i, key] = (P^s - P^t) / (tau N F) for the un-normalised logits: check through the row engine."""
    s, t, tau = features(5), features(4, seed=1), 0.5
    frames, n = GRID[0], 18
    rs = full_stss(s).detach().requires_grad_()
    log_s = (rs.unflatten(-1, (frames, -1)) / tau).log_softmax(-1)
    log_t = (full_stss(t).detach().unflatten(-1, (frames, -1)) / tau).log_softmax(-1)
    loss = F.kl_div(log_s, log_t, log_target=True, reduction="sum") / (2 * n * frames)
    expected = (log_s.exp() - log_t.exp()).flatten(-2) / (tau * 2 * n * frames)
    close(grads(loss, rs)[0], expected)


def test_tsa_depends_on_temperature_and_rejects_bad_one():
    s, t = features(5), features(4, seed=1)
    assert tsa_loss(s, t, tau=0.1).item() != pytest.approx(tsa_loss(s, t, tau=1.0).item())
    with pytest.raises(ValueError, match="tau"):
        tsa_loss(s, t, tau=0.0)


# ---- chunking ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("chunk", [1, 4, 5, 7, 17, 18, 19, 1000])  # N = 18: dividing it or not, and above
def test_chunked_equals_full_for_every_chunk_size(chunk):
    s, t = features(6), features(4, seed=1)
    mask = torch.rand(2, *GRID, generator=torch.Generator().manual_seed(chunk)) < 0.5
    cases = [
        (tsa_loss(s, t, chunk_size=chunk), tsa_full(s, t, 0.1)),
        (trd_loss(s, t, chunk_size=chunk), trd_full(s, t, 0.1)),
        (tsa_loss(s, t, query_mask=mask, chunk_size=chunk), tsa_loop(s, t, 0.1, mask)),
    ]
    for chunked, full in cases:
        close(chunked, full)
        for a, b in zip(grads(chunked, s, t), grads(full, s, t)):
            close(a, b)


def test_chunked_float32_matches_float64_reference():
    s, t = features(8, batch=1), features(8, batch=1, seed=1)
    loss = tsa_loss(s.float(), t.float(), chunk_size=5)
    torch.testing.assert_close(loss.double(), tsa_full(s, t, 0.1), rtol=1e-4, atol=1e-6)


def test_no_grad_and_frozen_teacher():
    s, t = features(5), features(4, seed=1).detach()
    with torch.no_grad():
        value = tsa_loss(s, t, chunk_size=5)
    assert not value.requires_grad
    close(value, tsa_full(s, t, 0.1).detach())
    (g,) = grads(tsa_loss(s, t), s)  # teacher without grad: only the student's
    close(g, grads(tsa_full(s, t, 0.1), s)[0])


def test_double_backward_is_refused():
    s, t = features(5), features(4, seed=1)
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(tsa_loss(s, t), s, create_graph=True)


class LargestTensor(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for x in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(x, torch.Tensor):
                self.numel = max(self.numel, x.numel())
        return out


@pytest.mark.parametrize("loss", [tsa_loss, trd_loss])
def test_no_tensor_of_n_squared_is_ever_made(loss):
    """Forward and backward: the largest tensor any op produces is a (B, chunk, N) block of rows."""
    grid, chunk = (4, 6, 6), 16  # N = 144
    s, t = features(8, batch=2, grid=grid), features(8, batch=2, seed=1, grid=grid)
    with LargestTensor() as probe:
        torch.autograd.grad(loss(s, t, chunk_size=chunk), (s, t))
    assert probe.numel == 2 * chunk * 144
    with LargestTensor() as probe:
        torch.autograd.grad(tsa_full(s, t, 0.1), (s, t))
    assert probe.numel == 2 * 144 * 144  # the probe sees the plain version's matrices


def test_row_engine_sums_any_row_loss():
    s, t = features(5), features(4, seed=1)
    mask = torch.rand(2, *GRID, generator=torch.Generator().manual_seed(5)) < 0.5
    got = stss_row_sum(s, t, lambda rs, rt: (rs * rt.exp()).sum(-1), mask, chunk_size=4)
    rs, rt = full_stss(s), full_stss(t)
    expected = ((rs * rt.exp()).sum(-1) * mask.flatten(1)).sum()
    close(got, expected)
    for a, b in zip(grads(got, s, t), grads(expected, s, t)):
        close(a, b)


# ---- shape contracts --------------------------------------------------------------------------------------

@pytest.mark.parametrize("fn", [repa_loss, trd_loss, tsa_loss])
def test_bad_shapes_are_named(fn):
    s = features(5)
    for bad in (features(5, grid=(3, 2, 2)), features(5)[..., 0], features(5, batch=3)):
        with pytest.raises(ValueError, match=r"\[2, 3, 2, 3, 5\]"):
            fn(s, bad)


def test_repa_needs_equal_channels_and_masks_their_shape():
    with pytest.raises(ValueError, match=r"\[2, 3, 2, 3, 4\]"):
        repa_loss(features(5), features(4))
    s, t = features(5), features(4)
    for bad in (torch.ones(2, 3, 2, 2, dtype=torch.bool), torch.ones(2, *GRID)):
        with pytest.raises(ValueError, match="query_mask"):
            tsa_loss(s, t, query_mask=bad)
    with pytest.raises(ValueError, match="chunk_size"):
        tsa_loss(s, t, chunk_size=0)
