#!/usr/bin/env bash
# The location-guidance experiment of README "Learning": RAM on cmnist-60 with location
# annotations on 1 %, 100 % and 0 % of the training images, 3,000 steps each (3–5 min per
# run on one core of our 2-core CPU machines), evaluated on 1,000 held-out canvases, plus the
# curve plot and the glimpse GIF shown in the README.
#   bash bench/learning_curves.sh [OUT_DIR]
set -euo pipefail
OUT=${1:-runs/learning}
L=${LGDRAM:-lgdram}
mkdir -p "$OUT" docs/images
for a in 1 100 0; do
  $L train --dataset cmnist-60 --model ram --annotations "$a%" --steps 3000 --eval-every 100 \
    --seed 0 --threads 1 --out "$OUT/annotations-$a.safetensors" --force
  $L eval "$OUT/annotations-$a.safetensors" --n 1000 --json > "$OUT/annotations-$a.eval.json"
done
$L visualize "$OUT/annotations-0.safetensors" "$OUT/annotations-1.safetensors" \
  "$OUT/annotations-100.safetensors" --curves --out docs/images/location-guidance-curves.png
$L visualize "$OUT/annotations-1.safetensors" --gif --n 16 --seed 0 --out docs/images/glimpses.gif
