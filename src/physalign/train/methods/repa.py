"""REPA (Yu et al. 2024): L = L_FM + λ (-mean_n cos(y_n, h_φ(h_n))), λ = 0.5 (the paper's)."""

from __future__ import annotations

from physalign.objectives import repa_loss
from physalign.train.methods import register
from physalign.train.methods.align import Alignment


@register("repa")
class REPA(Alignment):
    term = "repa"

    def align(self, student, teacher, batch):
        return repa_loss(student, teacher)
