"""Launched by tests/test_distributed.py on two CPU processes: every tensor the engine hands to a collective
lives on the engine's device, even where the default device is another one.

On a GPU the engine's device is cuda while tensors made without a device land on the CPU, and NCCL has no CPU
backend. Here the engine's device is the CPU, so the default device is set to "meta" instead: a tensor made
without the engine's device is then on "meta", and the recorder below names the collective that received it.
Writes OUT/rank<r>.json per process (OUT: the first argument).
"""

import json
import sys
from pathlib import Path

import torch
import torch.distributed

import physalign.train.engine
from physalign.train.engine import Engine

engine = Engine()
seen = []


def recording(collective):
    def checked(tensor, *args, **kwargs):
        seen.append(collective.__name__)
        if tensor.device.type != engine.device.type:  # (the CPU's device index is dropped: "cpu:0" is "cpu")
            raise RuntimeError(f"{collective.__name__} got a tensor on {tensor.device}; the engine runs on {engine.device}")
        return collective(tensor, *args, **kwargs)
    return checked


for name in ("all_reduce", "broadcast", "reduce", "all_gather_into_tensor", "reduce_scatter_tensor"):
    setattr(torch.distributed, name, recording(getattr(torch.distributed, name)))

rank = engine.rank
physalign.train.engine.BUCKET_BYTES = 16  # gradients averaged in buckets of up to 4 floats: [weight], [unused, bias]
weight, unused, bias = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(1)), torch.nn.Parameter(torch.ones(2))
weight.grad, bias.grad = torch.full((3,), float(rank)), torch.full((2,), 2.0 * rank)
before = weight.grad
with torch.device("meta"):
    means = engine.mean({"loss": float(rank), "two": 2.0})
    flagged = engine.any_rank(rank == 1)
    engine.sync_gradients([weight, unused, bias])
    gathered = engine.gather({"rank": rank})
record = {"rank": rank, "means": means, "flagged": flagged, "grad": weight.grad.tolist(), "in_place": weight.grad is before,
          "unused": unused.grad.tolist(), "bias": bias.grad.tolist(), "gathered": gathered, "collectives": seen}
(Path(sys.argv[1]) / f"rank{rank}.json").write_text(json.dumps(record))
engine.barrier()
torch.distributed.destroy_process_group()
