"""Judges: models that answer yes/no and 1-5 questions about videos, differentiably (DiffPhy's rewards,
PhysHPO's data selection)::

    judge = load_world_judge("checkpoints/judge")                # frozen, eval mode
    p = judge.yes_prob(videos, [fact_question(f) for f in facts])  # (B,), differentiable in videos
    r = judge.expected_rating(videos, [PLAUSIBILITY_QUESTION] * len(videos))  # (B,) in [1, 5]

- :mod:`base`: the :class:`Judge` interface and the question builders every judge shares;
- :mod:`world`: the world judge, a small video classifier trained on the physics world (:mod:`data`,
  :mod:`train`; ``physalign train-judge``);
- :mod:`vlm`: a transformers video-language model loaded from a local folder, scored from its logits of the
  answer tokens (``from physalign.judges.vlm import VLMJudge``);
- :mod:`official`: how the benchmarks' own judges (VideoCon-Physics, VideoPhy-2-AutoEval) are asked and read;
  physalign cannot load those judges themselves (mPLUG-Owl-Video is not in transformers).

:func:`load_judge` loads either from a folder, picking the kind by the folder's ``config.json``.
"""

import json
from pathlib import Path

from physalign.assets import resolve
from physalign.judges.base import PLAUSIBILITY_QUESTION, Judge, fact_question, prompt_question
from physalign.judges.official import refuse_official
from physalign.judges.world import WorldJudge, load_world_judge

VLM_TYPES = ("llava_next_video",)  # transformers model_type values that VLMJudge reads

__all__ = ["PLAUSIBILITY_QUESTION", "VLM_TYPES", "Judge", "WorldJudge", "fact_question", "load_judge",
           "load_world_judge", "prompt_question"]


def load_judge(path: str | Path, device: str = "cpu") -> Judge:
    """The frozen judge in folder ``path``: a video-language model if its ``config.json`` has a transformers
    ``model_type`` (one of :data:`VLM_TYPES`; :class:`~physalign.judges.vlm.VLMJudge`, frames as given), else
    the world judge (``config.json`` holds its sizes, which have no ``model_type``)."""
    path = resolve(path)
    config = path / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{path}: not a judge folder (no config.json)")
    kind = json.loads(config.read_text()).get("model_type")
    refuse_official(kind, str(config))
    if kind is None:
        return load_world_judge(path, device)
    if kind not in VLM_TYPES:
        raise ValueError(f"{config}: model_type {kind!r} is not a judge physalign reads; it reads world judge folders "
                         f"and video-language models of types {list(VLM_TYPES)}")
    from physalign.judges.vlm import VLMJudge  # imports the large model classes only when asked for

    return VLMJudge.from_pretrained(path, device=device)
