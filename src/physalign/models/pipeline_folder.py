"""What the models read from diffusers pipeline folders (Wan 2.1, CogVideoX) share.

A pipeline folder is the layout a user downloads (``Wan-AI/Wan2.1-T2V-1.3B-Diffusers``, ``THUDM/CogVideoX-2b``)::

    model_index.json  transformer/  vae/  text_encoder/  tokenizer/  scheduler/  [physalign_model.json]

Each part is loaded with its own library's ``from_pretrained`` (safetensors only). ``physalign_model.json`` is
optional: without it a folder gets the class's default :class:`FolderOptions`; :meth:`save_pretrained` always
writes it, together with a ``model_index.json`` that keeps the folder loadable by the diffusers pipeline.

Precision (the usual mixed-precision recipe): weights are stored in ``dtype`` (bfloat16 by default); a part
made trainable is cast to float32 master weights (a bfloat16 weight keeps 8 bits of mantissa, so an AdamW
update smaller than 1/256 of the weight, as at lr 2e-6, would be lost); the transformer computes under
``autocast``; velocities, latents and tapped features are returned in float32.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import diffusers
import torch
from transformers import AutoTokenizer

from physalign.models.interface import CONFIG_FILE, VideoModel, from_fields, save_parts
from physalign.models.lora import load_adapter, lora_folder
from physalign.models.parts import cast, load_part

INDEX_FILE = "model_index.json"
FOLDERS = ("transformer", "vae", "text_encoder", "tokenizer", "scheduler")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class FolderOptions:
    """physalign's settings of a pipeline-folder model (the fields of ``physalign_model.json``)."""

    frames: int = 49  # the video shape sampled by default: (3, frames, height, width)
    height: int = 480
    width: int = 720
    dtype: str = "bfloat16"  # storage of the transformer and the text encoder when loaded
    vae_dtype: str = "float32"
    autocast: str = "bfloat16"  # compute dtype of the transformer's forward; "" = the weights' own dtype
    master_float32: bool = True  # parts made trainable (set_trainable) are cast to float32
    vae_slicing: bool = False  # encode/decode one video of the batch at a time
    vae_tiling: bool = False  # encode/decode in overlapping spatial tiles
    gradient_checkpointing: bool = False  # recompute each transformer block's activations in backward

    def __post_init__(self) -> None:
        for name in ("dtype", "vae_dtype") + (("autocast",) if self.autocast else ()):
            if getattr(self, name) not in DTYPES:
                raise ValueError(f"model option {name} must be one of {sorted(DTYPES)}. Got {getattr(self, name)!r}.")
        if min(self.frames, self.height, self.width) < 1:
            raise ValueError(f"model options frames, height, width must be >= 1. "
                             f"Got {self.frames}, {self.height}, {self.width}.")

    @classmethod
    def from_dict(cls, values: dict, where: str = "model options") -> "FolderOptions":
        return from_fields(cls, values, where)


def read_options(cls: type[VideoModel], options: type[FolderOptions], path: Path, overrides: dict) -> FolderOptions:
    """``path/physalign_model.json`` (if any) with ``overrides`` on top; the file's ``class`` must be ``cls``."""
    config, fields = path / CONFIG_FILE, {}
    if config.is_file():
        fields = json.loads(config.read_text())
        if fields.pop("class", cls.__name__) != cls.__name__:
            raise ValueError(f"{config}: field 'class' names another model; expected {cls.__name__!r}")
    return options.from_dict({**fields, **overrides}, str(config))


def check_folder(path: Path, pipeline: str) -> None:
    """A pipeline folder with ``model_index.json`` naming ``pipeline`` and every part's subfolder."""
    index = path / INDEX_FILE
    if not index.is_file():
        raise FileNotFoundError(f"{path}: not a diffusers pipeline folder (no {INDEX_FILE})")
    name = json.loads(index.read_text()).get("_class_name")
    if name != pipeline:
        raise ValueError(f"{index}: field '_class_name' must be {pipeline!r} for this model. Got {name!r}.")
    missing = [f for f in FOLDERS if not (path / f).is_dir()]
    if missing:
        raise FileNotFoundError(f"{path}: missing part folders {missing}; a {pipeline} folder holds {list(FOLDERS)}")


def load_scheduler(folder: Path):
    """The scheduler saved in ``folder``, of the diffusers class its config names."""
    name = json.loads((folder / "scheduler_config.json").read_text()).get("_class_name")
    if not hasattr(diffusers, str(name)):
        raise ValueError(f"{folder}/scheduler_config.json: '_class_name' {name!r} is not a diffusers scheduler")
    return getattr(diffusers, name).from_pretrained(folder)


def load_tokenizer(source: str | Path):
    """A tokenizer from a folder, or ``"world"``: the world grammar's word-level tokenizer."""
    if str(source) == "world":
        from physalign.models.tokenizer import build_world_tokenizer

        return build_world_tokenizer()
    return AutoTokenizer.from_pretrained(source)


def module_fingerprint(module: torch.nn.Module, extra: str = "") -> str:
    """sha256 of ``extra`` and every tensor of ``module``'s state (its raw bytes, so any dtype)."""
    h = hashlib.sha256(extra.encode())
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class PipelineVideoModel(VideoModel):
    """A :class:`VideoModel` over a diffusers pipeline folder; subclasses give the pipeline's classes and
    conventions (encode/decode, text, forward, strides)."""

    parts = ("transformer", "vae", "text_encoder")
    pipeline = ""  # model_index.json's _class_name
    transformer_class = vae_class = text_encoder_class = config_class = None
    options_class = FolderOptions

    def __init__(self, options: FolderOptions, transformer, vae, text_encoder, tokenizer, scheduler):
        super().__init__()
        self.options, self.tokenizer, self.scheduler = options, tokenizer, scheduler
        self.transformer, self.vae, self.text_encoder = transformer, vae, text_encoder
        if options.vae_slicing:
            vae.enable_slicing()
        if options.vae_tiling:
            vae.enable_tiling()
        if options.gradient_checkpointing:
            transformer.enable_gradient_checkpointing()

    # -- shared conventions --------------------------------------------------------------------------
    @property
    def backbone(self):
        return self.transformer

    @property
    def video_shape(self) -> tuple[int, int, int, int]:
        return (3, self.options.frames, self.options.height, self.options.width)

    def set_trainable(self, parts: Sequence[str]) -> None:
        super().set_trainable(parts)
        if self.options.master_float32:
            for name in parts:
                self.get_submodule(name).float()

    def compute(self):
        """Context of the transformer's forward: autocast to ``options.autocast`` (if set)."""
        if not self.options.autocast:
            return contextlib.nullcontext()
        device = next(self.transformer.parameters()).device
        return torch.autocast(device.type, dtype=DTYPES[self.options.autocast])

    def compute_dtype(self) -> torch.dtype:
        """The dtype inputs of the transformer are cast to."""
        return DTYPES[self.options.autocast] if self.options.autocast else self.transformer.dtype

    @staticmethod
    def check_time(x_t: torch.Tensor, t: torch.Tensor) -> None:
        if x_t.ndim != 5 or t.shape != x_t.shape[:1]:
            raise ValueError(f"x_t must be (B, C, t, h, w) and t of shape [batch]. "
                             f"Got {list(x_t.shape)} and {list(t.shape)}.")

    def tokens(self, prompts: Sequence[str], length: int):
        """Token ids and attention mask (B, length), padded and truncated to ``length`` as the pipelines do."""
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise ValueError(f"prompts must be a list of strings. Got {prompts!r}.")
        out = self.tokenizer(list(prompts), padding="max_length", max_length=length, truncation=True,
                             add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
        device = self.text_encoder.device
        return out.input_ids.to(device), out.attention_mask.to(device).bool()

    def latent_fingerprint(self) -> str:
        config = {"class": type(self).__name__, **{k: v for k, v in self.vae.config.items() if not k.startswith("_")}}
        return module_fingerprint(self.vae, json.dumps(config, sort_keys=True, default=str))  # not _name_or_path

    # -- persistence ---------------------------------------------------------------------------------
    def save_pretrained(self, path: str | Path) -> None:
        path = save_parts(self, path)
        self.scheduler.save_pretrained(path / "scheduler")
        index = {"_class_name": self.pipeline, "_diffusers_version": diffusers.__version__}
        for name in sorted(FOLDERS):
            library = "transformers" if name in ("text_encoder", "tokenizer") else "diffusers"
            index[name] = [library, type(getattr(self, name)).__name__]
        (path / INDEX_FILE).write_text(json.dumps(index, indent=2))
        (path / CONFIG_FILE).write_text(json.dumps({"class": type(self).__name__, **asdict(self.options)}, indent=2))

    @classmethod
    def from_pretrained(cls, path: str | Path, **overrides) -> "PipelineVideoModel":
        """The model in pipeline folder ``path``; ``overrides`` replace fields of its options."""
        path = Path(path)
        check_folder(path, cls.pipeline)
        options = read_options(cls, cls.options_class, path, overrides)
        dtype, vae_dtype = DTYPES[options.dtype], DTYPES[options.vae_dtype]
        transformer = load_part(cls.transformer_class, path / "transformer", dtype)
        if lora_folder(path / "transformer").is_dir():
            load_adapter(transformer, lora_folder(path / "transformer"))
        return cls(
            options,
            transformer=transformer,
            vae=load_part(cls.vae_class, path / "vae", vae_dtype),
            text_encoder=load_part(cls.text_encoder_class, path / "text_encoder", dtype),
            tokenizer=AutoTokenizer.from_pretrained(path / "tokenizer"),
            scheduler=load_scheduler(path / "scheduler"),
        )

    @classmethod
    def from_config(cls, sizes: dict) -> "PipelineVideoModel":
        """A newly initialised model: ``sizes`` = {"transformer": kwargs, "vae": kwargs, "text_encoder": config
        kwargs, "tokenizer": a folder or "world", optional "scheduler": kwargs, and any option}."""
        sizes = dict(sizes)
        parts = {name: sizes.pop(name, {}) for name in ("transformer", "vae", "text_encoder", "scheduler")}
        if "tokenizer" not in sizes:
            raise ValueError(f"{cls.__name__} sizes: 'tokenizer' (a tokenizer folder, or \"world\") is required")
        tokenizer = load_tokenizer(sizes.pop("tokenizer"))
        options = cls.options_class.from_dict(sizes, f"{cls.__name__} sizes")
        text_config = cls.config_class(**{"vocab_size": len(tokenizer), **parts["text_encoder"]})
        return cls(
            options,
            transformer=cast(cls.transformer_class(**parts["transformer"]), DTYPES[options.dtype]),
            vae=cast(cls.vae_class(**parts["vae"]), DTYPES[options.vae_dtype]),
            text_encoder=cast(cls.text_encoder_class(text_config), DTYPES[options.dtype]),
            tokenizer=tokenizer,
            scheduler=cls.default_scheduler(**parts["scheduler"]),
        )

    @classmethod
    def default_scheduler(cls, **kwargs):
        """The pipeline's scheduler for a new model (kept so a saved folder loads in diffusers)."""
        raise NotImplementedError(f"{cls.__name__} has no default scheduler")
