"""How the benchmarks' official judges are asked and how their answers are read (facts of the protocols).

VideoPhy's judge is VideoCon-Physics, VideoPhy-2's is VideoPhy-2-AutoEval; both are mPLUG-Owl-Video models
(``model_type`` ``"mplug-owl"``) whose modelling code ships with the benchmark's repository, not with
transformers, so physalign cannot build them (:func:`refuse_official`). What it can do is ask any other judge
exactly as they are asked; the strings below are the protocol, reproduced verbatim because they are what makes
scores comparable:

- **VideoPhy** (``Hritikbansal/videophy``: ``utils/constants.py`` ``PROMPT_VTA``, ``PROMPT_PHYSICS``; scored by
  ``videocon/training/pipeline_video/entailment_inference.py`` ``get_entail``): the mPLUG-Owl conversation
  :data:`VIDEOPHY_CONVERSATION` around :func:`videophy_caption_question` (SA) and
  :data:`VIDEOPHY_PHYSICS_QUESTION` (PC); the score is ``P(Yes) / (P(Yes) + P(No))`` of the next token after
  the prompt, written as a continuous number (no threshold in the reference code).
- **VideoPhy-2** (``VIDEOPHY2/template.py`` ``PROMPT_SA``, ``PROMPT_PHYSICS``; ``VIDEOPHY2/inference.py``
  ``inference``): the conversation :data:`VIDEOPHY2_CONVERSATION` (note "an AI assistant", where VideoPhy has
  "AI assistant") around :func:`videophy2_caption_question` and :data:`VIDEOPHY2_PHYSICS_QUESTION`, whose rating
  instructions are part of the question; the judge **generates** a greedy reply (``do_sample=False``,
  ``max_length=256``) and :func:`parse_rating` reads it; SA and PC pass at >= 4 (``VIDEOPHY2/README.md``).
- Both read 32 frames, frame ``int(s / 2) + round(s * i)`` with ``s = (frames - 1) / 32``
  (``mplug_owl_video/processing_mplug_owl.py`` ``get_index``), each resized to 224 x 224. That is the official
  judges' input, not part of the prompt: another judge reads frames its own way
  (:class:`~physalign.judges.vlm.VLMJudge`'s ``frames``).
"""

from __future__ import annotations

from dataclasses import dataclass

from physalign.judges.base import Conversation

_PREAMBLE = ("The following is a conversation between a curious human and {ai}. The assistant gives helpful, "
             "detailed, and polite answers to the user's questions.\n")
_TURNS = "Human: {video}\nHuman: {question}\nAI: "

# VideoPhy asks yes/no questions only; its judge is read at the same place for both.
_VIDEOPHY = _PREAMBLE.format(ai="AI assistant") + _TURNS
VIDEOPHY_CONVERSATION = Conversation(answer=_VIDEOPHY, rating=_VIDEOPHY)
VIDEOPHY_PHYSICS_QUESTION = "Does this video follow the physical laws?"

_VIDEOPHY2 = _PREAMBLE.format(ai="an AI assistant") + _TURNS
VIDEOPHY2_CONVERSATION = Conversation(answer=_VIDEOPHY2, rating=_VIDEOPHY2)
VIDEOPHY2_PHYSICS_QUESTION = ("Does this video adhere to the physical laws? Rate the video on a scale from 1 to 5, "
                              "where 5 means full compliance and 1 means significant violations.")

# inference.py's num_map: searched in this order, the first key found anywhere in the lower-cased reply wins
REPLY_RATINGS = {"zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5,
                 "0": 0, "1": 1, "2": 2, "3": 3, "4": 4, "5": 5}


def videophy_caption_question(caption: str) -> str:
    return f'Does this video entail the description: "{caption}"?'


def videophy2_caption_question(caption: str) -> str:
    return (f'Does this video match the description: "{caption}"? Please rate the video on a scale from 1 to 5, '
            "where 5 indicates a perfect match and 1 indicates no relevance.")


def parse_rating(reply: str) -> int:
    """VideoPhy-2's reading of a generated reply (``VIDEOPHY2/inference.py``, ``inference``): the value of the
    first of :data:`REPLY_RATINGS` (in its order) that occurs as a substring of the lower-cased reply, so
    "someone" reads 1 and "10" reads 0; else the reply's digits joined into one number if it is 0..5; else 0.

    The reference raises on digits ``int`` cannot read (e.g. "²"); this returns 0 for them."""
    text = reply.lower().strip()
    for key, value in REPLY_RATINGS.items():
        if key in text:
            return value
    digits = "".join(c for c in text if c.isdigit())
    try:
        value = int(digits)
    except ValueError:
        return 0
    return value if 0 <= value <= 5 else 0


@dataclass(frozen=True)
class OfficialJudge:
    """The judge whose scores a benchmark publishes: its name, where its weights or code are, which table."""

    name: str
    hub: str
    leaderboard: str


OFFICIAL_JUDGES = {
    "videophy": OfficialJudge("VideoCon-Physics", "videophysics/videocon_physics",
                              "VideoPhy's automatic leaderboard (its README; the human one is of human ratings)"),
    "videophy2": OfficialJudge("VideoPhy-2-AutoEval", "videophysics/videophy_2_auto",
                               "VideoPhy-2's AutoEval scores (its leaderboard is of human ratings)"),
    "phygenbench": OfficialJudge("PhyGenEval", "OpenGVLab/PhyGenBench (PhyGenEval)",
                                 "PhyGenBench's scores (a three-stage pipeline of VLMs and GPT-4o)"),
}
OFFICIAL_MODEL_TYPES = ("mplug-owl",)


def refuse_official(model_type: str | None, where: str) -> None:
    """Raise a ValueError that says what to do if ``model_type`` is the official judges' (mPLUG-Owl-Video)."""
    if model_type in OFFICIAL_MODEL_TYPES:
        raise ValueError(
            f"{where}: model_type {model_type!r} is mPLUG-Owl-Video (VideoCon-Physics, VideoPhy-2-AutoEval). "
            "transformers has no mPLUG-Owl classes and physalign does not copy the benchmark's modelling code, so it "
            "cannot load this judge; run the benchmark's own inference scripts on these videos for leaderboard-"
            "comparable scores, or give a LLaVA-NeXT-Video folder with --protocol benchmark")
