"""VBench's temporal flickering, dynamic degree and motion smoothness, as Vchitect/VBench computes them.

Videos are uint8 RGB ``(T, H, W, 3)``. References are files of that repository's ``vbench/`` folder.

- temporal flickering (``temporal_flickering.py``, ``cal_score``): ``(255 - MAE) / 255``, MAE the mean over
  consecutive pairs of ``mean |x_{t+1} - x_t|`` on the 0-255 scale.
- dynamic degree (``dynamic_degree.py``, ``DynamicDegree``): frames taken every ``max(1, round(fps / 8))``-th;
  each padded to a multiple of 8 by replicating its borders (RAFT's ``InputPadder``, split evenly); per
  consecutive pair the flow (VBench: RAFT, ``raft-things.pth``, 20 iterations), and its score the mean of the
  ``int(h w * 0.05)`` largest magnitudes of the padded ``(h, w)`` field (``get_score``). With ``n`` frames
  taken, a video is dynamic when at least ``round(4 n / 16)`` pairs (Python's ``round``, half to even)
  score above ``6 * min(H, W) / 256`` (``set_params``, ``check_move``): with ``n <= 2`` that count is 0 and
  any video with one pair is dynamic.
- motion smoothness (``motion_smoothness.py``, ``MotionSmoothness.motion_score``): the even frames
  ``x_0, x_2, ...`` are kept, the frame halfway between each consecutive two predicted (VBench: AMT-S,
  ``amt-s.pth``, at ``t = 1/2``, inputs padded to a multiple of 16) and cast to uint8 by truncation
  (``tensor2img``); the score is ``(255 - MAE) / 255`` with MAE the mean over the odd frames
  ``x_1, x_3, ...`` that have a prediction of ``mean |x_{2k+1} - x^_{2k+1}|`` (``vfi_score``).

The flow and the interpolator are pluggable: any object with a ``name`` and a ``__call__``. The stand-ins
:class:`HornSchunckFlow` and :class:`FlowInterpolation` (physalign's classical flow) need no weights; every
result names the model that made it, and a stand-in's score is not comparable with VBench's numbers.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from physalign.benchmarks import light

TOP_FRACTION, FLOW_PAD, INTERP_PAD, RAFT_ITERS = 0.05, 8, 16, 20
CHUNK = 8  # frame pairs per call of a flow or interpolation model (memory, not results)
STAND_IN = "[stand-in, not VBench's model]"


def _check(video: np.ndarray, at_least: int, what: str) -> np.ndarray:
    video = np.asarray(video)
    if video.ndim != 4 or video.shape[-1] != 3 or video.dtype != np.uint8:
        raise ValueError(f"video must be uint8 (T, H, W, 3). Got {video.dtype} {video.shape}.")
    if len(video) < at_least:
        raise ValueError(f"{what} needs at least {at_least} frames. Got {len(video)}.")
    return video


def temporal_flickering(video: np.ndarray) -> float:
    """``(255 - MAE) / 255``, MAE of consecutive frames on the 0-255 scale; 1 for a static clip."""
    x = _check(video, 2, "temporal flickering").astype(np.float64)
    return float((255 - np.abs(np.diff(x, axis=0)).mean()) / 255)


# ------------------------------------------------------------------------------------------ models


class FlowModel(Protocol):
    """``(a, b)`` float (N, 3, H, W) in [0, 255] -> flow (N, 2, H, W) in pixels (dx, dy), ``a(p) ≈ b(p + flow)``."""

    name: str

    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor: ...


class Interpolator(Protocol):
    """``(a, b)`` float (N, 3, H, W) in [0, 1] -> the frames halfway between them, (N, 3, H, W) in [0, 1]."""

    name: str

    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor: ...


class HornSchunckFlow:
    """physalign's coarse-to-fine Horn-Schunck flow (:func:`physalign.benchmarks.light.optical_flow`)."""

    name = f"Horn-Schunck flow {STAND_IN}"

    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return light.optical_flow(*((v / 255).permute(0, 2, 3, 1).numpy() for v in (a, b)))


class FlowInterpolation:
    """Halfway frames by warping both neighbours along half the Horn-Schunck flow (``light.interpolate_middle``)."""

    name = f"Horn-Schunck flow interpolation {STAND_IN}"

    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        middle = light.interpolate_middle(*(v.permute(0, 2, 3, 1).numpy() for v in (a, b)))
        return torch.as_tensor(middle).permute(0, 3, 1, 2)


def _load_module(path: str | Path):
    """A model saved by ``torch.export.save`` (``.pt2``; export it with dynamic height and width) or as
    TorchScript (any other suffix)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file")
    if path.suffix == ".pt2":
        return torch.export.load(str(path)).module()
    return torch.jit.load(str(path), map_location="cpu").eval()


class SavedRAFT:
    """RAFT saved as TorchScript or an exported program, e.g. ``torch.jit.script(torchvision.models.optical_flow
    .raft_large(weights="C_T_V1")).save(path)`` (torchvision documents those weights as ported from the paper's,
    trained on FlyingChairs + FlyingThings3D as VBench's ``raft-things.pth`` is). Called as torchvision's RAFT:
    images in [-1, 1], ``num_flow_updates=20`` (VBench's ``iters``) when the module takes it; the output's last
    item is the flow."""

    def __init__(self, path: str | Path):
        self.module, self.name = _load_module(path), f"RAFT ({path})"
        self.kwargs = {"num_flow_updates": RAFT_ITERS} if "num_flow_updates" in _arguments(self.module) else {}

    @torch.no_grad()
    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        out = self.module(a / 127.5 - 1, b / 127.5 - 1, **self.kwargs)
        return out[-1] if isinstance(out, (list, tuple)) else out


class SavedAMT:
    """A frame interpolator (VBench: AMT-S) saved as TorchScript or an exported program, called as VBench calls AMT:
    ``module(a, b, embt)`` with ``embt = 1/2`` of shape (1, 1, 1, 1), images in [0, 1] padded to a multiple
    of 16; the output (or its ``"imgt_pred"``) is the halfway frame."""

    def __init__(self, path: str | Path):
        self.module, self.name = _load_module(path), f"AMT ({path})"

    @torch.no_grad()
    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        (pa, crop), pb = pad_to(a, INTERP_PAD), pad_to(b, INTERP_PAD)[0]
        out = self.module(pa, pb, torch.full((1, 1, 1, 1), 0.5))
        out = out["imgt_pred"] if isinstance(out, dict) else out
        return out[..., crop[0], crop[1]]


def _arguments(module) -> set[str]:
    """The names of ``module.forward``'s arguments (TorchScript's schema, else Python's signature)."""
    try:
        return {arg.name for arg in module.forward.schema.arguments}
    except AttributeError:
        return set(inspect.signature(module.forward).parameters)


def pad_to(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[slice, slice]]:
    """Replicate-pad (N, C, H, W) to multiples of ``multiple``, split evenly (RAFT's and AMT's
    ``InputPadder``): returns the padded tensor and the slices that crop it back."""
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    padded = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), mode="replicate") if ph or pw else x
    return padded, (slice(ph // 2, ph // 2 + h), slice(pw // 2, pw // 2 + w))


def load_flow(spec: str | None) -> FlowModel:
    """``None`` -> the Horn-Schunck stand-in; a path -> :class:`SavedRAFT`."""
    return HornSchunckFlow() if spec is None else SavedRAFT(spec)


def load_interpolator(spec: str | None) -> Interpolator:
    """``None`` -> the flow-interpolation stand-in; a path -> :class:`SavedAMT`."""
    return FlowInterpolation() if spec is None else SavedAMT(spec)


# --------------------------------------------------------------------------------------------- metrics


def _tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) in [0, 255]."""
    return torch.as_tensor(frames, dtype=torch.float32).permute(0, 3, 1, 2)


def pair_scores(flow: torch.Tensor) -> list[float]:
    """Per pair, the mean of the ``int(h w * 0.05)`` largest magnitudes of a (N, 2, h, w) flow (NaN when
    that is 0)."""
    magnitude = flow.norm(dim=1).flatten(1)  # (N, h * w)
    top = int(magnitude.shape[1] * TOP_FRACTION)
    return magnitude.topk(top, dim=1).values.mean(1).tolist() if top else [float("nan")] * len(flow)


def _pairs(model, frames: torch.Tensor) -> torch.Tensor:
    """``model(frames[i], frames[i + 1])`` for every consecutive pair of (n >= 2, 3, h, w), CHUNK pairs per
    call: (n - 1, ...)."""
    with torch.no_grad():
        return torch.cat([model(frames[i : i + CHUNK][: len(frames) - 1 - i], frames[i + 1 : i + 1 + CHUNK])
                          for i in range(0, len(frames) - 1, CHUNK)])


def dynamic_degree(video: np.ndarray, fps: float, flow: FlowModel | None = None) -> dict:
    """VBench's rule (module docstring): ``{"dynamic", "pair_scores", "threshold", "count_needed", "model"}``."""
    flow = flow or HornSchunckFlow()
    x = _check(video, 1, "dynamic degree")[:: max(1, round(fps / 8))]
    threshold, needed = 6.0 * min(x.shape[1:3]) / 256, round(4 * len(x) / 16)
    frames = pad_to(_tensor(x), FLOW_PAD)[0]  # (n, 3, h, w)
    scores = pair_scores(_pairs(flow, frames)) if len(x) > 1 else []
    dynamic = bool(scores) and sum(s > threshold for s in scores) >= needed
    return {"dynamic": dynamic, "pair_scores": scores, "threshold": threshold, "count_needed": needed,
            "model": flow.name}


def motion_smoothness(video: np.ndarray, interpolator: Interpolator | None = None) -> dict:
    """VBench's protocol (module docstring): ``{"score", "mae", "model"}``."""
    interpolator = interpolator or FlowInterpolation()
    x = _check(video, 3, "motion smoothness")
    middle = _pairs(interpolator, _tensor(x[0::2]) / 255)  # (n_even - 1, 3, H, W)
    predicted = (middle.float() * 255).permute(0, 2, 3, 1).numpy().clip(0, 255).astype(np.uint8)  # truncates
    odd = x[1::2][: len(predicted)].astype(np.float64)
    mae = float(np.mean([np.abs(o - p).mean() for o, p in zip(odd, predicted)]))
    return {"score": (255 - mae) / 255, "mae": mae, "model": interpolator.name}
