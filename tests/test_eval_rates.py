"""The evaluator's targets on random scenes, generated in-process: it passes >= 97% of the simulator's own
videos (PC, SA and Joint) and flags >= 95% of the corrupted ones, for every corruption kind."""

import collections
import random

import numpy as np
import pytest

from physalign.eval import evaluate_video
from physalign.world.corrupt import CORRUPTIONS, applicable, corrupt
from physalign.world.render import render
from physalign.world.scene import sample_scene
from physalign.world.sim import simulate

N = 400
MIN_APPLIED = 30  # a rate over fewer clips says little


@pytest.fixture(scope="module")
def scored():
    rng = random.Random(2024)
    clean, flagged = [], collections.defaultdict(list)
    for i in range(N):
        scene = sample_scene(rng, held_out=None)
        rollout = simulate(scene, 7000 + i)
        video = render(scene, rollout)
        clean.append(evaluate_video(video, scene))
        for kind in applicable(scene, rollout):
            result = evaluate_video(corrupt(video, scene, rollout, kind, random.Random(i)), scene)
            flagged[kind].append((not result.pc, not result.joint))
    return clean, flagged


@pytest.mark.parametrize("metric", ["pc", "sa", "joint"])
def test_simulator_videos_pass(scored, metric):
    clean, _ = scored
    rate = np.mean([getattr(r, metric) for r in clean])
    failures = collections.Counter(n for r in clean for n in r.failed)
    assert rate >= 0.97, f"{metric} passes {rate:.3f} of simulator videos; failing checks {failures}"


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_corruptions_are_flagged(scored, kind):
    _, flagged = scored
    got = np.array(flagged[kind])
    assert len(got) >= MIN_APPLIED, f"{kind} applied to only {len(got)} of {N} clips"
    pc, joint = got.mean(0)
    assert pc >= 0.95 and joint >= 0.95, f"{kind}: PC fails on {pc:.3f}, Joint on {joint:.3f} of {len(got)}"
