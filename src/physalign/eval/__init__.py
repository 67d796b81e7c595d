"""The physics evaluator: pixels + the prompt's scene -> PC / SA / Joint with per-check diagnostics.

``track`` finds the objects by colour, ``motion`` turns tracks into contacts, free flight and fits,
``physics`` and ``semantics`` hold the checks, ``score`` runs them over a video or a manifest, ``stats``
and ``report`` summarise. A pure core: numpy only, no torch, no logging, no command line.
"""

from physalign.eval.score import ManifestError, VideoResult, evaluate_manifest, evaluate_video

__all__ = ["ManifestError", "VideoResult", "evaluate_manifest", "evaluate_video"]
