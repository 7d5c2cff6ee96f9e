"""Universal spatial IDs: the mean of the per-pair IDs of one model.

    python spatial_id/average_id.py --input-dir embeds/universal_id --model llava-7b

Reads INPUT_DIR/*/{model}.pt (written by compute_id.py --per-pair) and writes
INPUT_DIR/{model}.pt (or --output-file) with the IDs keyed "universal".
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from batchkit.cli import make_parser, run_cli  # noqa: E402
from spatial_id.ids import average_ids  # noqa: E402


def build_parser():
    p = make_parser(__doc__, __doc__.split("\n\n", 2)[2])
    p.add_argument("--input-dir", required=True, help="folder of pair folders holding {model}.pt")
    p.add_argument("--model", required=True, help="model name (the .pt file stem), e.g. llava-7b")
    p.add_argument("--output-file", default=None, help="default INPUT_DIR/{model}.pt")
    return p


def main(args):
    files = sorted(Path(args.input_dir).glob(f"*/{args.model}.pt"))
    return average_ids(files, args.output_file or Path(args.input_dir) / f"{args.model}.pt")


if __name__ == "__main__":
    sys.exit(run_cli(main, build_parser()))
