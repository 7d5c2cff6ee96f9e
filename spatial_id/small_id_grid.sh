#!/usr/bin/env bash
# Spatial IDs on the small grid dataset (2 pairs), for Figure 5: per model {model}.pt (each pair's
# target word + universal), {model}_x.pt, {model}_y.pt and {model}_text.pt; models already extracted with the
# same snapshot, dtype and layers are skipped (compute_id.py checks the files' meta).
# Usage: bash spatial_id/small_id_grid.sh [IMAGE_BASE] [OUTPUT_BASE]
#   IMAGE_BASE   the grid dataset (default data/grid_data in the repository)
#   OUTPUT_BASE  where the .pt files go (default embeds/grid_id in the repository)
# Models are hub aliases, or ALIAS=DIR for a downloaded snapshot (offline):
#   MODELS="llava-7b=/models/llava-1.5-7b-hf qwen-3b" bash spatial_id/small_id_grid.sh
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
IMAGE_BASE="${1:-$HERE/../data/grid_data}"
require_dir "$IMAGE_BASE" IMAGE_BASE
OUTPUT_BASE="${2:-$HERE/../embeds/grid_id}"

for entry in $MODELS; do
  name="${entry%%=*}"
  echo "== $name: spatial IDs"
  "$PYTHON" "$HERE/compute_id.py" --model "$entry" --image-dir "$IMAGE_BASE" --output-dir "$OUTPUT_BASE" --with-text \
    --batch-size "$BATCH_SIZE" --device "$DEVICE" --dtype "$DTYPE" --layers "$LAYERS" ${QUERY:+--query "$QUERY"}
  "$PYTHON" "$HERE/compute_axes.py" --id-file "$OUTPUT_BASE/$name.pt"
done
echo "spatial IDs in $OUTPUT_BASE"
