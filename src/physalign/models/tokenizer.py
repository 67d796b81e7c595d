"""A word-level tokenizer whose vocabulary is the world grammar's words.

The world's prompts use a few dozen words; a word-level vocabulary keeps the text encoder tiny and makes
every token a word a reader can see. Built with ``tokenizers`` and wrapped in transformers'
``PreTrainedTokenizerFast``, so it saves and loads like any Hugging Face tokenizer.
"""

from __future__ import annotations

from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from physalign.world import scene as grammar

PAD, UNK, EOS = "<pad>", "<unk>", "</s>"


def world_vocabulary() -> list[str]:
    """Every word the grammar can write, sorted (special tokens first)."""
    words = {"a", ","} | set(grammar.COLORS) | set(grammar.BACKGROUNDS)
    words |= set(grammar._SINGLE)
    words |= {w for pattern, _, _ in grammar._PHRASES for w in pattern if not w.startswith("{")}
    return [PAD, EOS, UNK] + sorted(words)


def build_world_tokenizer(max_length: int = 32) -> PreTrainedTokenizerFast:
    vocab = {word: i for i, word in enumerate(world_vocabulary())}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(single=f"$A {EOS}", special_tokens=[(EOS, vocab[EOS])])
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token=PAD, unk_token=UNK, eos_token=EOS, model_max_length=max_length
    )
