"""TSA and M-TSA (seed 001/003): tempered self-similarity alignment.

    L = L_FM + λ 1/(N F) Σ_i Σ_f KL(P^teacher_{i,f} || P^student_{i,f}),   P_{i,f} = softmax(R_{i,f} / τ)

over each frame's spatial keys (``tsa_loss``, computed in query chunks). M-TSA sums only over the
motion-salient queries: per teacher token frame, the top ``ratio`` of tubelets by L1 change since the
previous frame (``motion_mask`` on the clean pixel video, given by the data source: ``data.motion_masks``).
λ 0.5, τ 0.1, k 20% (the paper's).
"""

from __future__ import annotations

from physalign.objectives import tsa_loss
from physalign.train.methods import register
from physalign.train.methods.align import Alignment


@register("tsa")
class TSA(Alignment):
    term = "tsa"

    def __init__(self, tau: float = 0.1, **kw):
        super().__init__(**kw)
        if tau <= 0:
            raise ValueError(f"method tsa: tau must be > 0. Got {tau}.")
        self.tau = tau

    def align(self, student, teacher, batch):
        return tsa_loss(student, teacher, tau=self.tau)


@register("mtsa")
class MTSA(TSA):
    term = "mtsa"

    def __init__(self, ratio: float = 0.2, **kw):
        super().__init__(**kw)
        if not 0 < ratio <= 1:
            raise ValueError(f"method mtsa: ratio must be in (0, 1]. Got {ratio}.")
        self.ratio = ratio

    def prepare(self, model, data) -> None:
        self.masks = data.motion_masks(self.teacher_grid, self.ratio)  # (N, F, H, W) bool

    def align(self, student, teacher, batch):
        return tsa_loss(student, teacher, tau=self.tau, query_mask=self.masks[batch["index"]])
