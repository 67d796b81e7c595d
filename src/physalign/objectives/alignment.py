"""Representation alignment with a frozen video encoder: REPA, VideoREPA's TRD, TSA and M-TSA.

``student``: projected generator features, ``teacher``: encoder features of the clean video, both
(B, F, H, W, C) on the teacher's token grid, N = F*H*W. TRD and (M-)TSA compare the token relations
R = Ē Ēᵀ (Ē: tokens L2-normalised over channels, (B, N, C)) and never form the N x N matrices at once
(``physalign.objectives.stss``); their channel counts may differ. Gradients reach whichever input requires
grad (usually only the student).
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F

from physalign.objectives.stss import DEFAULT_CHUNK, check_features, check_query_mask, stss_row_sum


def repa_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """REPA: L = -1/(B N) Σ_{b, n} cos(student[b, n], teacher[b, n]); -1 when the two are identical.

    student, teacher: (B, F, H, W, C), one shape (the projector maps the student to the teacher's channels).
    """
    check_features(student, teacher, same_channels=True)
    return -F.cosine_similarity(student, teacher, dim=-1).mean()


def _relation_distance(rows_s: torch.Tensor, rows_t: torch.Tensor, margin: float) -> torch.Tensor:
    return ((rows_s - rows_t).abs() - margin).relu().sum(-1)  # (B, q)


def trd_loss(student: torch.Tensor, teacher: torch.Tensor, margin: float = 0.1,
             chunk_size: int = DEFAULT_CHUNK) -> torch.Tensor:
    """VideoREPA's token relation distillation:

        L = 1/(B N^2) Σ_b Σ_{i, j} relu(|R_s[b, i, j] - R_t[b, i, j]| - margin)

    over all N^2 token pairs, spatial (same frame) and temporal (across frames) alike with one weight, as in
    VideoREPA's code. student (B, F, H, W, Cs), teacher (B, F, H, W, Ct). ``chunk_size`` query rows at a time.
    """
    check_features(student, teacher)
    b, n = student.shape[0], student.shape[1:4].numel()
    total = stss_row_sum(student, teacher, partial(_relation_distance, margin=margin), chunk_size=chunk_size)
    return total / (b * n * n)


def _tempered_kl(rows_s: torch.Tensor, rows_t: torch.Tensor, frames: int, tau: float) -> torch.Tensor:
    log_ps = (rows_s.unflatten(-1, (frames, -1)) / tau).log_softmax(-1)  # (B, q, F, H*W)
    log_pt = (rows_t.unflatten(-1, (frames, -1)) / tau).log_softmax(-1)
    return (log_pt.exp() * (log_pt - log_ps)).sum((-2, -1))  # (B, q)


def tsa_loss(student: torch.Tensor, teacher: torch.Tensor, tau: float = 0.1,
             query_mask: torch.Tensor | None = None, chunk_size: int = DEFAULT_CHUNK) -> torch.Tensor:
    """Tempered self-similarity alignment (TSA); with ``query_mask`` masked TSA (M-TSA).

    For query token i and frame f, P_{i,f} = softmax over the H*W positions of frame f of R[i, f, :] / tau,
    for the teacher and the student; the teacher is the target:

        L = 1/(|M| F) Σ_{(b, i) ∈ M} Σ_f KL(P^t_{b,i,f} || P^s_{b,i,f})

    M = all B*N queries (TSA: 1/(B N F) Σ) or the True entries of ``query_mask`` (B, F, H, W) bool, counted
    over the whole batch (M-TSA). Keys, the softmax support, are never masked [ours: the paper masks queries
    only]. An empty mask gives 0. Gradient w.r.t. the student's logits: (P^s - P^t) / tau per (i, f).
    student (B, F, H, W, Cs), teacher (B, F, H, W, Ct). ``chunk_size`` query rows at a time.
    """
    check_features(student, teacher)
    check_query_mask(query_mask, student)
    if not tau > 0:
        raise ValueError(f"tau must be positive. Got {tau}.")
    b, frames = student.shape[:2]
    kl = partial(_tempered_kl, frames=frames, tau=tau)
    total = stss_row_sum(student, teacher, kl, query_mask, chunk_size)
    count = b * student.shape[1:4].numel() if query_mask is None else max(int(query_mask.sum()), 1)
    return total / (count * frames)
