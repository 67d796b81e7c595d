"""The physics evaluator: pixels + the prompt's scene -> PC / SA / Joint with per-check diagnostics.

A pure core: numpy only, no torch, no logging or CLI.
"""

from physalign.eval.score import VideoResult, evaluate_manifest, evaluate_video

__all__ = ["VideoResult", "evaluate_manifest", "evaluate_video"]
