#!/usr/bin/env bash
# Join the shards of a SpaceSGG array run (slurm/spacesgg_array.sbatch) into the usual files; refuses a missing
# or duplicated shard. Run it after the array (sbatch --dependency=afterok:JOBID ... slurm/merge.sh, or by hand).
# Usage: OUT=/data/coco_val/spacesgg SHARDS=16 bash slurm/merge.sh
#SBATCH --job-name=spacesgg-merge
#SBATCH --time=00:30:00
set -euo pipefail
source "${SLURM_SUBMIT_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}/batchkit/wrapper.sh"
wrapper_args 0 0 "$@"

OUT=${OUT:?set OUT=/path/to/outputs}                # the array's output folder
SHARDS=${SHARDS:?set SHARDS=N, the array size}      # how many shards the array ran
PYTHON=${PYTHON:-}                                  # interpreter (default: the repository's .venv)

ROOT="${SLURM_SUBMIT_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
if [ -z "$PYTHON" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
for name in layers multiview layer between rotation distance; do
  "$PYTHON" -m spacesgg.merge --output "$OUT/$name.json" "$OUT/$name".shard-*-of-"$SHARDS".json
done
