#!/usr/bin/env bash
# The label audit on real labels (docs/correction.md, "Label audit"): a tiny teacher trained
# on COCO-MINI train with fresh augmentation, run once over augmentation-aligned crops of the
# same images, and `lcdata audit` of where it and the labels disagree.
#   bash scripts/coco_audit.sh [OUT] [STEPS]      (default runs/coco_audit, 3000 steps)
# Resumable: each stage is skipped when its output is there.
set -euo pipefail
OUT=${1:-runs/coco_audit}
STEPS=${2:-3000}
AMP=${AMP:-bf16}   # AMP=off on a CPU without bf16 units, where bf16 is ~9x slower (docs/training.md)
D=${COCO_MINI:-../shared/data/coco-mini}
mkdir -p "$OUT"
GEOM=(--preset coco --input-size 256 --sigma 5.0 --samples-per-shard 32)
[ -f "$OUT/cache.zarr/zarr.json" ] || lcdata build-teacher-cache \
  "$D/annotations/person_keypoints_train2017.json" "$D/train2017" --out "$OUT/cache.zarr" \
  --views-per-image 4 "${GEOM[@]}"
trainer fit --store "$OUT/cache.zarr" --out "$OUT/teacher" --model tiny --steps "$STEPS" \
  --batch-size 8 --lr 1e-3 --augment fresh --amp "$AMP" --checkpoint-every 500 --log-every 50 \
  --quiet --resume
[ -f "$OUT/teacher.pt2" ] || trainer export "$OUT/teacher/final.pt" --out "$OUT/teacher.pt2"
lcdata build-teacher-cache --out "$OUT/cache.zarr" --teacher "$OUT/teacher.pt2" --resume
[ -f "$OUT/val.json" ] || trainer evaluate "$OUT/teacher/final.pt" \
  "$D/annotations/person_keypoints_val2017.json" "$D/val2017" --out "$OUT/val.json"
lcdata audit "$OUT/cache.zarr" --out "$OUT/audit" --top 24 --no-progress
