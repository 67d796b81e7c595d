"""The judge interface: a model that answers questions about videos, differentiably.

Videos are ``(B, 3, T, H, W)`` in [-1, 1] (the generators' decode range), one question per video.

- ``yes_prob(videos, questions) -> (B,)``: ``P(yes) / (P(yes) + P(no))`` from the judge's logits of the two
  answers (VideoPhy's score); differentiable in ``videos``, so DiffPhy can back-propagate through it.
- ``rating(videos, questions) -> (B, 5)``: a probability distribution over the ratings 1..5 (VideoPhy-2's
  scale); ``expected_rating`` is its mean.
- ``rating_replies(videos, questions) -> list[str]``: what a judge with a text decoder answers (greedy), for
  protocols that parse a generated answer (VideoPhy-2's); judges without one raise.

A judge that reads text in a conversation (:class:`Conversation`: a yes/no and a rating template) can be asked
in another one with ``with_conversation``; the others (the world judge) raise.

The three kinds of question the methods ask (DiffPhy's L_phen, L_com, L_sem; PhysHPO's data selection) are
built by the functions below, so every judge sees them worded the same way.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Sequence

import torch

PLAUSIBILITY_QUESTION = "does the video follow the laws of physics?"


def fact_question(fact: str) -> str:
    """A phenomenon fact ("the ball bounces off the floor") as a yes/no question."""
    return f"is it true that {fact.strip().rstrip('.')}?"


def prompt_question(prompt: str) -> str:
    """Does the video show what the prompt asks for (semantic adherence)?"""
    return f"does the video show {prompt.strip().rstrip('.')}?"


@dataclass(frozen=True)
class Conversation:
    """The text around a question: ``answer`` for yes/no questions, ``rating`` for 1-5 ones; each has the
    fields ``{video}`` (where the judge's video placeholder goes) and ``{question}``."""

    answer: str
    rating: str


class Judge(abc.ABC):
    """Subclasses implement :meth:`answer_logits` and :meth:`rating_logits`; the rest follows."""

    @abc.abstractmethod
    def answer_logits(self, videos: torch.Tensor, questions: Sequence[str]) -> torch.Tensor:
        """(B, 3, T, H, W), B questions -> (B, 2): logits of the answers (yes, no)."""

    @abc.abstractmethod
    def rating_logits(self, videos: torch.Tensor, questions: Sequence[str]) -> torch.Tensor:
        """(B, 3, T, H, W), B questions -> (B, 5): logits of the ratings 1..5."""

    def yes_prob(self, videos: torch.Tensor, questions: Sequence[str]) -> torch.Tensor:
        """(B,) = P(yes) / (P(yes) + P(no)) = softmax over the two answer logits."""
        check_batch(videos, questions)
        return self.answer_logits(videos, questions).softmax(-1)[:, 0]

    def rating(self, videos: torch.Tensor, questions: Sequence[str]) -> torch.Tensor:
        """(B, 5): probabilities of the ratings 1..5."""
        check_batch(videos, questions)
        return self.rating_logits(videos, questions).softmax(-1)

    def expected_rating(self, videos: torch.Tensor, questions: Sequence[str]) -> torch.Tensor:
        """(B,) = sum_k k * P(rating = k), in [1, 5]."""
        p = self.rating(videos, questions)
        return p @ torch.arange(1, 6, dtype=p.dtype, device=p.device)

    def rating_replies(self, videos: torch.Tensor, questions: Sequence[str], max_new_tokens: int = 256) -> list[str]:
        """B greedy replies to the rating questions; only judges with a text decoder have them."""
        raise NotImplementedError(f"{type(self).__name__} has no text decoder: it cannot reply in words "
                                  "(use a protocol that reads the rating logits)")

    def with_conversation(self, conversation: Conversation) -> "Judge":
        """The same judge asking in ``conversation``; only judges that read text in a conversation have it."""
        raise NotImplementedError(f"{type(self).__name__} reads questions in its own wording, not in a "
                                  "conversation template")


def check_batch(videos: torch.Tensor, questions: Sequence[str]) -> None:
    if videos.ndim != 5 or videos.shape[1] != 3:
        raise ValueError(f"videos must have shape (B, 3, T, H, W). Got {tuple(videos.shape)}.")
    if len(questions) != videos.shape[0]:
        raise ValueError(f"one question per video: got {len(questions)} questions for {videos.shape[0]} videos.")
