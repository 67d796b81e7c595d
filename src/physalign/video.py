"""Reading and writing videos: lossless mp4 (H.264 RGB, CRF 0) and GIF.

Videos are ``uint8`` arrays of shape ``(T, H, W, 3)``. World videos are tiny (32 x 32), where the usual
4:2:0 chroma subsampling would average colours over 2 x 2 pixels and smear the objects the evaluator
tracks; ``libx264rgb`` at CRF 0 stores the frames bit-exactly.

It stands at the package root as the lowest-level I/O module: the world, the evaluator, the data and
selection pipelines, training and the bench all read and write videos through it, and it imports nothing
of physalign (only PyAV, numpy and, for GIFs, imageio), so no layer pulls another in by using it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import av
import numpy as np


class VideoError(OSError):
    """A video that cannot be read or written; the message names the file."""


def write_mp4(path: str | os.PathLike, frames: np.ndarray, fps: float = 12.0) -> None:
    """Write ``frames`` (T, H, W, 3) uint8 losslessly to ``path``, atomically."""
    frames = _check_frames(frames, path)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".mp4", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o644)
    try:
        with av.open(tmp, mode="w", format="mp4") as container:
            stream = container.add_stream("libx264rgb", rate=int(round(fps)), options={"crf": "0", "preset": "ultrafast"})
            stream.width, stream.height = frames.shape[2], frames.shape[1]
            stream.pix_fmt = "rgb24"
            for frame in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_video(path: str | os.PathLike) -> np.ndarray:
    """Read every frame of ``path`` as (T, H, W, 3) uint8. Raises :class:`VideoError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"{path}: no such video file")
    try:
        with av.open(str(path)) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    except (av.error.FFmpegError, ValueError, IndexError) as err:
        raise VideoError(f"{path}: cannot decode video ({err})") from err
    if not frames:
        raise VideoError(f"{path}: video has no frames")
    return np.stack(frames)


def write_gif(path: str | os.PathLike, frames: np.ndarray, fps: float = 12.0, scale: int = 4) -> None:
    """Write ``frames`` (T, H, W, 3) uint8 as a looping GIF, upscaled by ``scale`` (nearest) to be seen."""
    import imageio.v3 as iio

    frames = _check_frames(frames, path)
    if scale > 1:
        frames = frames.repeat(scale, axis=1).repeat(scale, axis=2)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, list(frames), extension=".gif", duration=1000.0 / fps, loop=0)


def _check_frames(frames: np.ndarray, path) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise VideoError(f"{path}: frames must have shape (T, H, W, 3). Got {frames.shape}.")
    if frames.dtype != np.uint8:
        raise VideoError(f"{path}: frames must be uint8. Got {frames.dtype}.")
    return np.ascontiguousarray(frames)


def tile(grid: list[list[np.ndarray]], pad: int = 1, pad_value: int = 255) -> np.ndarray:
    """Tile a grid (rows x columns) of videos, each (T, H, W, 3) uint8 of one shape, into one video.

    Columns are separated by ``pad`` pixels of ``pad_value``; shorter videos hold their last frame.
    """
    if not grid or not grid[0]:
        raise VideoError("tile: the grid is empty")
    shapes = {v.shape[1:] for row in grid for v in row}
    if len(shapes) != 1:
        raise VideoError(f"tile: all videos must share (H, W, 3). Got {sorted(shapes)}.")
    (h, w, _), cols = shapes.pop(), max(len(row) for row in grid)
    length = max(v.shape[0] for row in grid for v in row)
    out = np.full((length, len(grid) * (h + pad) - pad, cols * (w + pad) - pad, 3), pad_value, np.uint8)
    for r, row in enumerate(grid):
        for c, video in enumerate(row):
            held = np.concatenate([video, np.repeat(video[-1:], length - len(video), axis=0)])
            out[:, r * (h + pad) : r * (h + pad) + h, c * (w + pad) : c * (w + pad) + w] = held
    return out
