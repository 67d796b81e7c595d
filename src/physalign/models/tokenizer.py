"""A word-level tokenizer whose vocabulary is the world grammar's words.

The world's prompts use about fifty words; a word-level vocabulary keeps the text encoder tiny and makes
every token a word a reader can see. Built with ``tokenizers`` and wrapped in transformers'
``PreTrainedTokenizerFast``, so it saves and loads like any Hugging Face tokenizer. A saved model keeps
its own vocabulary, so a later change of the grammar only affects newly built models.
"""

from __future__ import annotations

import functools

from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from physalign.world.scene import all_scenes, scene_to_prompt

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"  # ids 0, 1, 2 (T5's pad and eos ids)
ARTICLES = ("a", "an")  # the parser accepts both; scene_to_prompt writes only "a"


@functools.lru_cache(maxsize=1)
def world_vocabulary() -> tuple[str, ...]:
    """Special tokens, then every word and punctuation mark of every prompt of the grammar, sorted."""
    split = pre_tokenizers.Whitespace()
    words = set(ARTICLES)
    for scene in all_scenes():  # 37k scenes, ~0.5 s: the whole grammar, so no prompt meets <unk>
        words.update(w for w, _ in split.pre_tokenize_str(scene_to_prompt(scene)))
    return (PAD, EOS, UNK, *sorted(words))


def build_world_tokenizer(max_length: int = 32) -> PreTrainedTokenizerFast:
    """Word-level tokenizer over :func:`world_vocabulary`; appends ``</s>`` to every prompt."""
    vocab = {word: i for i, word in enumerate(world_vocabulary())}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(single=f"$A {EOS}", special_tokens=[(EOS, vocab[EOS])])
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token=PAD, unk_token=UNK, eos_token=EOS, model_max_length=max_length
    )
