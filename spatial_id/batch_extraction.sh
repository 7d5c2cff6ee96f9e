#!/usr/bin/env bash
# Universal spatial IDs over all pairs of the extraction dataset: per model OUTPUT_BASE/{a}_{b}/{model}.pt,
# OUTPUT_BASE/{model}.pt (universal), {model}_x.pt and {model}_y.pt. Pairs already extracted are skipped.
# Usage: bash spatial_id/batch_extraction.sh [IMAGE_BASE] [OUTPUT_BASE]
#   IMAGE_BASE   the grid dataset (default data/extraction_data in the repository)
#   OUTPUT_BASE  where the .pt files go (default embeds/universal_id in the repository)
# Models are hub aliases, or ALIAS=DIR for a downloaded snapshot (offline):
#   MODELS="llava-7b=/models/llava-1.5-7b-hf qwen-3b" bash spatial_id/batch_extraction.sh
set -euo pipefail

MODELS=${MODELS:-"llava-7b qwen-3b internvl-2b gemma-4b llama-11b"}  # aliases, or ALIAS=DIR for local snapshots
DEVICE=${DEVICE:-auto}                                               # auto: cuda if available, else cpu
DTYPE=${DTYPE:-auto}                                                 # auto: float16 on a GPU (bfloat16 where it overflows), float32 on the CPU
BATCH_SIZE=${BATCH_SIZE:-8}                                          # images per forward pass
LAYERS=${LAYERS:-all}                                                # hidden-state indices, e.g. all or 0,8,16-20
QUERY=${QUERY:-}                                                     # question template, e.g. "Is the {b} to the left or right of the {a}?"
PYTHON=${PYTHON:-}                                                   # interpreter (default: the repository's .venv from make setup, else python3)

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/../batchkit/wrapper.sh"
wrapper_args 0 2 "$@"
if [ -z "$PYTHON" ]; then
  if [ -x "$HERE/../.venv/bin/python" ]; then PYTHON="$HERE/../.venv/bin/python"; else PYTHON=python3; fi
fi
IMAGE_BASE="${1:-$HERE/../data/extraction_data}"
require_dir "$IMAGE_BASE" IMAGE_BASE
OUTPUT_BASE="${2:-$HERE/../embeds/universal_id}"

for entry in $MODELS; do
  name="${entry%%=*}"
  echo "== $name: per-pair spatial IDs"
  "$PYTHON" "$HERE/compute_id.py" --model "$entry" --image-dir "$IMAGE_BASE" --output-dir "$OUTPUT_BASE" --per-pair \
    --batch-size "$BATCH_SIZE" --device "$DEVICE" --dtype "$DTYPE" --layers "$LAYERS" ${QUERY:+--query "$QUERY"}
  echo "== $name: universal IDs and axes"
  "$PYTHON" "$HERE/average_id.py" --input-dir "$OUTPUT_BASE" --model "$name" --image-dir "$IMAGE_BASE"
  "$PYTHON" "$HERE/compute_axes.py" --id-file "$OUTPUT_BASE/$name.pt"
done
echo "universal spatial IDs in $OUTPUT_BASE"
