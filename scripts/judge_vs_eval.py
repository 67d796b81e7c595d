"""How well the world judge agrees with the exact evaluator on *generated* videos (which it never trained on).

For each sampled video of a ``physalign sample`` manifest scored by ``physalign eval`` (its ``eval.json``):
the judge's P(yes) to the plausibility question against the evaluator's PC verdict, and to the prompt
question against its SA verdict. Prints, per pair, the pass rates, the judge's mean P(yes) on passing and
failing videos, its accuracy at P(yes) >= 0.5 and the ROC AUC (the chance that a passing video scores
above a failing one; 0.5 = no signal)::

    OMP_NUM_THREADS=1 .venv/bin/python scripts/judge_vs_eval.py --judge checkpoints/judge \\
        --samples runs/demo96/samples/manifest.jsonl --eval runs/demo96/eval/base_model/eval.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from physalign.judges import PLAUSIBILITY_QUESTION, load_world_judge, prompt_question
from physalign.models.interface import to_model_range
from physalign.world.dataset import load_manifest, read_all_videos


def auc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """P(score of a positive > score of a negative), ties counted half; None without both classes."""
    pos, neg = scores[positive], scores[~positive]
    if not len(pos) or not len(neg):
        return None
    greater = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    return round(float(greater), 3)


def agreement(p_yes: np.ndarray, passed: np.ndarray) -> dict:
    return {"n": len(passed), "pass_rate": round(float(passed.mean()), 3),
            "mean_p_yes_pass": round(float(p_yes[passed].mean()), 3) if passed.any() else None,
            "mean_p_yes_fail": round(float(p_yes[~passed].mean()), 3) if (~passed).any() else None,
            "accuracy": round(float(((p_yes >= 0.5) == passed).mean()), 3), "auc": auc(p_yes, passed)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--judge", default="checkpoints/judge")
    parser.add_argument("--samples", required=True, help="manifest.jsonl of the sampled videos")
    parser.add_argument("--eval", required=True, help="eval.json of physalign eval on those videos")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = load_manifest(args.samples)
    verdicts = {v["video"]: v for v in json.loads(Path(args.eval).read_text())["videos"]}
    missing = [r["video"] for r in rows if r["video"] not in verdicts]
    if missing:
        raise SystemExit(f"{args.eval}: no verdict for {len(missing)} videos, e.g. {missing[:3]}")
    videos = to_model_range(read_all_videos(args.samples, rows))
    judge = load_world_judge(args.judge)
    with torch.no_grad():
        plausible = judge.yes_prob(videos, [PLAUSIBILITY_QUESTION] * len(rows)).numpy()
        matches = judge.yes_prob(videos, [prompt_question(r["prompt"]) for r in rows]).numpy()
    pc = np.array([verdicts[r["video"]]["pc"] for r in rows])
    sa = np.array([verdicts[r["video"]]["sa"] for r in rows])
    print(json.dumps({"plausibility_vs_pc": agreement(plausible, pc), "prompt_vs_sa": agreement(matches, sa)}, indent=2))


if __name__ == "__main__":
    main()
