"""Launched by tests/test_distributed.py on two CPU processes (config file: the first argument, output folder:
the second): builds the run of a config whose model comes from a folder (``model.init``) and records, per
process, which weight files it read (every ``from_pretrained`` of a part and every safetensors file loaded),
a digest of every parameter and buffer, and the first draws of torch's generator after the build. Writes
OUT/rank<r>.json."""

import hashlib
import json
import sys
from pathlib import Path

import safetensors.torch
import torch
import torch.distributed
from diffusers import AutoencoderKL, WanTransformer3DModel
from transformers import T5EncoderModel

import physalign.train.checkpoint
from physalign.train.config import load_config
from physalign.train.engine import Engine
from physalign.train.loop import build_run

reads = []


def recording(cls):
    original = cls.from_pretrained.__func__

    def from_pretrained(klass, folder, *args, **kwargs):
        reads.append(str(folder))
        return original(klass, folder, *args, **kwargs)

    cls.from_pretrained = classmethod(from_pretrained)


for part in (WanTransformer3DModel, AutoencoderKL, T5EncoderModel):
    recording(part)
load_file = safetensors.torch.load_file


def recorded_load_file(path, *args, **kwargs):
    reads.append(str(path))
    return load_file(path, *args, **kwargs)


physalign.train.checkpoint.load_file = recorded_load_file

cfg = load_config(sys.argv[1])
ckpt = Path(sys.argv[3]) if len(sys.argv) > 3 else None
engine = Engine()
state, data = build_run(cfg, ckpt, engine)
model = state.model
digest = hashlib.sha256()
for name, tensor in sorted(list(model.state_dict().items()) + list(dict(model.named_buffers()).items())):
    digest.update(name.encode() + tensor.detach().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
record = {"rank": engine.rank, "reads": reads, "digest": digest.hexdigest(), "draws": torch.rand(3).tolist(),
          "devices": sorted({str(t.device) for t in model.state_dict().values()}),
          "tied": model.text_encoder.shared.weight is model.text_encoder.encoder.embed_tokens.weight}
(Path(sys.argv[2]) / f"rank{engine.rank}.json").write_text(json.dumps(record))
engine.barrier()
torch.distributed.destroy_process_group()
