#!/usr/bin/env bash
# Rebuilds checkpoints/base from nothing (`make base`). Eight stages (configs/base/README.md; times and figures
# in docs/generator.md):
#   v1, stages one to three, on world v1 (small objects of radius 1.5 units), built by `make base` at the
#   commit that shipped it, in a git worktree under runs/: autoencoder, flow matching, decoder sharpening;
#   v2, stages four to six, on the current world: the autoencoder fine-tuned (configs/base/base_v2_ae.yaml),
#   then flow matching fine-tuned over it (configs/base/base_v2.yaml), then the decoder sharpened with the encoder
#   frozen (configs/base/base_v2_decoder.yaml);
#   stage seven (v3): flow matching continued on 16,000 videos, cosine schedule, EMA (configs/base/base_v2_long.yaml);
#   stage eight (v4): the same continued for 1,000 more steps at lr 1e-4 (configs/base/base_v4.yaml), exported to
#   checkpoints/base.
set -euo pipefail
V1_COMMIT=1d91d2f
cd "$(git rev-parse --show-toplevel)"
PHYSALIGN=.venv/bin/physalign
if [ ! -f runs/base_v1/physalign_model.json ]; then
    [ -d runs/base_v1_src ] || git worktree add --detach runs/base_v1_src "$V1_COMMIT"
    make -C runs/base_v1_src base
    mkdir -p runs/base_v1 && cp -r runs/base_v1_src/checkpoints/base/. runs/base_v1/
fi
[ -f data/world/manifest.jsonl ] || $PHYSALIGN world generate --n 4000 --split train --out data/world --seed 0
$PHYSALIGN train --config configs/base/base_v2_ae.yaml --out runs/base_v2_ae
$PHYSALIGN train --config configs/base/base_v2.yaml --out runs/base_v2
$PHYSALIGN train --config configs/base/base_v2_decoder.yaml --out runs/base_v2_decoder
[ -f data/world16k/manifest.jsonl ] || $PHYSALIGN world generate --n 16000 --split train --out data/world16k --seed 0
$PHYSALIGN train --config configs/base/base_v2_long.yaml --out runs/base_v2_long --export runs/base_v3
$PHYSALIGN train --config configs/base/base_v4.yaml --out runs/base_v4 --export checkpoints/base
