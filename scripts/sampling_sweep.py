"""Score a model under several sampling settings on one world split (the README's guidance / Euler-step sweep).

    OMP_NUM_THREADS=1 .venv/bin/python scripts/sampling_sweep.py --checkpoint checkpoints/base --split val \
        --n 64 --seed 7 --out runs/sweep 30:2 30:4 50:4 30:10

Each setting is ``steps:guidance``; prints one JSON line per setting (PC, SA, Joint, in-distribution SA, and
the kind and direction checks' pass rates). Samples are kept in OUT, so a rerun only scores them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from physalign.eval import evaluate_manifest
from physalign.eval.stats import summarize
from physalign.models.interface import load_model
from physalign.models.sample_folder import sample_to_folder
from physalign.world.dataset import generate, load_manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--split", default="val")
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("settings", nargs="+", help="steps:guidance, e.g. 30:4")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = generate(args.out / f"world_{args.split}_{args.n}_{args.seed}", args.n, args.split, args.seed)
    model = load_model(args.checkpoint)
    for setting in args.settings:
        steps, guidance = int(setting.split(":")[0]), float(setting.split(":")[1])
        folder = args.out / f"s{steps}_g{guidance}"
        manifest = folder / "manifest.jsonl"
        if not manifest.is_file():
            manifest = sample_to_folder(model, load_manifest(data), folder, steps=steps, guidance=guidance, seed=args.seed)
        s = summarize(evaluate_manifest(manifest))
        rates = {k: round(s["overall"][k]["mean"], 3) for k in ("pc", "sa", "joint")}
        checks = {k: round(s["checks"][k]["pass_rate"], 3) for k in ("kind", "direction")}
        print(json.dumps({"steps": steps, "guidance": guidance, **rates,
                          "id_sa": round(s["split"]["in-distribution"]["sa"]["mean"], 3), **checks}), flush=True)


if __name__ == "__main__":
    main()
