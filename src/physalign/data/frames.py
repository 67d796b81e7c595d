"""Decoding a real clip (PyAV) into the frames a model trains on.

A clip becomes ``frames`` frames of ``height`` x ``width`` (uint8, (T, H, W, 3)):

1. **Timing.** With ``fps`` set, output frame k is the decoded frame whose timestamp is nearest to
   ``t_0 + k / fps`` (``t_0`` the first frame's timestamp; the earlier frame on a tie), so clips of any
   frame rate cover the same ``frames / fps`` seconds; a source slower than ``fps`` repeats frames, and a
   target past the last frame's timestamp but within its display time takes the last frame. Without
   ``fps``, frame k is decoded frame ``k * stride``. The window starts at the clip's first frame, and a
   clip too short for it is an error (:class:`VideoError`), not padded.
2. **Size.** Each frame is resized with area interpolation, keeping its aspect ratio, to the smallest size
   that covers ``height`` x ``width``, then center-cropped to it. A frame already of that size is used as
   decoded. (Pixel aspect ratios other than 1 are ignored.)

Decoding stops at the last frame needed, so a long clip costs only its first seconds. Timestamps are exact
fractions (``pts * time_base``), so the choice of frames does not depend on floating-point rounding.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import numpy as np

from physalign.video import VideoError


@dataclass(frozen=True)
class FrameSampling:
    frames: int  # T, frames per clip
    height: int
    width: int
    fps: float | None = None  # resample to this frame rate by timestamps; None = every `stride`-th frame
    stride: int = 1

    def __post_init__(self) -> None:
        for name in ("frames", "height", "width", "stride"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"frame sampling: {name} must be an integer >= 1. Got {getattr(self, name)!r}.")
        if self.fps is not None and not self.fps > 0:
            raise ValueError(f"frame sampling: fps must be > 0 (or None). Got {self.fps!r}.")
        if self.fps is not None and self.stride != 1:
            raise ValueError("frame sampling: give fps or stride, not both (fps picks frames by time)")

    def describe(self) -> str:
        timing = f"at {self.fps:g} fps" if self.fps is not None else f"every {self.stride} frame(s)"
        return f"{self.frames} frames {timing}, {self.height}x{self.width}"


def decode_clip(path: str | Path, sampling: FrameSampling) -> tuple[np.ndarray, np.ndarray]:
    """The sampled frames of ``path``: uint8 (T, H, W, 3) and the decoded frame numbers (T,) int64.

    Raises :class:`VideoError` naming the file if it is missing, cannot be decoded or is too short.
    """
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"{path}: no such video file")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError(f"{path}: no video stream")
            stream = container.streams.video[0]
            decoded = container.decode(stream)
            picked, seen = (_by_time(decoded, stream, sampling) if sampling.fps is not None
                            else _by_stride(decoded, sampling))
    except (av.error.FFmpegError, ValueError, IndexError) as err:
        raise VideoError(f"{path}: cannot decode video ({err})") from err
    if len(picked) < sampling.frames:
        raise VideoError(f"{path}: too short for {sampling.describe()}: it has {seen} frames")
    return np.stack([image for _, image in picked]), np.array([i for i, _ in picked], dtype=np.int64)


def _by_stride(decoded: Iterator[av.VideoFrame], sampling: FrameSampling) -> tuple[list, int]:
    """([(frame number, fitted image)] of frames 0, stride, 2 stride, ...; up to T), frames decoded."""
    picked, seen = [], 0
    for i, frame in enumerate(decoded):
        seen = i + 1
        if i % sampling.stride == 0:
            picked.append((i, fit(frame, sampling.height, sampling.width)))
            if len(picked) == sampling.frames:
                break
    return picked, seen


def _by_time(decoded: Iterator[av.VideoFrame], stream, sampling: FrameSampling) -> tuple[list, int]:
    """([(frame number, fitted image)] nearest to t_0 + k / fps for k < T), frames decoded."""
    step = Fraction(str(sampling.fps)) ** -1
    picked, seen, previous, t0 = [], 0, None, None
    for i, frame in enumerate(decoded):
        seen, t = i + 1, _timestamp(frame, i, stream)
        t0 = t if t0 is None else t0
        while len(picked) < sampling.frames and t >= t0 + len(picked) * step:
            target = t0 + len(picked) * step
            earlier = previous is not None and target - previous[2] <= t - target
            j, chosen = previous[:2] if earlier else (i, frame)
            picked.append((j, fit(chosen, sampling.height, sampling.width)))
        if len(picked) == sampling.frames:
            break
        previous = (i, frame, t)
    if previous is not None:  # targets in the last frame's display time take it
        end = previous[2] + _duration(previous[1], stream)
        while len(picked) < sampling.frames and t0 + len(picked) * step < end:
            picked.append((previous[0], fit(previous[1], sampling.height, sampling.width)))
    return picked, seen


def _duration(frame: av.VideoFrame, stream) -> Fraction:
    """How long the frame is shown: its own duration if the container gives one, else 1 / frame rate."""
    if getattr(frame, "duration", None) and frame.time_base is not None:
        return frame.duration * Fraction(frame.time_base)
    return Fraction(1) / Fraction(stream.average_rate) if stream.average_rate else Fraction(0)


def _timestamp(frame: av.VideoFrame, index: int, stream) -> Fraction:
    """The frame's presentation time in seconds, exactly; ``index / average_rate`` if it has no pts."""
    if frame.pts is not None and frame.time_base is not None:
        return frame.pts * Fraction(frame.time_base)
    if not stream.average_rate:
        raise VideoError(f"{stream.container.name}: frames have no timestamps and the stream no frame rate")
    return Fraction(index) / Fraction(stream.average_rate)


def fit(frame: av.VideoFrame, height: int, width: int) -> np.ndarray:
    """Resize (area, aspect kept) to cover ``height`` x ``width``, then center-crop: uint8 (H, W, 3)."""
    scale = max(height / frame.height, width / frame.width)
    h, w = max(height, round(frame.height * scale)), max(width, round(frame.width * scale))
    if (h, w) == (frame.height, frame.width):
        image = frame.to_ndarray(format="rgb24")
    else:
        image = frame.reformat(width=w, height=h, format="rgb24", interpolation="AREA").to_ndarray()
    top, left = (h - height) // 2, (w - width) // 2
    return image[top : top + height, left : left + width]
