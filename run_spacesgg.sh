#!/usr/bin/env bash
# SpaceSGG pipeline: a dataset folder -> point clouds, layers, multiview relations.
#   bash run_spacesgg.sh DATASET [OUTPUT_DIR]
# DATASET holds images/, depth_maps/, masks/, annotations.json and K.txt (see README).
set -euo pipefail

SCALE_FACTOR=${SCALE_FACTOR:-5000}        # depth PNG value per metre
WORKERS=${WORKERS:-2}                      # d2p processes
DATASET_BASE=${DATASET_BASE:-}             # annotation key prefix to replace (optional)
PYTHON=${PYTHON:-python3}                  # interpreter with requirements.txt installed

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DATASET="$(cd "${1:?usage: bash run_spacesgg.sh DATASET [OUTPUT_DIR]}" && pwd)"
OUT="${2:-$DATASET/spacesgg}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
REWRITE=()
if [ -n "$DATASET_BASE" ]; then REWRITE=(--dataset-base "$DATASET_BASE" --data-prefix "$DATASET/images"); fi

echo "== 1/3 d2p: depth maps -> point clouds"
"$PYTHON" "$HERE/d2p.py" --dataset-path "$DATASET" --scale-factor "$SCALE_FACTOR" --workers "$WORKERS"

echo "== 2/3 layers_aggregation: depth layers"
"$PYTHON" "$HERE/layers_aggregation.py" --input-file "$DATASET/annotations.json" --depth-dir "$DATASET/depth_maps" \
  --mask-dir "$DATASET/masks" --output-file "$OUT/layers.json" --scale-factor "$SCALE_FACTOR" ${REWRITE[@]+"${REWRITE[@]}"}

echo "== 3/3 multiview_layers: relations from four views"
"$PYTHON" "$HERE/multiview_layers.py" --input-file "$OUT/layers.json" --point-cloud-dir "$DATASET/point_clouds" \
  --mask-dir "$DATASET/masks" --output-file "$OUT/multiview.json" ${REWRITE[@]+"${REWRITE[@]}"}

echo "SpaceSGG outputs: point clouds in $DATASET/point_clouds, layers in $OUT/layers.json, relations in $OUT/multiview.json"
