"""Any OpenAI-compatible chat endpoint (vLLM, Ollama, hosted APIs), over the standard library.

One request is ``POST {base_url}/chat/completions`` with ``{"model", "messages", "temperature"}`` and,
when asked for, ``response_format``: ``"json_object"`` sends ``{"type": "json_object"}``,
``"json_schema"`` sends the template's schema (``{"type": "json_schema", "json_schema": {...}}``). The
answer text is ``choices[0].message.content``.

``timeout`` bounds each socket operation (connecting, and each wait for bytes), not a whole request: a
server that never answers fails after ``timeout`` seconds, one that trickles bytes can take longer.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import urllib.error
import urllib.request

from physalign.reasoning.base import EndpointError, InvalidAnswer, TransientError
from physalign.reasoning.chat import ChatReasoner

RESPONSE_FORMATS = ("none", "json_object", "json_schema")


class OpenAIReasoner(ChatReasoner):
    """``api_key_env``: the name of the environment variable holding the API key (sent as a bearer
    token); None sends none (local vLLM or Ollama need none). The key is read once, here, and is part
    of neither the cache key nor any error message."""

    kind = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        temperature: float = 0.0,
        response_format: str = "none",
        max_tokens: int | None = None,
        timeout: float = 60.0,
        api_key_env: str | None = None,
        attempts: int = 3,
        backoff: float = 1.0,
        cache: str | None = None,
    ):
        super().__init__(attempts, backoff, cache)
        if response_format not in RESPONSE_FORMATS:
            raise ValueError(f"response_format must be one of {RESPONSE_FORMATS}. Got {response_format!r}.")
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://. Got {base_url!r}.")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.temperature, self.response_format = model, temperature, response_format
        self.max_tokens, self.timeout = max_tokens, timeout
        self._headers = {"Content-Type": "application/json"}
        if api_key_env is not None:
            if not os.environ.get(api_key_env):
                raise ValueError(f"the API key variable {api_key_env} is not set (or empty)")
            self._headers["Authorization"] = f"Bearer {os.environ[api_key_env]}"

    def settings(self) -> dict:
        return {"kind": self.kind, "url": self.url, "model": self.model, "temperature": self.temperature,
                "response_format": self.response_format, "max_tokens": self.max_tokens}

    def complete(self, messages: list[dict], schema: dict) -> str:
        body = {"model": self.model, "messages": messages, "temperature": self.temperature}
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        if self.response_format == "json_object":
            body["response_format"] = {"type": "json_object"}
        elif self.response_format == "json_schema":
            body["response_format"] = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}
        return answer_text(self._post(body), self.url)

    def _post(self, body: dict) -> bytes:
        request = urllib.request.Request(self.url, json.dumps(body).encode(), self._headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.read()
        except urllib.error.HTTPError as err:
            detail = err.read()[:300].decode(errors="replace")
            kind = TransientError if err.code == 429 or err.code >= 500 else EndpointError
            raise kind(f"HTTP {err.code} from {self.url}: {detail}") from None
        except (TimeoutError, socket.timeout):
            raise TransientError(f"no answer from {self.url} within the timeout of {self.timeout} s") from None
        except urllib.error.URLError as err:
            if isinstance(err.reason, (TimeoutError, socket.timeout)):
                raise TransientError(f"no answer from {self.url} within the timeout of {self.timeout} s") from None
            raise TransientError(f"cannot reach {self.url}: {err.reason}") from None
        except (ConnectionError, http.client.HTTPException) as err:
            raise TransientError(f"connection to {self.url} failed: {type(err).__name__}: {err}") from None


def answer_text(payload: bytes, url: str) -> str:
    """``choices[0].message.content`` of a chat completion; :class:`InvalidAnswer` naming what is missing."""
    try:
        content = json.loads(payload)["choices"][0]["message"]["content"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, IndexError, TypeError):
        raise InvalidAnswer(f"{url} sent no chat completion (choices[0].message.content): {payload[:200]!r}") from None
    if not isinstance(content, str):
        raise InvalidAnswer(f"{url} sent no text in choices[0].message.content (got {type(content).__name__})")
    return content
