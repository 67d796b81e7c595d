"""Spatio-temporal self-similarity (STSS) without the N x N matrix.

Tokens (B, F, H, W, C) are L2-normalised over channels and flattened to Ē (B, N, C), N = F*H*W; the STSS is
R = Ē Ēᵀ (B, N, N). TSA, M-TSA and TRD are sums over query rows i of a loss of the pair of rows
(R_s[b, i], R_t[b, i]), so they can be computed a chunk of rows at a time:

    S = Σ_b Σ_{i ∈ M_b} row_loss(R_s[b, i, :], R_t[b, i, :])

At N = 24*20*30 one float32 N x N matrix is 830 MB and a plain autograd version keeps several of them alive
for backward. Here forward and backward both see at most (B, chunk, N) rows at a time: while the forward runs
over the chunks it also takes each chunk's gradient with respect to Ē (autograd on the chunk alone) and
accumulates it, so backward only scales the stored (B, N, C) gradient. Why not ``torch.utils.checkpoint``
per chunk: backward would recompute each chunk's student and teacher rows, six (chunk x C) @ (C x N) matmuls
per chunk instead of four, 1.5x the plain version's work; this way the work equals the plain version's.
The price: the gradient is computed whenever an input requires grad, even if backward never runs, and there
is no double backward.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

RowLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""(B, q, N) student rows, (B, q, N) teacher rows -> (B, q) loss of each row."""

DEFAULT_CHUNK = 256


def check_features(student: torch.Tensor, teacher: torch.Tensor, same_channels: bool = False) -> None:
    """Both (B, F, H, W, C) on one token grid; channels may differ unless ``same_channels``."""
    if student.dim() != 5 or teacher.dim() != 5:
        raise ValueError(f"student and teacher must be (B, F, H, W, C). Got {list(student.shape)}, "
                         f"{list(teacher.shape)}.")
    n = 5 if same_channels else 4
    if student.shape[:n] != teacher.shape[:n]:
        what = "shape" if same_channels else "(B, F, H, W)"
        raise ValueError(f"student and teacher must share their {what}. Got {list(student.shape)}, "
                         f"{list(teacher.shape)}.")


def check_query_mask(query_mask: torch.Tensor | None, features: torch.Tensor) -> None:
    if query_mask is not None and (query_mask.dtype != torch.bool or query_mask.shape != features.shape[:4]):
        raise ValueError(f"query_mask must be a bool tensor (B, F, H, W) = {list(features.shape[:4])}. "
                         f"Got {query_mask.dtype} {list(query_mask.shape)}.")


def query_rows(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """mask (B, N) bool -> index (B, M) long, weight (B, M): the True positions of each row first, in order,
    padded to M = the largest count with weight 0 (so a batch of masks runs as one batched computation)."""
    count = mask.sum(1)  # (B,)
    m = int(count.max()) if mask.numel() else 0
    index = torch.argsort((~mask).to(torch.uint8), dim=1, stable=True)[:, :m]  # (B, M)
    weight = torch.arange(m, device=mask.device) < count[:, None]  # (B, M)
    return index, weight


def _leaf_rows(tokens: torch.Tensor, index: torch.Tensor, grad: bool):
    """tokens (B, N, C), index (B, q) -> the chunk's own leaves, queries (B, q, C) and keys (B, N, C), and its
    rows of Ē Ēᵀ, (B, q, N). Separate leaves: the key gradient comes out of the matmul ready to add, with no
    (B, N, C) scatter per chunk for the queries' share."""
    keys = tokens.detach().requires_grad_(grad)
    queries = tokens.detach().gather(1, _along_tokens(index, tokens)).requires_grad_(grad)
    return (queries, keys), queries @ keys.transpose(1, 2)


def _along_tokens(index: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    return index[..., None].expand(-1, -1, tokens.shape[-1])  # (B, q, C)


class _ChunkedRowSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, student, teacher, index, weight, row_loss, chunk_size):
        inputs, need = (student, teacher), ctx.needs_input_grad[:2]
        grads = [torch.zeros_like(x) if n else None for x, n in zip(inputs, need)]
        total = student.new_zeros(())
        for idx, w in zip(index.split(chunk_size, 1), weight.split(chunk_size, 1)):
            with torch.enable_grad():
                (leaves_s, rows_s), (leaves_t, rows_t) = [_leaf_rows(x, idx, n) for x, n in zip(inputs, need)]
                part = (row_loss(rows_s, rows_t) * w).sum()
            if any(need):
                wanted = [leaves for leaves, n in zip((leaves_s, leaves_t), need) if n]
                chunk_grads = iter(torch.autograd.grad(part, [x for pair in wanted for x in pair]))
                for g, x in zip(grads, inputs):
                    if g is not None:
                        d_queries, d_keys = next(chunk_grads), next(chunk_grads)
                        g.add_(d_keys).scatter_add_(1, _along_tokens(idx, x), d_queries)
            total += part.detach()
        ctx.save_for_backward(*[g if g is not None else torch.empty(0) for g in grads])
        ctx.need = need
        return total

    @staticmethod
    def backward(ctx, grad_total):
        if torch.is_grad_enabled():  # create_graph=True: the stored gradient has no graph of its own
            raise RuntimeError("STSS losses take their gradient during the forward pass and support no double "
                               "backward (create_graph=True)")
        gs, gt = ctx.saved_tensors
        return (gs * grad_total if ctx.need[0] else None, gt * grad_total if ctx.need[1] else None,
                None, None, None, None)


def stss_row_sum(student: torch.Tensor, teacher: torch.Tensor, row_loss: RowLoss,
                 query_mask: torch.Tensor | None = None, chunk_size: int = DEFAULT_CHUNK) -> torch.Tensor:
    """S = Σ_b Σ_{i ∈ M_b} row_loss(R_s[b, i], R_t[b, i]), R = Ē Ēᵀ, computed ``chunk_size`` query rows at a
    time (peak memory O(B * chunk_size * N), linear in N); equal to the full-matrix sum, gradients included.

    student (B, F, H, W, Cs), teacher (B, F, H, W, Ct); query_mask (B, F, H, W) bool or None (all queries).
    Keys (the columns of R) are always all N tokens. Returns a scalar.
    """
    check_features(student, teacher)
    check_query_mask(query_mask, student)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int. Got {chunk_size!r}.")
    b, n = student.shape[0], student.shape[1:4].numel()
    es = F.normalize(student.reshape(b, n, -1), dim=-1)  # (B, N, Cs)
    et = F.normalize(teacher.reshape(b, n, -1), dim=-1)  # (B, N, Ct)
    if query_mask is None:
        index = torch.arange(n, device=student.device).expand(b, n)
        weight = torch.ones(b, n, dtype=torch.bool, device=student.device)
    else:
        index, weight = query_rows(query_mask.reshape(b, n))
    return _ChunkedRowSum.apply(es, et, index, weight.to(es.dtype), row_loss, chunk_size)
