#!/usr/bin/env bash
# SpaceSGG pipeline: a dataset folder -> depth layers, multiview relations -> four LLaVA training files
# (and, with VAL_FRACTION, a held-out benchmark whose images stay out of them).
# Usage: bash run_spacesgg.sh DATASET [OUTPUT_DIR]
#   DATASET     holds images/, depth_maps/, masks/, annotations.json and K.txt or intrinsics.json (docs/formats.md)
#   OUTPUT_DIR  where layers.json, multiview.json, layer.json, between.json, rotation.json, distance.json go
#               (default DATASET/spacesgg)
# With BACKEND=openai set OPENAI_API_KEY (and OPENAI_BASE_URL or BASE_URL for vLLM/Ollama).
# A step that exits 1 (some records failed) lets the next steps run; one that exits 2 or more (a fatal input)
# stops the pipeline. The exit code is the worst of the steps, and a summary of the steps comes last.
set -euo pipefail

SCALE_FACTOR=${SCALE_FACTOR:-5000}        # depth PNG value per metre
POINT_CLOUDS=${POINT_CLOUDS:-}             # d2p outputs to keep: empty (none; stage 1.3 reads depth maps), ply, npy or ply,npy
WORKERS=${WORKERS:-2}                      # d2p processes
ANNOTATIONS=${ANNOTATIONS:-}               # the annotation file (default DATASET/annotations.json)
DATASET_BASE=${DATASET_BASE:-}             # annotation key prefix to replace (optional)
MASK_ERODE=${MASK_ERODE:-0}                # shrink masks by this many pixels before reading depth (estimated depth: 2-4)
IMAGE_ROOT=${IMAGE_ROOT:-}                 # LLaVA's --image_folder; records' "image" is relative to it (default DATASET/images)
VAL_FRACTION=${VAL_FRACTION:-0}            # share of images held out as a benchmark in OUTPUT_DIR/benchmark/, never in training; 0: none
BACKEND=${BACKEND:-template}               # stage 2 answers: template (offline) or openai
MODEL=${MODEL:-gpt-4o-mini}                # LLM name on the server (openai backend)
BASE_URL=${BASE_URL:-}                     # OpenAI-compatible server URL (default: OPENAI_BASE_URL, else OpenAI)
CONCURRENCY=${CONCURRENCY:-8}              # LLM requests in flight
SEED=${SEED:-0}                            # phrasing and sampling seed
PYTHON=${PYTHON:-}                         # interpreter (default: the repository's .venv from make setup, else python3)

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/batchkit/wrapper.sh"
wrapper_args 1 2 "$@"
require_dir "$1" DATASET
if [ -z "$PYTHON" ]; then
  if [ -x "$HERE/.venv/bin/python" ]; then PYTHON="$HERE/.venv/bin/python"; else PYTHON=python3; fi
fi
DATASET="$(cd "${1:?usage: bash run_spacesgg.sh DATASET [OUTPUT_DIR]}" && pwd)"
OUT="${2:-$DATASET/spacesgg}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
IMAGE_ROOT="${IMAGE_ROOT:-$DATASET/images}"
ANNOTATIONS="${ANNOTATIONS:-$DATASET/annotations.json}"
REWRITE=()
if [ -n "$DATASET_BASE" ]; then REWRITE=(--dataset-base "$DATASET_BASE" --data-prefix "$DATASET/images"); fi

# shellcheck source=batchkit/steps.sh
source "$HERE/batchkit/steps.sh"

if [ -n "$POINT_CLOUDS" ]; then
  step "1/7 d2p: depth maps -> point clouds ($POINT_CLOUDS)" \
    "$PYTHON" "$HERE/d2p.py" --dataset-path "$DATASET" --scale-factor "$SCALE_FACTOR" --workers "$WORKERS" --outputs "$POINT_CLOUDS"
else
  echo "== 1/7 d2p: skipped (POINT_CLOUDS is empty: stage 1.3 back-projects the depth maps itself)"
fi
step "2/7 layers_aggregation: depth layers" \
  "$PYTHON" "$HERE/layers_aggregation.py" --input-file "$ANNOTATIONS" --depth-dir "$DATASET/depth_maps" \
  --mask-dir "$DATASET/masks" --output-file "$OUT/layers.json" --scale-factor "$SCALE_FACTOR" --mask-erode "$MASK_ERODE" \
  ${REWRITE[@]+"${REWRITE[@]}"}
if [[ ",$POINT_CLOUDS," == *",npy,"* ]]; then POINTS=(--point-cloud-dir "$DATASET/point_clouds")
else POINTS=(--depth-dir "$DATASET/depth_maps" --scale-factor "$SCALE_FACTOR"); fi
step "3/7 multiview_layers: relations from four views" \
  "$PYTHON" "$HERE/multiview_layers.py" --input-file "$OUT/layers.json" "${POINTS[@]}" \
  --mask-dir "$DATASET/masks" --output-file "$OUT/multiview.json" --mask-erode "$MASK_ERODE" ${REWRITE[@]+"${REWRITE[@]}"}

LLM=(--backend "$BACKEND" --model "$MODEL" --concurrency "$CONCURRENCY" --seed "$SEED" --image-root "$IMAGE_ROOT")
if [ "$VAL_FRACTION" != 0 ]; then
  step "benchmark: hold out $VAL_FRACTION of the images" env PYTHONPATH="$HERE" "$PYTHON" -m spacesgg.benchmark \
    --anno-file "$OUT/multiview.json" --output-dir "$OUT/benchmark" --image-root "$IMAGE_ROOT" --val-fraction "$VAL_FRACTION" \
    --seed "$SEED" ${REWRITE[@]+"${REWRITE[@]}"}
  LLM+=(--split "$OUT/benchmark/split.json:train")
fi
if [ -n "$BASE_URL" ]; then LLM+=(--base-url "$BASE_URL"); fi
n=4
for kind in layer between rotation distance; do
  step "$n/7 llm_based_query: create_${kind}_prompt" \
    "$PYTHON" "$HERE/llm_based_query.py" --anno-file "$OUT/multiview.json" --prompt-function "create_${kind}_prompt" \
    --output-file "$OUT/${kind}.json" "${LLM[@]}" ${REWRITE[@]+"${REWRITE[@]}"}
  n=$((n + 1))
done

echo "SpaceSGG outputs: ${POINT_CLOUDS:+point clouds in $DATASET/point_clouds, }layers in $OUT/layers.json, relations in $OUT/multiview.json,"
echo "training data (LLaVA format, images relative to $IMAGE_ROOT) in $OUT/layer.json $OUT/between.json $OUT/rotation.json $OUT/distance.json"
finish
