#!/usr/bin/env bash
# Small grid dataset (2 object pairs) for the Figure 5 spatial IDs.
# Usage: bash dataengine/grid_data.sh [OUTPUT_DIR]
#   OUTPUT_DIR  where the pair folders go (default data/grid_data in the repository)
# Every setting can be overridden from the environment, e.g. SIZES="224 74" bash dataengine/grid_data.sh
set -euo pipefail

PAIRS=${PAIRS:-"camel_frog dog_teapot"}  # ordered pairs reference_target
GRID=${GRID:-4}                          # cells per side
CELL=${CELL:-224}                        # cell size in pixels (canvas = GRID x CELL)
SIZES=${SIZES:-"224 174 124 74"}         # object sizes in pixels
SEED=${SEED:-0}                          # placement seed: same seed, same bytes
REFERENCES=${REFERENCES:-random}         # random: one reference cell per image; all: every other cell (960 images/pair)
BACKGROUND=${BACKGROUND:-black}          # black (as published), white, or a folder of images
WORKERS=${WORKERS:-2}                    # pairs in parallel
PYTHON=${PYTHON:-}                       # interpreter (default: the repository's .venv from make setup, else python3)

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/../batchkit/wrapper.sh"
wrapper_args 0 1 "$@"
if [ -z "$PYTHON" ]; then
  if [ -x "$HERE/../.venv/bin/python" ]; then PYTHON="$HERE/../.venv/bin/python"; else PYTHON=python3; fi
fi
OUTPUT_DIR="${1:-$HERE/../data/grid_data}"

# shellcheck disable=SC2086
"$PYTHON" "$HERE/make_grid_data.py" --output-dir "$OUTPUT_DIR" --pairs $PAIRS --grid "$GRID" --cell-size "$CELL" \
  --sizes $SIZES --seed "$SEED" --background "$BACKGROUND" --references "$REFERENCES" --workers "$WORKERS"
