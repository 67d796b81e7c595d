"""VideoREPA's token relation distillation: L = L_FM + λ mean_{pairs} relu(|S_s - S_t| - margin), with S the
Gram matrices of channel-normalised tokens (computed in query chunks, never N x N at once); λ 0.5,
margin 0.1 (VideoREPA's)."""

from __future__ import annotations

from physalign.objectives import trd_loss
from physalign.train.methods import register
from physalign.train.methods.align import Alignment


@register("trd")
class TRD(Alignment):
    term = "trd"

    def __init__(self, margin: float = 0.1, **kw):
        super().__init__(**kw)
        self.margin = margin

    def align(self, student, teacher, batch):
        return trd_loss(student, teacher, margin=self.margin)
