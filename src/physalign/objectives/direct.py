"""DiReCT: contrastive flow matching with disentangled negatives and a velocity-space regulariser.

The paper's equations are not public; this is the formulation of docs/methods.md (section DiReCT), ours:

    L = L_FM - λ_macro C(v, u_macro) - λ_micro C(v, u_micro) + λ_vel D(v, v_ref),   C(v, w) = mean ||v - w||^2

u_macro: the full target of a sample of another semantic partition; u_micro: the target of a hard negative
that differs from the anchor along one physics axis only; v_ref: a frozen copy of the starting model on the
same inputs. Descending ||v - u||^2 - λ ||v - w||^2 helps flow matching only where <u - v, v - w> >= 0 (the
alignment condition): its fraction is logged and, with ``gate``, the contrastive term is dropped elsewhere.
Videos and velocities: (B, C, T, H, W).
"""

from __future__ import annotations

import torch

from physalign.objectives.flow import velocity_target

REGULARIZERS = ("mmd", "moments", "l2")


def exclusive_negatives(groups: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B,) long: for each anchor i a uniformly drawn j with groups[j] != groups[i]; -1 where there is none.

    groups (B,) integer ids: semantic partitions (DiReCT's macro negatives), class labels (class-conditional
    ΔFM), or ``torch.arange(B)`` for ΔFM's any-other-sample. ``generator`` on the device of ``groups``.
    """
    if groups.dim() != 1 or groups.is_floating_point():
        raise ValueError(f"groups must be integer ids of shape (B,). Got {groups.dtype} {list(groups.shape)}.")
    allowed = groups[:, None] != groups[None, :]  # (B, B)
    draw = torch.rand(allowed.shape, generator=generator, device=groups.device).masked_fill(~allowed, -1.0)
    return torch.where(allowed.any(1), draw.argmax(1), -1)  # argmax of iid uniforms: uniform over allowed


def alignment_condition(v: torch.Tensor, u: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """(B,) bool: <u - v, v - w> >= 0 per sample, i.e. pushing v away from the negative w moves it toward the
    target u. v, u, w: (B, ...), one shape; no gradient."""
    v = v.detach()
    return ((u - v) * (v - w)).flatten(1).sum(1) >= 0


def _median_bandwidth(z: torch.Tensor) -> torch.Tensor:
    i, j = torch.triu_indices(len(z), len(z), offset=1, device=z.device)
    d2 = (z[i] - z[j]).pow(2).sum(-1)
    return d2.median().clamp_min(1e-12) if d2.numel() else z.new_ones(())


def mmd_rbf(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Squared maximum mean discrepancy between the samples x (n, D) and y (m, D), V-statistic:

        MMD^2 = mean_{i,i'} k(x_i, x_i') + mean_{j,j'} k(y_j, y_j') - 2 mean_{i,j} k(x_i, y_j)
        k(a, b) = exp(-||a - b||^2 / h),  h = median of ||z_p - z_q||^2 over distinct points of z = [x; y]

    (median heuristic; h carries no gradient). Zero when the two samples are equal; >= 0.
    """
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must be (n, D) and (m, D). Got {list(x.shape)}, {list(y.shape)}.")
    h = _median_bandwidth(torch.cat([x, y]).detach())

    def k(a, b):
        return torch.exp(-(a[:, None] - b[None]).pow(2).sum(-1) / h).mean()

    return k(x, x) + k(y, y) - 2 * k(x, y)


def velocity_regularizer(v: torch.Tensor, v_ref: torch.Tensor, kind: str = "mmd") -> torch.Tensor:
    """D(v, v_ref), v_ref detached; v, v_ref (B, C, T, H, W). kind [ours]:

    - "mmd": ``mmd_rbf`` between per-sample velocities pooled over space, (B, C*T) each (the distribution
      over the batch, per channel and latent frame, not each sample's match);
    - "moments": mean over channels c of (mu_c - mu_ref_c)^2 + (sigma_c - sigma_ref_c)^2, over (B, T, H, W);
    - "l2": mean (v - v_ref)^2.
    """
    if v.shape != v_ref.shape or v.dim() != 5:
        raise ValueError(f"v and v_ref must share a shape (B, C, T, H, W). Got {list(v.shape)}, "
                         f"{list(v_ref.shape)}.")
    v_ref = v_ref.detach()
    if kind == "mmd":
        return mmd_rbf(v.mean((3, 4)).flatten(1), v_ref.mean((3, 4)).flatten(1))
    if kind == "moments":
        dims = (0, 2, 3, 4)
        return ((v.mean(dims) - v_ref.mean(dims)).pow(2) + (v.std(dims) - v_ref.std(dims)).pow(2)).mean()
    if kind == "l2":
        return (v - v_ref).pow(2).mean()
    raise ValueError(f"kind must be one of {REGULARIZERS}. Got {kind!r}.")


def _contrast(v, u, w, valid, gate):
    """Batch-mean of valid (and, with gate, aligned) samples' C(v_i, w_i); (B,) aligned; (B,) used."""
    aligned = alignment_condition(v, u, w)
    used = valid & aligned if gate else valid
    distance = (v - w).pow(2).flatten(1).mean(1)  # (B,)
    return (distance * used).sum() / len(v), aligned, used


def direct_loss(v: torch.Tensor, x0: torch.Tensor, eps: torch.Tensor, partition: torch.Tensor, *,
                micro_x0: torch.Tensor | None = None, micro_v: torch.Tensor | None = None,
                micro_valid: torch.Tensor | None = None, v_ref: torch.Tensor | None = None,
                macro_weight: float = 0.05, micro_weight: float = 0.05, reg_weight: float = 0.1,
                reg: str = "mmd", gate: bool = False,
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """DiReCT's loss and its named terms (module docstring), per-sample contrast averaged over the batch:

        fm = mean ||v - u||^2,   macro / micro = 1/B Σ_i keep_i mean ||v_i - w_i||^2,   reg = D(v, v_ref)
        loss = fm - macro_weight macro - micro_weight micro + reg_weight reg

    v, x0, eps: (B, C, T, H, W), u = eps - x0. partition (B,) integer semantic partition ids: sample i's macro
    negative is u_j of a uniformly drawn j of another partition (``exclusive_negatives``; none if the batch has
    no other partition). Micro negative, at most one of: ``micro_x0`` the counterfactual clean video under the
    same noise (w = eps - micro_x0), or ``micro_v`` the frozen model's velocity under the perturbed prompt
    (detached); ``micro_valid`` (B,) bool marks samples that have one (default all). ``v_ref`` the frozen
    model's velocity on the same inputs (no regulariser if None); ``reg`` a ``velocity_regularizer`` kind.
    keep_i = has a negative and, with ``gate``, satisfies the alignment condition. Weights are ours, to tune.

    Returns {"loss" (with graph), "fm", "macro", "micro", "reg", "aligned_frac" (alignment condition holds,
    over all (sample, negative) pairs; 0 when there is no pair, never NaN), "aligned_macro", "aligned_micro"
    (per kind), "macro_frac", "micro_frac" (fraction of samples whose term is kept)}; all but "loss" detached.
    """
    shapes = {k: list(t.shape) for k, t in dict(v=v, x0=x0, eps=eps, micro_x0=micro_x0, micro_v=micro_v,
                                                v_ref=v_ref).items() if t is not None}
    if v.dim() != 5 or any(s != shapes["v"] for s in shapes.values()):
        raise ValueError(f"velocities and videos must share one shape (B, C, T, H, W). Got {shapes}.")
    b = v.shape[0]
    bad_valid = micro_valid is not None and (micro_valid.shape != (b,) or micro_valid.dtype != torch.bool)
    if partition.shape != (b,) or bad_valid:
        raise ValueError(f"partition must be (B,) = ({b},) ids and micro_valid (B,) bool. Got "
                         f"{list(partition.shape)}, {None if micro_valid is None else list(micro_valid.shape)}.")
    if micro_x0 is not None and micro_v is not None:
        raise ValueError("give the micro negative as micro_x0 (world counterfactual) or micro_v (frozen model "
                         "under the perturbed prompt), not both")

    u = velocity_target(x0, eps)
    fm = (v - u).pow(2).mean()
    j = exclusive_negatives(partition, generator)
    valid_macro = j >= 0
    macro, aligned_macro, used_macro = _contrast(v, u, u[j.clamp_min(0)], valid_macro, gate)
    # Without a micro negative the term runs on w = u with no valid sample: zero, one code path.
    w = velocity_target(micro_x0, eps) if micro_x0 is not None else micro_v.detach() if micro_v is not None else u
    valid_micro = torch.full((b,), micro_x0 is not None or micro_v is not None, device=v.device)
    valid_micro = valid_micro & micro_valid if micro_valid is not None else valid_micro
    micro, aligned_micro, used_micro = _contrast(v, u, w, valid_micro, gate)
    regularizer = velocity_regularizer(v, v_ref, reg) if v_ref is not None else torch.zeros_like(fm)
    loss = fm - macro_weight * macro - micro_weight * micro + reg_weight * regularizer

    def frac(hits, among):
        return (hits & among).sum().to(v.dtype) / max(int(among.sum()), 1)

    terms = {"fm": fm, "macro": macro, "micro": micro, "reg": regularizer,
             "aligned_frac": frac(torch.cat([aligned_macro, aligned_micro]), torch.cat([valid_macro, valid_micro])),
             "aligned_macro": frac(aligned_macro, valid_macro), "aligned_micro": frac(aligned_micro, valid_micro),
             "macro_frac": used_macro.to(v.dtype).mean(), "micro_frac": used_micro.to(v.dtype).mean()}
    return {"loss": loss, **{k: t.detach() for k, t in terms.items()}}
