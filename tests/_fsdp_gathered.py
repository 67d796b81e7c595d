"""Launched by tests/test_distributed.py on two CPU processes under FSDP2 (config file: the first argument,
output folder: the second): inside ``ShardedEngine.gathered`` the writing process holds every sharded tensor
whole on the CPU and the other process holds none of them; on leaving, the shards are back. Writes
OUT/rank<r>.json."""

import json
import sys
from pathlib import Path

import torch
import torch.distributed

from physalign.train.config import load_config
from physalign.train.data import batch_indices
from physalign.train.engine import ShardedEngine, _is_sharded
from physalign.train.loop import build_run, to_device, train_step

cfg = load_config(sys.argv[1])
engine = ShardedEngine()
state, data = build_run(cfg, None, engine)
batch = to_device(data.batch(engine.shard(batch_indices(0, cfg.train.batch_size, len(data), 0))), engine.device)
train_step(state, batch | {"step": 0, "seed": 0}, 1.0, 0, engine)  # AdamW now holds sharded moments
sharded = {name: tuple(p.shape) for name, p in state.model.named_parameters() if _is_sharded(p)}
with engine.gathered(state) as whole:
    params = dict(state.model.named_parameters())
    moments = [v for entry in whole.opt.state_dict()["state"].values() for k, v in entry.items() if k == "exp_avg"]
    inside = {"params": {name: [str(params[name].device), list(params[name].shape), _is_sharded(params[name])]
                         for name in sharded},
              "moments": [None if m is None else [str(m.device), _is_sharded(m)] for m in moments],
              "ema": [None if v is None else str(v.device) for v in whole.ema.state_dict().values()]}
after = all(_is_sharded(p) for name, p in state.model.named_parameters() if name in sharded)
record = {"rank": engine.rank, "sharded": {k: list(v) for k, v in sharded.items()}, "inside": inside, "shards_back": after}
(Path(sys.argv[2]) / f"rank{engine.rank}.json").write_text(json.dumps(record))
engine.barrier()
torch.distributed.destroy_process_group()
