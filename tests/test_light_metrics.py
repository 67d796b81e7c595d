"""Physics-IQ's and VBench's light metrics pinned on small cases worked out by hand from the benchmarks'
definitions (physalign.benchmarks.physics_iq, .vbench; their docstrings cite the benchmarks' files)."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from physalign.benchmarks import light, physics_iq, vbench
from physalign.cli import app
from physalign.video import write_mp4

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()


def uniform(levels: list[int], size: int = 16) -> np.ndarray:
    """Frames of one gray level each: (T, size, size, 3) uint8 (gray = level)."""
    return np.stack([np.full((size, size, 3), v, np.uint8) for v in levels])


def bars(xs: list[int], width: int = 48, height: int = 8, bar: int = 8, background: int = 0) -> np.ndarray:
    """A white full-height bar ``bar`` px wide at column x of each frame on ``background``: every row is the
    same, so the masks are sets of columns. (T, height, width, 3) uint8."""
    video = np.full((len(xs), height, width, 3), background, np.uint8)
    for t, x in enumerate(xs):
        video[t, :, x : x + bar] = 255
    return video


def columns(mask: np.ndarray) -> list[int]:
    """The set columns of a (H, W) mask whose rows all agree."""
    assert (mask == mask[:1]).all()
    return np.flatnonzero(mask[0]).tolist()


# ------------------------------------------------------------------------------------------ Physics-IQ


def test_masks_running_average_threshold_and_empty_first_mask():
    # blur keeps uniform frames; a_1 = 0.3 v, m_1 = |v - round(0.3 v)| > 10
    assert physics_iq.motion_masks(uniform([0, 15, 15])).all((1, 2)).tolist() == [False, True, False]
    # v = 15: a_1 = 4.5 -> 4 (half to even), 15 - 4 = 11 > 10; a_2 = 7.65 -> 8, 15 - 8 = 7
    assert not physics_iq.motion_masks(uniform([0, 14, 14])).any()  # 14 - round(4.2) = 10, not > 10
    # v = 40 held: a = 12, 20.4, 26.28, 30.396 -> diffs 28, 20, 14, 10: the average trails for three frames
    assert physics_iq.motion_masks(uniform([0, 40, 40, 40, 40])).all((1, 2)).tolist() == [False, True, True, True, False]
    assert physics_iq.motion_masks(uniform([40, 0])).all((1, 2)).tolist() == [False, True]  # m_0 is always empty


def test_masks_of_an_empty_pair_and_a_lone_pixel():
    assert not physics_iq.motion_masks(uniform([0, 0])).any()
    lone = uniform([0, 0])
    lone[1, 8, 8] = 255  # blurred: 36 at the centre, 24 beside, 16 diagonal (binomial kernel, / 256 * 255)
    # diffs 36 - 11 = 25, 24 - 7 = 17, 16 - 5 = 11, all > 10, two away 6 - 2 = 4: a 3 x 3 blob, which the
    # 5 x 5 opening removes
    assert not physics_iq.motion_masks(lone).any()


# Full-resolution masks of a bar 8 px wide on black from column 8, moving 2 or 3 px per frame (W = 48).
# Blurred edge (binomial kernel): 16, 80 outside, 175, 239 inside; the running average leaves a trail
# behind the bar (a pixel it has left stays above threshold while a_t decays) and the closing fills it.
BAR_MASKS = {2: [[], list(range(6, 20)), list(range(7, 22)), list(range(7, 24)), list(range(7, 26)),
                 list(range(7, 28))],
             3: [[], list(range(6, 21)), list(range(7, 24)), list(range(7, 27)), list(range(7, 30)),
                 list(range(7, 33))]}


@pytest.mark.parametrize("speed", [2, 3])
def test_bar_masks(speed):
    masks = physics_iq.motion_masks(bars([8 + speed * t for t in range(6)]))
    assert [columns(m) for m in masks] == BAR_MASKS[speed]


def test_metrics_of_bars_moving_2_vs_3_px_per_frame():
    """At 1/4 resolution (12 x 2) a bilinear resize samples full columns 4j + 1 and 4j + 2 equally, so a
    quarter column is set when one of them is (2 of 4 values 255 -> 127.5 -> 128 > 127). Quarter masks:
    2 px/frame: {}, 1-4, 2-5, 2-5, 2-6, 2-6; 3 px/frame: {}, 1-4, 2-5, 2-6, 2-7, 2-7."""
    out = physics_iq.metrics(bars([8 + 3 * t for t in range(6)]), bars([8 + 2 * t for t in range(6)]), fps=2,
                             roundtrip=False)
    m = out["metrics"]
    assert out["variance"] is None
    assert m["spatiotemporal_iou"] == pytest.approx([1, 1, 1, 4 / 5, 5 / 6, 5 / 6])  # frame 0: both empty
    assert m["spatial_iou"] == pytest.approx(6 / 7)  # columns 1-6 vs 1-7
    # moving fractions per quarter column 1..7: (1, 5, 5, 5, 4, 2, 0) / 6 vs (1, 5, 5, 5, 4, 3, 2) / 6
    assert m["weighted_spatial_iou"] == pytest.approx(22 / 25)
    # quarter frames: a column is 255, 128 (one of its two sampled columns in the bar) or 0; frames 1-3 differ
    # by 128 and 127 in one column each, frame 4 by 255 twice, frame 5 by 128, 255, 127, 255
    one, last = (128 ** 2 + 127 ** 2) / 255 ** 2 / 12, (2 * 255 ** 2 + 128 ** 2 + 127 ** 2) / 255 ** 2 / 12
    assert m["mse"] == pytest.approx([0, one, one, one, 2 / 12, last])
    assert physics_iq.summary(m)["spatiotemporal_iou"] == pytest.approx(41 / 45)


def squares(xs: list[int]) -> np.ndarray:
    """A white 8 x 8 square on black at rows 12-19 and column x of each frame: (T, 32, 48, 3) uint8."""
    video = np.zeros((len(xs), 32, 48, 3), np.uint8)
    for t, x in enumerate(xs):
        video[t, 12:20, x : x + 8] = 255
    return video


def test_a_square_moving_2_vs_3_px_per_frame():
    """The masks' sizes and the metrics below were worked out from the definition with exact fractions in plain
    Python (the 25 binomial weights / 256, the running average, half-to-even rounding, 5 x 5 open and close as
    min / max over the window, quarter pixels set when 2 of their 4 sampled pixels are), not with OpenCV. At
    2 px/frame the opening leaves 6 x 6 of the first mask; quarter masks: 2 px/frame 0, 4, 8, 8, 10, 10 pixels,
    3 px/frame 0, 6, 8, 10, 12, 12, nested in the same two rows."""
    two, three = squares([8 + 2 * t for t in range(6)]), squares([8 + 3 * t for t in range(6)])
    assert physics_iq.motion_masks(two).sum((1, 2)).tolist() == [0, 36, 146, 164, 184, 200]
    assert physics_iq.motion_masks(three).sum((1, 2)).tolist() == [0, 136, 166, 194, 224, 250]
    m = physics_iq.metrics(three, two, fps=2, roundtrip=False)["metrics"]
    assert m["spatiotemporal_iou"] == pytest.approx([1, 2 / 3, 1, 4 / 5, 5 / 6, 5 / 6])  # mean 77 / 90
    assert (m["spatial_iou"], m["weighted_spatial_iou"]) == (pytest.approx(5 / 6), pytest.approx(5 / 6))
    # two of the eight quarter rows hold the square: a quarter of the bars' per-frame MSE
    one, last = (128 ** 2 + 127 ** 2) / 255 ** 2 / 48, (2 * 255 ** 2 + 128 ** 2 + 127 ** 2) / 255 ** 2 / 48
    assert m["mse"] == pytest.approx([0, one, one, one, 2 / 48, last])


def test_masks_stored_as_the_benchmark_stores_them():
    """The mp4v round trip keeps every full-size mask pixel on its side of 127 here, but blurs values: a
    quarter pixel with 2 of its 4 sampled pixels set sits at 127.5 and the codec's noise decides it, as in the
    benchmark (the clean definition gives 2/3 on frame 1 of the squares; the round trip 1/3)."""
    two, three = squares([8 + 2 * t for t in range(6)]), squares([8 + 3 * t for t in range(6)])
    masks = physics_iq.motion_masks(two)
    stored = physics_iq.mp4v_roundtrip(masks, 2)
    assert stored.shape == (6, 32, 48, 3) and ((stored > 127) == masks[..., None]).all()
    assert len(np.unique(stored)) > 2  # not exactly 0 / 255
    assert physics_iq.mp4v_roundtrip(np.zeros((3, 33, 47), bool), 8).shape == (3, 32, 46, 3)  # even size
    m = physics_iq.metrics(three, two, fps=2)["metrics"]  # deterministic for one OpenCV build
    assert m["spatiotemporal_iou"][0] == 1.0 and m["mse"][1] == pytest.approx((128 ** 2 + 127 ** 2) / 255 ** 2 / 48)


def test_first_five_seconds_and_frame_counts():
    video = bars([8 + 2 * t for t in range(6)])
    assert len(physics_iq.metrics(video, video, fps=1)["metrics"]["mse"]) == 5  # 5 s at 1 fps
    assert len(physics_iq.metrics(video, video, fps=0.9)["metrics"]["mse"]) == 5  # indices below 4.5
    with pytest.raises(ValueError, match="as many frames"):
        physics_iq.metrics(video[:4], video, fps=2)


def test_a_noisy_copy_of_the_same_motion_scores_one():
    """Noise of +-5 levels in columns 36 and up, away from the bar's path (columns 8-30, blurred 6-32): there
    blurred values and their running average stay in [95, 105], so |g - round(a)| <= 10 is never above the
    threshold, and the masks agree pixel for pixel."""
    clean = bars([8 + 3 * t for t in range(6)], background=100)
    noisy = clean.copy()
    noise = np.random.default_rng(0).integers(-5, 6, noisy[:, :, 36:].shape)
    noisy[:, :, 36:] = (noisy[:, :, 36:] + noise).astype(np.uint8)
    for roundtrip in (False, True):  # the same masks are stored the same way
        m = physics_iq.summary(physics_iq.metrics(noisy, clean, fps=2, roundtrip=roundtrip)["metrics"])
        assert (m["spatial_iou"], m["spatiotemporal_iou"], m["weighted_spatial_iou"]) == (1.0, 1.0, 1.0)
    assert 0 < m["mse"] < (5 / 255) ** 2


def test_iou_per_frame_is_averaged_not_pooled():
    a = np.zeros((3, 4, 4), bool)
    b = a.copy()
    a[1, 0, 0] = b[1, 0, 0] = True  # frame 1: one shared pixel -> 1
    a[2, 1:4, 1:4] = True  # frame 2: 9 pixels against none -> 0; frame 0: both empty -> 1
    assert physics_iq.frame_iou(a, b).tolist() == [1.0, 1.0, 0.0]  # mean 2/3; pooled it would be 1/10
    assert physics_iq.spatial_iou(a, b) == pytest.approx(1 / 10)
    assert physics_iq.weighted_spatial_iou(a, b) == pytest.approx(1 / 10)
    assert physics_iq.weighted_spatial_iou(a[:1], b[:1]) == 1.0


def view(scenario, name, metrics, variance):
    return {"scenario": scenario, "view": name, "metrics": metrics, "variance": variance}


def test_score_formula():
    model = {"spatiotemporal_iou": [1.0, 0.5], "spatial_iou": 0.6, "weighted_spatial_iou": 0.5, "mse": [0.02, 0.04]}
    real = {"spatiotemporal_iou": [1.0, 0.875], "spatial_iou": 0.8, "weighted_spatial_iou": 0.625, "mse": [0.01, 0.01]}
    views = [view(s, v, model, real) for s in ("a", "b") for v in physics_iq.VIEWS]
    # 100 * ((0.75 / 0.9375 + 0.6 / 0.8 + 0.5 / 0.625) / 3 - (0.03 - 0.01)) = 100 * (2.35 / 3 - 0.02)
    result = physics_iq.score(views)
    assert result["score"] == 76.33 and result["physical_variance"]["spatiotemporal_iou"] == 0.9375
    better = {**model, "spatial_iou": 1.2}  # a ratio above the variance's is clipped at 100
    assert physics_iq.score([view("a", "l", better, {**real, "spatial_iou": 0.4})])["score"] == 100.0
    # per-frame values are rounded to 4 decimals first: 0.00004 -> 0, so MSE - vMSE = 0 and 100 * 2.35 / 3
    tiny = {**model, "mse": [0.00004]}
    assert physics_iq.score([view("a", "l", tiny, {**real, "mse": [0.0]})])["score"] == 78.33
    with pytest.raises(ValueError, match="take 2"):
        physics_iq.score([view("a", "l", model, None)])
    with pytest.raises(ValueError, match="spatial_iou is 0"):
        physics_iq.score([view("a", "l", model, {**real, "spatial_iou": 0.0})])


def test_takes_in_the_benchmark_layout(tmp_path):
    folder = tmp_path / "split-videos" / "testing-videos" / "8FPS"
    masks = tmp_path / "video-masks" / "real" / "8FPS"
    for path in (folder / "0001_testing-videos_8FPS_perspective-left_take-1_trimmed-ball-fall.mp4",
                 folder / "0199_testing-videos_8FPS_perspective-left_take-2_trimmed-ball-fall.mp4",
                 folder / "0002_testing-videos_8FPS_perspective-center_take-1_trimmed-ball-fall.mp4",
                 masks / "0001_video-masks_8FPS_perspective-left_take-1_trimmed-ball-fall.mp4"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    takes = physics_iq.find_takes(tmp_path)
    assert sorted((t.id, t.take, t.masks is not None) for t in takes) == [("0001", 1, True), ("0002", 1, False),
                                                                        ("0199", 2, False)]
    t1, t2 = physics_iq.match_takes(tmp_path / "0001_perspective-left_trimmed-ball-fall.mp4", takes, 8.0)
    assert (t1.id, t2.id, t2.view) == ("0001", "0199", "perspective-left")
    assert physics_iq.match_takes(tmp_path / "0002_x.mp4", takes, 8.0)[1] is None  # no take 2 of that view
    assert physics_iq.match_takes(tmp_path / "0001_x.mp4", takes, 24.0) is None  # no take at 24 fps


# ---------------------------------------------------------------------------------------------- VBench


class TableFlow:
    """A flow model that returns, for pair i, a uniform flow (magnitudes[i], 0), and counts the pairs."""

    name = "table flow (test)"

    def __init__(self, magnitudes):
        self.magnitudes, self.pairs = list(magnitudes), 0

    def __call__(self, a, b):
        flow = torch.zeros(len(a), 2, *a.shape[-2:])
        flow[:, 0] = torch.tensor(self.magnitudes[self.pairs : self.pairs + len(a)])[:, None, None]
        self.pairs += len(a)
        return flow


@pytest.mark.parametrize("frames, fps, magnitudes, dynamic, needed", [
    (4, 8, [0.0, 0.76, 0.0], True, 1),  # round(4 * 4 / 16) = 1 pair above 6 * 32 / 256 = 0.75
    (4, 8, [0.0, 0.75, 0.0], False, 1),  # strictly above
    (2, 8, [0.0], True, 0),  # round(0.5) = 0 pairs needed: any video with one pair is dynamic
    (1, 8, [], False, 0),  # no pair at all
    (10, 8, [0.8] * 2 + [0.0] * 7, True, 2),  # round(2.5) = 2 (half to even)
    (6, 8, [0.8] + [0.0] * 4, False, 2),  # round(1.5) = 2
    (8, 4, [0.8] * 2 + [0.0] * 5, True, 2),  # 4 fps: no change of threshold (round(4 / 8) = 0 -> every frame)
    (24, 24, [0.8] * 2 + [0.0] * 5, True, 2),  # 24 fps: every 3rd frame -> 8 frames, 7 pairs
])
def test_dynamic_degree_rule(frames, fps, magnitudes, dynamic, needed):
    flow = TableFlow(magnitudes)
    result = vbench.dynamic_degree(np.zeros((frames, 32, 32, 3), np.uint8), fps, flow)
    assert (result["dynamic"], result["count_needed"], result["threshold"]) == (dynamic, needed, 0.75)
    assert flow.pairs == len(magnitudes) and result["model"] == "table flow (test)"


def test_dynamic_degree_top_five_percent_on_the_padded_field():
    video = np.zeros((2, 30, 30, 3), np.uint8)
    video[:, :, 0] = 200  # the left column, replicated into the padding
    seen = []

    def flow(a, b):  # 25 pixels of magnitude 2 in a 32 x 32 field: top int(1024 * 0.05) = 51 -> 50 / 51
        seen.append(a)
        field = torch.zeros(1, 2, 32, 32)
        field[0, 1, :5, :5] = 2.0
        return field

    flow.name = "sparse"
    result = vbench.dynamic_degree(video, 8, flow)
    assert result["pair_scores"] == [pytest.approx(50 / 51)] and result["threshold"] == 6 * 30 / 256
    assert seen[0].shape == (1, 3, 32, 32) and (seen[0][0, :, :, :2] == 200).all() and (seen[0][0, :, :, 2] == 0).all()


class Blend:
    """Halfway frames as the mean of the two neighbours: exact for brightness that changes linearly."""

    name = "blend (test)"

    def __call__(self, a, b):
        return (a + b) / 2


def test_motion_smoothness_protocol():
    # even frames 0, 20, 40 predict 10 and 30 for odd frames 30 and 30: MAE (20 + 0) / 2 = 10
    assert vbench.motion_smoothness(uniform([0, 30, 20, 30, 40]), Blend())["score"] == pytest.approx(245 / 255)
    # with an even frame count the last odd frame has no prediction and is not scored
    result = vbench.motion_smoothness(uniform([0, 30, 20, 30, 40, 200]), Blend())
    assert result["score"] == pytest.approx(245 / 255) and result["model"] == "blend (test)"
    # 0 and 27 -> 13.5, cast to uint8 by truncation: 13 against 14 is an MAE of 1 (rounding would give 0)
    assert vbench.motion_smoothness(uniform([0, 14, 27]), Blend())["mae"] == 1.0


def test_temporal_flickering():
    assert vbench.temporal_flickering(uniform([5] * 4)) == 1.0
    assert vbench.temporal_flickering(uniform([0, 10, 0, 10])) == pytest.approx(245 / 255)


def test_stand_ins_are_named_and_order_smooth_before_jerky():
    def moving(xs):
        video = np.zeros((len(xs), 32, 32, 3), np.uint8)
        for t, x in enumerate(xs):
            video[t, 6:10, x : x + 4] = 255
        return video

    smooth = vbench.motion_smoothness(moving([2, 4, 6, 8, 10, 12, 14, 16]))
    jerky = vbench.motion_smoothness(moving([2, 2, 6, 6, 10, 10, 14, 14]))
    assert vbench.motion_smoothness(moving([5] * 8))["score"] == 1.0 and smooth["score"] > jerky["score"]
    assert "stand-in" in smooth["model"] and "stand-in" in vbench.dynamic_degree(moving([5] * 8), 8)["model"]
    degree = vbench.dynamic_degree(moving(list(range(2, 26, 3))), 8)  # 3 px per frame, threshold 0.75
    assert degree["dynamic"] and min(degree["pair_scores"]) > degree["threshold"]


def test_flow_recovers_a_translation():
    rng = np.random.default_rng(0)
    texture = torch.nn.functional.avg_pool2d(torch.tensor(rng.random((1, 3, 40, 40))), 5, 1).numpy()[0]  # (3, 36, 36)
    frame = texture.transpose(1, 2, 0)
    a, b = frame[None, 2:34, 2:34], frame[None, 2:34, 1:33]  # b(p + (1, 0)) = a(p): content moved one pixel right
    flow = light.optical_flow(a, b)[0, :, 4:-4, 4:-4]
    assert flow[0].median().item() == pytest.approx(1.0, abs=0.15) and abs(flow[1].median().item()) < 0.15


class ConstantRAFT(torch.nn.Module):
    def forward(self, image1: torch.Tensor, image2: torch.Tensor, num_flow_updates: int = 12) -> list[torch.Tensor]:
        flow = torch.zeros(image1.shape[0], 2, image1.shape[2], image1.shape[3])
        return [flow, flow + float(num_flow_updates) + image1.min() + 1]  # 20 + (-1) + 1 for black frames


class MeanAMT(torch.nn.Module):
    def forward(self, img0: torch.Tensor, img1: torch.Tensor, embt: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"imgt_pred": img0 * (1 - embt) + img1 * embt + img0.shape[-1] / 1000}


def test_torchscript_models_are_called_as_vbench_calls_them(tmp_path):
    torch.jit.script(ConstantRAFT()).save(str(tmp_path / "raft.pt"))
    torch.jit.script(MeanAMT()).save(str(tmp_path / "amt.pt"))
    raft = vbench.load_flow(tmp_path / "raft.pt")
    degree = vbench.dynamic_degree(np.zeros((2, 30, 30, 3), np.uint8), 8, raft)
    assert degree["pair_scores"] == [pytest.approx(20 * 2 ** 0.5)] and degree["model"].startswith("RAFT")
    amt = vbench.load_interpolator(tmp_path / "amt.pt")
    middle = amt(torch.zeros(1, 3, 20, 30), torch.ones(1, 3, 20, 30))
    assert middle.shape == (1, 3, 20, 30) and middle.flatten()[0].item() == pytest.approx(0.5 + 32 / 1000)
    with pytest.raises(FileNotFoundError):
        vbench.load_flow(tmp_path / "missing.pt")


def test_exported_programs_load(tmp_path):
    frames = (torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 32, 32))
    torch.export.save(torch.export.export(ConstantRAFT(), frames), str(tmp_path / "raft.pt2"))
    degree = vbench.dynamic_degree(np.zeros((2, 30, 30, 3), np.uint8), 8, vbench.load_flow(tmp_path / "raft.pt2"))
    assert degree["pair_scores"] == [pytest.approx(12 * 2 ** 0.5)]  # num_flow_updates is fixed at export (12)


# ------------------------------------------------------------------------------------------------ command


def test_light_metrics_command(tmp_path):
    write_mp4(tmp_path / "gen" / "a.mp4", bars([8 + 3 * t for t in range(6)], height=16), fps=2)
    write_mp4(tmp_path / "gen" / "b.mp4", bars([8] * 6, height=16), fps=2)
    write_mp4(tmp_path / "ref" / "a.mp4", bars([8 + 3 * t for t in range(6)], height=16), fps=2)
    result = runner.invoke(app, ["light-metrics", "--videos", str(tmp_path / "gen"), "--reference", str(tmp_path / "ref"),
                                 "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    payload = json.loads((tmp_path / "out" / "light_metrics.json").read_text())
    assert payload["videos"][0]["spatial_iou"] == 1.0 and payload["videos"][0]["mse"] == 0.0
    assert "no reference video for b.mp4" in payload["videos"][1]["reference_error"]
    assert payload["videos"][1]["temporal_flickering"] == 1.0
    made_by = {k: m["made_by"] for k, m in payload["summary"]["metrics"].items()}
    assert "stand-in" in made_by["dynamic_degree"] and "stand-in" in made_by["motion_smoothness"]
    assert "one reference clip" in made_by["spatial_iou"]
    assert "| spatial_iou | 1 |" in (tmp_path / "out" / "light_metrics.md").read_text()


def test_light_metrics_command_on_the_physics_iq_layout(tmp_path):
    real = tmp_path / "physics-IQ-benchmark" / "split-videos" / "testing-videos" / "2FPS"
    take = bars([8 + 3 * t for t in range(10)], height=16)
    write_mp4(real / "0001_testing-videos_2FPS_perspective-left_take-1_trimmed-bar.mp4", take, fps=2)
    write_mp4(real / "0002_testing-videos_2FPS_perspective-left_take-2_trimmed-bar.mp4", take, fps=2)
    write_mp4(tmp_path / "gen" / "0001_perspective-left_trimmed-bar.mp4", take, fps=2)  # identical to take 1
    result = runner.invoke(app, ["light-metrics", "--videos", str(tmp_path / "gen"), "--physics-iq",
                                 str(tmp_path / "physics-IQ-benchmark"), "--out", str(tmp_path / "out"), "--threads", "1"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "out" / "light_metrics.json").read_text())["summary"]
    # the video is take 1 and take 2 repeats it: every ratio is 1 and both MSEs 0 -> 100
    assert summary["physics_iq_score"]["score"] == 100.0
    assert "real takes" in summary["metrics"]["spatial_iou"]["made_by"]
    assert "Physics-IQ score: 100.00" in result.output
