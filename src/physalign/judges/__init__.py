"""Judges: models that answer yes/no and 1-5 questions about videos, differentiably (DiffPhy's rewards,
PhysHPO's data selection)::

    judge = load_world_judge("checkpoints/judge")                # frozen, eval mode
    p = judge.yes_prob(videos, [fact_question(f) for f in facts])  # (B,), differentiable in videos
    r = judge.expected_rating(videos, [PLAUSIBILITY_QUESTION] * len(videos))  # (B,) in [1, 5]

- :mod:`base`: the :class:`Judge` interface and the question builders every judge shares;
- :mod:`world`: the world judge, a small video classifier trained on the physics world (:mod:`data`,
  :mod:`train`; ``physalign train-judge``);
- :mod:`vlm`: a transformers video-language model loaded from a local folder, scored from its logits of the
  answer tokens (``from physalign.judges.vlm import VLMJudge``).
"""

from physalign.judges.base import PLAUSIBILITY_QUESTION, Judge, fact_question, prompt_question
from physalign.judges.world import WorldJudge, load_world_judge

__all__ = ["PLAUSIBILITY_QUESTION", "Judge", "WorldJudge", "fact_question", "load_world_judge", "prompt_question"]
