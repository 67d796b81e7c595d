"""A local transformers causal LM, loaded from a folder: greedy answers to the same templates.

The folder holds a tokenizer and safetensors weights (``use_safetensors=True``; pickled ``.bin`` weights
are refused) and is read with ``local_files_only=True``: nothing is downloaded. A tokenizer with a chat
template gets the conversation through it (with the generation prompt); one without gets the message
text as it is. Generation is greedy, so the same prompt always gets the same answer: retrying an invalid
one is pointless, and ``attempts`` defaults to 1.
"""

from __future__ import annotations

from pathlib import Path

import torch

from physalign.reasoning.chat import ChatReasoner


class LocalReasoner(ChatReasoner):
    kind = "local"

    def __init__(
        self,
        path: str,
        max_new_tokens: int = 1024,
        device: str | None = None,
        attempts: int = 1,
        backoff: float = 0.0,
        cache: str | None = None,
    ):
        super().__init__(attempts, backoff, cache)
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.path = Path(path)
        if not self.path.is_dir():
            raise ValueError(f"{self.path}: no such model folder (a local folder is required; nothing is downloaded)")
        self.max_new_tokens = max_new_tokens
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(self.path, use_safetensors=True, local_files_only=True)
        except OSError as err:
            raise ValueError(f"{self.path}: cannot load a causal LM with safetensors weights and a tokenizer: {err}") from None
        self.model = model.to(self.device).eval()

    def settings(self) -> dict:
        return {"kind": self.kind, "path": str(self.path.resolve()), "files": _fingerprint(self.path),
                "max_new_tokens": self.max_new_tokens}

    def complete(self, messages: list[dict], schema: dict) -> str:
        ids = self._encode(messages)  # (1, L)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        with torch.no_grad():
            out = self.model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=self.max_new_tokens,
                do_sample=False, pad_token_id=pad,
            )  # (1, L + new)
        return self.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)

    def _encode(self, messages: list[dict]) -> torch.Tensor:
        if self.tokenizer.chat_template:
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            ids = self.tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
        else:
            ids = self.tokenizer("\n\n".join(m["content"] for m in messages) + "\n", return_tensors="pt").input_ids
        return ids.to(self.device)


def _fingerprint(folder: Path) -> list:
    """(name, size, mtime) of the folder's files: new weights at the same path get new cache entries."""
    return [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.iterdir()) if p.is_file()]
