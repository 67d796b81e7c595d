"""Measure the evaluator on simulator videos and on each corruption kind (the README's table).

    .venv/bin/python scripts/evaluator_rates.py [--n 300]
"""

import argparse
import collections
import random
import time

from physalign.eval import evaluate_video
from physalign.world.corrupt import CORRUPTIONS, corrupt
from physalign.world.render import render
from physalign.world.scene import sample_scene
from physalign.world.sim import simulate


def main(n: int, seed: int) -> None:
    rng = random.Random(seed)
    clean, flagged, applied, seconds = collections.Counter(), collections.Counter(), collections.Counter(), 0.0
    for i in range(n):
        scene = sample_scene(rng, held_out=None)
        rollout = simulate(scene, i)
        video = render(scene, rollout)
        start = time.perf_counter()
        result = evaluate_video(video, scene)
        seconds += time.perf_counter() - start
        clean.update(pc=result.pc, sa=result.sa, joint=result.joint)
        for kind in CORRUPTIONS:
            bad = corrupt(scene, rollout, kind, random.Random(i), seed=i)
            if bad is not None:
                applied[kind] += 1
                flagged[kind] += not evaluate_video(bad, scene).joint
    print(f"simulator videos (n={n}): " + ", ".join(f"{k} {clean[k] / n:.3f}" for k in ("pc", "sa", "joint")))
    print(f"scoring speed: {n / seconds:.0f} videos/s (arrays in memory)")
    for kind in CORRUPTIONS:
        print(f"{kind:20s} applies to {applied[kind]:4d}  flagged {flagged[kind] / max(applied[kind], 1):.3f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--seed", type=int, default=5)
    main(**vars(ap.parse_args()))
