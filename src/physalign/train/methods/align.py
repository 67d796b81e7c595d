"""Shared machinery of the representation-alignment methods (REPA, TRD, TSA, M-TSA):

    L = L_FM + λ L_align(h_φ(student features at block ``block``), teacher features of the clean video)

The teacher (a ``VideoMAEModel`` from a local folder) runs once per data set: the data source gives its
features (``data.teacher_features``: the world caches them, ``physalign precompute --teacher`` stores them in
the shards), looked up per batch by row index, so a step pays only the projector and the loss. The
projector ``h_φ`` (3-layer MLP + grid-mapping 3D convolution) is the method's own trainable part,
checkpointed with it. Student dimension and token grid are read off one
forward pass of the model, never hard-coded.
"""

from __future__ import annotations

import torch

from physalign.objectives import flow_matching_loss
from physalign.teacher.model import load_teacher, teacher_grid
from physalign.teacher.projector import Projector
from physalign.train.methods import Method
from physalign.train.methods.fm import check_schedule, noisy_velocity


class Alignment(Method):
    """Base class; subclasses set ``term`` and implement :meth:`align` (student, teacher: (B, F, H, W, C))."""

    term = "align"

    def __init__(self, weight: float = 0.5, block: int = 3, teacher: str = "checkpoints/teacher",
                 teacher_layer: int = -1, projector_dim: int = 256, cfg_dropout: float = 0.1,
                 t_schedule: str = "model"):
        super().__init__()
        check_schedule(type(self).__name__, cfg_dropout, t_schedule)
        if weight < 0:
            raise ValueError(f"method {type(self).__name__}: weight must be >= 0. Got {weight}.")
        self.weight, self.block, self.teacher_path, self.teacher_layer = weight, block, teacher, teacher_layer
        self.projector_dim, self.cfg_dropout, self.t_schedule = projector_dim, cfg_dropout, t_schedule
        self.projector: Projector | None = None

    def setup(self, model, data) -> None:
        teacher = load_teacher(self.teacher_path)
        self.teacher_grid = teacher_grid(teacher.config)
        self.features = data.teacher_features(teacher, self.teacher_layer)  # fp16 (N, F, H, W, D)
        with torch.no_grad():
            probe = data.batch(torch.arange(1))
            _, _, _, feats = noisy_velocity(model, probe["latents"], probe["prompts"], 0.0, self.t_schedule, taps=(self.block,))
        student = model.teacher_frames(feats[self.block])  # (1, F, H, W, D)
        if self.projector is None:
            self.projector = Projector(student.shape[-1], self.features.shape[-1], student.shape[1:4],
                                       self.teacher_grid, hidden_dim=self.projector_dim)
        self.prepare(model, data)

    def prepare(self, model, data) -> None:
        """Per-method data built once (e.g. M-TSA's motion masks)."""

    def align(self, student: torch.Tensor, teacher: torch.Tensor, batch: dict) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, model, batch: dict) -> dict[str, torch.Tensor]:
        x0 = batch["latents"]
        v, eps, _, feats = noisy_velocity(model, x0, batch["prompts"], self.cfg_dropout, self.t_schedule,
                                          taps=(self.block,), batch=batch)
        student = self.projector(model.teacher_frames(feats[self.block]))  # (B, F_t, H_t, W_t, D_t)
        teacher = self.features[batch["index"]].to(student)
        fm = flow_matching_loss(v, x0, eps)
        aligned = self.align(student, teacher, batch)
        return {"loss": fm + self.weight * aligned, "fm": fm.detach(), self.term: aligned.detach()}
