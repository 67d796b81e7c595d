"""What the model backends share: templates, validation, retries and the cache around one ``complete``.

A backend implements ``complete(messages, schema) -> str`` (one chat turn, the raw answer text) and
``settings()`` (what decides its answers: endpoint and model, or weights; never a credential). This class
renders the template, asks, parses and validates the answer, and retries with exponential backoff —
``backoff * 2**i`` seconds after failed attempt ``i`` — on :class:`TransientError` (timeouts, connection
errors, HTTP 429/5xx) and :class:`InvalidAnswer` (not JSON, or not of the schema), up to ``attempts``
attempts in all. Valid answers are cached (``cache``: a folder), keyed by settings, template text and
request; an invalid answer is never cached, so a later run asks again.
"""

from __future__ import annotations

import abc
import time
from typing import Callable

from physalign.reasoning.answer import AXIS_HELP, PERTURB_SCHEMA, REASON_SCHEMA, load_template, read_answer, render, to_reasoning, validate
from physalign.reasoning.base import EndpointError, InvalidAnswer, NoPerturbation, Reasoner, Reasoning, TransientError, check_axis
from physalign.reasoning.cache import DiskCache

TEMPLATES = ("reason.txt", "perturb.txt")
MAX_BACKOFF = 60.0  # s


class ChatReasoner(Reasoner):
    def __init__(self, attempts: int = 3, backoff: float = 1.0, cache: str | None = None):
        if attempts < 1:
            raise ValueError(f"attempts must be >= 1. Got {attempts}.")
        self.attempts, self.backoff = attempts, backoff
        self.cache = DiskCache(cache) if cache is not None else None
        self.templates = {name: load_template(name) for name in TEMPLATES}

    @abc.abstractmethod
    def complete(self, messages: list[dict], schema: dict) -> str:
        """One chat turn: [{"role": "user", "content": ...}] -> the answer's text."""

    @abc.abstractmethod
    def settings(self) -> dict:
        """JSON-able settings that decide the answers (part of the cache key)."""

    def reason(self, prompt: str) -> Reasoning:
        return to_reasoning(self.ask("reason.txt", REASON_SCHEMA, prompt=prompt))

    def perturb(self, prompt: str, axis: str) -> str:
        check_axis(axis)

        def changed(answer: dict) -> None:
            new = answer["prompt"]
            if new is not None and _words(new) == _words(prompt):
                raise InvalidAnswer(f"answer.prompt is the unchanged prompt {new!r}")

        answer = self.ask("perturb.txt", PERTURB_SCHEMA, changed, prompt=prompt, axis=axis, axis_help=AXIS_HELP[axis])
        if answer["prompt"] is None:
            raise NoPerturbation(f"{self.kind}: no other {axis} can happen in {prompt!r} ({answer['current']})")
        return answer["prompt"].strip()

    def ask(self, template: str, schema: dict, check: Callable[[dict], None] | None = None, **values: str):
        """The validated JSON answer to ``templates/<template>`` filled with ``values`` (cached)."""
        text = render(self.templates[template], **values)
        request = {"backend": self.settings(), "template": self.templates[template], "values": values}
        cached = self.cache.get(request) if self.cache is not None else None
        if cached is not None and _fits(cached, schema, check):
            return cached

        def attempt():
            answer = read_answer(self.complete([{"role": "user", "content": text}], schema), schema)
            if check is not None:
                check(answer)
            return answer

        answer = self._retry(attempt, values["prompt"])
        if self.cache is not None:
            self.cache.put(request, answer)
        return answer

    def _retry(self, attempt: Callable[[], dict], prompt: str) -> dict:
        for i in range(self.attempts):
            try:
                return attempt()
            except (TransientError, InvalidAnswer) as err:
                last = err
                if i + 1 < self.attempts:
                    time.sleep(min(self.backoff * 2**i, MAX_BACKOFF))
        kind = InvalidAnswer if isinstance(last, InvalidAnswer) else EndpointError
        raise kind(f"{self.kind} gave no valid answer for {prompt!r} in {self.attempts} attempt(s); last: {last}") from last


def _fits(answer, schema: dict, check) -> bool:
    try:
        validate(answer, schema)
        if check is not None:
            check(answer)
        return True
    except InvalidAnswer:
        return False


def _words(text: str) -> list[str]:
    return text.lower().replace(",", " ").replace(".", " ").split()
