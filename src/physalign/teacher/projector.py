"""The projector ``h_phi`` of REPA, VideoREPA (TRD) and TSA: student tokens onto the teacher's tokens."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class Projector(nn.Module):
    """Student tokens (B, F_s, H_s, W_s, D_s) -> (B, F_t, H_t, W_t, D_t) on the teacher's grid.

    1. A 3-layer MLP per token, ``D_s -> hidden -> hidden -> D_t`` with SiLU [code: REPA, VideoREPA; hidden
       2048 there, for students of 1152-1920 channels: pass a smaller ``hidden_dim`` for small students].
    2. One learnable ``Conv3d`` (D_t -> D_t) that maps the grid [paper: TSA]. Along an axis where the student
       grid is an integer multiple ``s`` of the teacher's: stride ``s``, kernel ``s`` (VideoREPA's learnable
       Conv2d has k = s = 3). Along the other axes: stride 1, kernel 3, padding 1.
    3. Trilinear interpolation to the teacher's grid along axes that still differ (the teacher is finer,
       or the ratio is not an integer) [ours: the papers only downsample]. Interpolating after the
       convolution keeps the convolution on the smaller grid.
    """

    def __init__(self, student_dim: int, teacher_dim: int, student_grid: Sequence[int], teacher_grid: Sequence[int],
                 hidden_dim: int = 2048):
        super().__init__()
        self.student_grid, self.teacher_grid = tuple(student_grid), tuple(teacher_grid)
        if len(self.student_grid) != 3 or len(self.teacher_grid) != 3 or min(self.student_grid + self.teacher_grid) < 1:
            raise ValueError(f"grids must be (F, H, W) of positive sizes. Got student {self.student_grid}, "
                             f"teacher {self.teacher_grid}.")
        self.student_dim, self.teacher_dim = student_dim, teacher_dim
        self.mlp = nn.Sequential(
            nn.Linear(student_dim, hidden_dim), nn.SiLU(),
            nn.Linear(hidden_dim, hidden_dim), nn.SiLU(),
            nn.Linear(hidden_dim, teacher_dim),
        )
        strides = tuple(s // t if s > t and s % t == 0 else 1 for s, t in zip(self.student_grid, self.teacher_grid))
        kernels = tuple(k if k > 1 else 3 for k in strides)
        padding = tuple(0 if k > 1 else 1 for k in strides)
        self.conv = nn.Conv3d(teacher_dim, teacher_dim, kernels, stride=strides, padding=padding)
        self.conv_grid = tuple(s // k for s, k in zip(self.student_grid, strides))  # the grid after the conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        expected = (*self.student_grid, self.student_dim)
        if x.ndim != 5 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"projector input must have shape (B, F, H, W, D) = (B, {', '.join(map(str, expected))}). "
                             f"Got {tuple(x.shape)}.")
        y = self.mlp(x).permute(0, 4, 1, 2, 3)  # (B, D_t, F_s, H_s, W_s)
        y = self.conv(y)  # (B, D_t, *conv_grid)
        if self.conv_grid != self.teacher_grid:
            y = F.interpolate(y, size=self.teacher_grid, mode="trilinear", align_corners=False)  # (B, D_t, F_t, H_t, W_t)
        return y.permute(0, 2, 3, 4, 1)  # (B, F_t, H_t, W_t, D_t)
