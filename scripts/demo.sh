#!/usr/bin/env bash
# The whole label-correction chain on the embedded default (synthetic persons, tiny model):
#   synth data -> GT store -> teacher fit -> export -> teacher cache -> correct --mode max
#   -> student fit -> evaluate teacher and student on the clean validation labels.
# Every step is resumable: re-running skips what is already done.
set -euo pipefail
OUT=${1:-demo}
SEED=${SEED:-0}
STEPS=${STEPS:-600}
LR=${LR:-1e-3}   # the paper's 1e-4 is for 10^5-step runs; short CPU runs need more
TRAIN=${TRAIN:-600}
VAL=${VAL:-100}
mkdir -p "$OUT"
DATA=$OUT/data

step() { printf '\n== %s\n' "$*"; }

if [ ! -f "$DATA/corruption.json" ]; then
  step "1. synthetic COCO-format persons with label defects ($TRAIN train / $VAL val images)"
  lcdata synth "$DATA" --train "$TRAIN" --val "$VAL" --seed "$SEED"
fi

step "2. GT store: augmented crops, masks, GT heatmaps and PAFs"
lcdata build-teacher-cache "$DATA/annotations/person_keypoints_train.json" "$DATA/train" \
  --out "$OUT/cache.zarr" --preset synth --views-per-image 8 --seed "$SEED" --resume
lcdata inspect "$OUT/cache.zarr" --no-stats | head -20

step "3. teacher: tiny model trained on the (defective) GT labels"
trainer fit --store "$OUT/cache.zarr" --out "$OUT/teacher" --model tiny --steps "$STEPS" \
  --batch-size 16 --lr "$LR" --seed "$SEED" --target gt --resume
# export once: a re-run must not present the cache with a different teacher file
[ -f "$OUT/teacher.pt2" ] || trainer export "$OUT/teacher/final.pt" --out "$OUT/teacher.pt2"

step "4. teacher pass: the teacher runs once over every stored crop"
lcdata build-teacher-cache --out "$OUT/cache.zarr" --teacher "$OUT/teacher.pt2" --resume

step "5. label correction (eq. 2 and 3)"
lcdata correct "$OUT/cache.zarr" --mode max --out "$OUT/lc.zarr" \
  --clean "$DATA/annotations/person_keypoints_train_clean.json" --resume

step "6. student: same model and settings, trained on the corrected targets"
trainer fit --store "$OUT/lc.zarr" --out "$OUT/student" --model tiny --steps "$STEPS" \
  --batch-size 16 --lr "$LR" --seed "$SEED" --resume

step "7. COCO keypoint AP on the clean validation labels"
for run in teacher student; do
  trainer evaluate "$OUT/$run/final.pt" "$DATA/annotations/person_keypoints_val_clean.json" \
    "$DATA/val" --out "$OUT/$run/val_results.json" | tail -3
done
python - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
for run in ("teacher", "student"):
    m = json.load(open(f"{out}/{run}/val_results.metrics.json"))["metrics"]
    print(f"{run:>8}: AP {m['AP']:.3f}  AP50 {m['AP50']:.3f}")
PY
