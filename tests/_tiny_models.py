"""Tiny configurations of the real model classes, written as a user's downloads are, for the tests.

- :func:`user_folder`: a Wan 2.1 or CogVideoX pipeline folder (model_index.json, transformer/, vae/,
  text_encoder/, tokenizer/, scheduler/) saved by the diffusers pipeline itself; :func:`tiny` loads it with
  test-sized options.
- :func:`vlm_folder`: a random LLaVA-NeXT-Video model folder with its tokenizer and video processor settings.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import (AutoencoderKLCogVideoX, AutoencoderKLWan, CogVideoXDDIMScheduler, CogVideoXPipeline,
                       CogVideoXTransformer3DModel, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel)
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (CLIPVisionConfig, LlamaConfig, LlavaNextVideoConfig, LlavaNextVideoForConditionalGeneration,
                          PreTrainedTokenizerFast, T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel)

from physalign.judges.base import PLAUSIBILITY_QUESTION, fact_question
from physalign.judges.vlm import ANSWER_TEMPLATE, RATING_TEMPLATE
from physalign.models.cogvideox import CogVideoXVideoModel
from physalign.models.tokenizer import build_world_tokenizer
from physalign.models.wan import WanVideoModel

VIDEO = (3, 9, 32, 48)  # T = 1 + 4 * 2; H, W multiples of 8; H != W so a swapped axis shows
OPTIONS = dict(frames=9, height=32, width=48, dtype="float32", autocast="")
TEXT = dict(d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4, relative_attention_num_buckets=8, dropout_rate=0.0)
KINDS = ("wan", "cogvideox", "cogvideox-rotary")  # CogVideoX-2B uses sin-cos positions, 5B rotary ones


def wan_parts(tokenizer) -> dict:
    return dict(
        transformer=WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16,
                                          in_channels=4, out_channels=4, text_dim=32, freq_dim=32, ffn_dim=64,
                                          num_layers=2, rope_max_seq_len=32),
        vae=AutoencoderKLWan(base_dim=8, z_dim=4, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
                             temperal_downsample=[False, True, True], latents_mean=[0.1, -0.2, 0.3, 0.0],
                             latents_std=[1.5, 2.0, 0.5, 1.0]),
        text_encoder=UMT5EncoderModel(UMT5Config(vocab_size=len(tokenizer), **TEXT)),
        scheduler=UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0),
    )


def cogvideox_parts(tokenizer, rotary: bool) -> dict:
    return dict(
        transformer=CogVideoXTransformer3DModel(num_attention_heads=2, attention_head_dim=16, in_channels=4,
                                                out_channels=4, time_embed_dim=16, text_embed_dim=32, num_layers=2,
                                                sample_width=6, sample_height=4, sample_frames=9, patch_size=2,
                                                max_text_seq_length=32, use_rotary_positional_embeddings=rotary),
        vae=AutoencoderKLCogVideoX(block_out_channels=(8, 16, 16, 16), latent_channels=4, layers_per_block=1,
                                   norm_num_groups=4, sample_height=32, sample_width=48, scaling_factor=0.7),
        text_encoder=T5EncoderModel(T5Config(vocab_size=len(tokenizer), **TEXT)),
        scheduler=CogVideoXDDIMScheduler(prediction_type="v_prediction", rescale_betas_zero_snr=True, snr_shift_scale=3.0,
                                         timestep_spacing="trailing", clip_sample=False),
    )


def user_folder(root: Path, kind: str) -> Path:
    """A tiny model in the exact folder layout of a hub download, written by the diffusers pipeline itself."""
    torch.manual_seed(0)
    tokenizer = build_world_tokenizer()  # word-level `tokenizers` model in PreTrainedTokenizerFast: no download
    if kind == "wan":
        pipe = WanPipeline(tokenizer=tokenizer, **wan_parts(tokenizer))
    else:
        pipe = CogVideoXPipeline(tokenizer=tokenizer, **cogvideox_parts(tokenizer, rotary=kind == "cogvideox-rotary"))
    pipe.save_pretrained(root / kind)
    return root / kind


def model_class(folder: Path):
    return WanVideoModel if folder.name == "wan" else CogVideoXVideoModel


def sized_options(folder: Path) -> dict:
    """The options that make a user's folder test-sized: float32, the tiny video shape, short text."""
    return {**OPTIONS, **(dict(max_text_tokens=32) if model_class(folder) is WanVideoModel else {})}


def tiny(folder: Path, **changes):
    """The user's folder loaded with test-sized options and ``changes``."""
    return model_class(folder).from_pretrained(folder, **{**sized_options(folder), **changes}).eval()


# -- a video-language judge -----------------------------------------------------------------------------

CLIP_MEAN, CLIP_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
PROCESSOR = {"do_resize": True, "size": {"shortest_edge": 28}, "do_center_crop": True,
             "crop_size": {"height": 28, "width": 28}, "do_rescale": True, "rescale_factor": 1 / 255,
             "do_normalize": True, "image_mean": CLIP_MEAN, "image_std": CLIP_STD,
             "video_processor_type": "LlavaNextVideoVideoProcessor", "processor_class": "LlavaNextVideoProcessor"}


def tiny_vlm_tokenizer(words: str = "") -> PreTrainedTokenizerFast:
    """Word-level: the special tokens LLaVA-NeXT-Video needs, the answers, the words of the templates and
    ``words``."""
    specials = ["<pad>", "<unk>", "<s>", "</s>", "<image>", "<video>"]
    text = " ".join([ANSWER_TEMPLATE, RATING_TEMPLATE, PLAUSIBILITY_QUESTION, fact_question("the red ball bounces"),
                     "Yes No 1 2 3 4 5", words])
    vocab = sorted({w for w, _ in pre_tokenizers.Whitespace().pre_tokenize_str(text)} - set(specials))
    core = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(specials + vocab)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>", additional_special_tokens=["<image>", "<video>"])


def vlm_folder(folder: Path, words: str = "") -> Path:
    """A random tiny LlavaNextVideoForConditionalGeneration saved in ``folder`` as a user's download would be."""
    torch.manual_seed(0)
    tokenizer = tiny_vlm_tokenizer(words)
    vocab = tokenizer.get_vocab()
    config = LlavaNextVideoConfig(
        vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                       image_size=28, patch_size=7, projection_dim=16),
        text_config=LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                                pad_token_id=vocab["<pad>"]),
        video_token_index=vocab["<video>"], image_token_index=vocab["<image>"], image_grid_pinpoints=[[28, 28]])
    LlavaNextVideoForConditionalGeneration(config).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    (folder / "video_preprocessor_config.json").write_text(json.dumps(PROCESSOR))
    return folder
