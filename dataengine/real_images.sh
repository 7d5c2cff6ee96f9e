#!/usr/bin/env bash
# Photos without depth or masks -> SpaceSGG training data, in one command.
# Usage: bash dataengine/real_images.sh DATASET [OUTPUT_DIR]
#   DATASET     holds images/ (and, optionally, annotations.json with boxes, e.g. from import_coco.py)
#   OUTPUT_DIR  where the training files go (default DATASET/spacesgg)
# Steps:
# open-vocabulary boxes (only without annotations.json), box-prompted masks, metric depth, then run_spacesgg.sh.
# A step that exits 1 (some records failed) lets the next run; 2 or more stops. Every step resumes on a rerun.
set -euo pipefail

DETECT_MODEL=${DETECT_MODEL:-grounding-dino-tiny}                      # open-vocabulary detector (alias or folder)
LABELS=${LABELS:-"person, chair, table, sofa, bed, lamp, tv, plant, cup, bottle, car, dog, cat"}   # what to look for
BOX_THRESHOLD=${BOX_THRESHOLD:-0.35}                                   # keep boxes scoring above this
SEG_MODEL=${SEG_MODEL:-sam-vit-base}                                   # box-prompted segmentation (alias or folder)
DEPTH_MODEL=${DEPTH_MODEL:-depth-anything-v2-metric-indoor-small}      # metric depth (alias or folder)
DEVICE=${DEVICE:-auto}                                                 # auto: cuda if available, else cpu
BATCH_SIZE=${BATCH_SIZE:-}                                             # images per depth forward pass (default: 1 CPU, 8 GPU)
SCALE_FACTOR=${SCALE_FACTOR:-5000}                                     # depth PNG value per metre (13.1 m at most)
MASK_ERODE=${MASK_ERODE:-3}                                            # pixels off every mask against flying pixels
PYTHON=${PYTHON:-}                                                     # interpreter (default: the repository's .venv)

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
source "$ROOT/batchkit/wrapper.sh"
wrapper_args 1 2 "$@"
require_dir "$1/images" "DATASET/images:"
if [ -z "$PYTHON" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
DATASET="$(cd "${1:?usage: bash dataengine/real_images.sh DATASET [OUTPUT_DIR]}" && pwd)"
OUT="${2:-$DATASET/spacesgg}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"

# shellcheck source=../batchkit/steps.sh
source "$ROOT/batchkit/steps.sh"

if [ -f "$DATASET/annotations.json" ] && ! grep -q '"detection"' "$DATASET/annotations.json"; then
  echo "== 1/4 detect_objects: $DATASET/annotations.json exists, boxes come from it"
else
  step "1/4 detect_objects: open-vocabulary boxes" \
    "$PYTHON" "$HERE/detect_objects.py" --dataset-path "$DATASET" --output-file "$DATASET/annotations.json" \
    --model "$DETECT_MODEL" --labels "$LABELS" --box-threshold "$BOX_THRESHOLD" --device "$DEVICE"
fi
step "2/4 segment_objects: box-prompted masks" \
  "$PYTHON" "$HERE/segment_objects.py" --dataset-path "$DATASET" --input-file "$DATASET/annotations.json" \
  --output-file "$OUT/annotations.masks.json" --model "$SEG_MODEL" --device "$DEVICE"
step "3/4 estimate_depth: metric depth" \
  "$PYTHON" "$HERE/estimate_depth.py" --dataset-path "$DATASET" --model "$DEPTH_MODEL" --scale-factor "$SCALE_FACTOR" \
  ${BATCH_SIZE:+--batch-size "$BATCH_SIZE"} --device "$DEVICE"
step "4/4 run_spacesgg.sh: stages 1 and 2" \
  env ANNOTATIONS="$OUT/annotations.masks.json" MASK_ERODE="$MASK_ERODE" SCALE_FACTOR="$SCALE_FACTOR" PYTHON="$PYTHON" \
  bash "$ROOT/run_spacesgg.sh" "$DATASET" "$OUT"
finish
