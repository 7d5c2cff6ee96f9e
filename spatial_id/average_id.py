"""Universal spatial IDs: the mean of the per-pair IDs of one model.

    python spatial_id/average_id.py --input-dir embeds/universal_id --model llava-7b --image-dir data/extraction_data

Reads INPUT_DIR/{a}_{b}/{model}.pt (written by compute_id.py --per-pair) for
exactly the pairs of --image-dir (its pair folders) or --pairs, never whatever
else lies in INPUT_DIR, and writes INPUT_DIR/{model}.pt (or --output-file):
"universal" (the mean over pairs) and each target word's mean over the pairs
that hold it. Files that disagree on model path, dtype, layers or cells are
refused.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from batchkit.cli import make_parser, run_cli
from batchkit.errors import UserError
from batchkit.files import check_name
from spatial_id.ids import average_ids, pair_folders


def build_parser():
    p = make_parser(__doc__, __doc__.split("\n\n", 2)[2])
    p.add_argument("--input-dir", required=True, help="folder of pair folders holding {model}.pt")
    p.add_argument("--model", required=True, help="model name (the .pt file stem), e.g. llava-7b")
    p.add_argument("--image-dir", default=None, help="the grid dataset the IDs were extracted from: its pair folders are the pairs")
    p.add_argument("--pairs", nargs="+", default=None, help="instead of --image-dir: the pairs, e.g. camel_frog dog_teapot")
    p.add_argument("--output-file", default=None, help="default INPUT_DIR/{model}.pt")
    return p


def main(args):
    if bool(args.image_dir) == bool(args.pairs):
        raise UserError("give the pairs to average: --image-dir GRID_DATASET or --pairs a_b ... (one of them)")
    names = [f.name for f in pair_folders(args.image_dir)] if args.image_dir else args.pairs
    for name in names:
        for part in name.split("_", 1):
            check_name(part, f"pair {name!r}: object name")
    files = [Path(args.input_dir) / name / f"{args.model}.pt" for name in names]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise UserError(f"{missing[0]}: no ID file for pair {missing[0].parent.name} ({len(missing)} of {len(files)} "
                        "missing); run compute_id.py --per-pair first")
    return average_ids(files, args.output_file or Path(args.input_dir) / f"{args.model}.pt")


if __name__ == "__main__":
    sys.exit(run_cli(main, build_parser()))
