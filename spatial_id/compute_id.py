"""Spatial IDs of a VLM from grid images: the target word's hidden states per cell, mean-centred per pair.

    python spatial_id/compute_id.py --model llava-7b --image-dir data/grid_data --output-dir embeds/grid_id

IMAGE_DIR is one pair folder or a folder of pair folders (dataengine/). Without
--per-pair it writes OUTPUT_DIR/{model}.pt with each pair's target word and
"universal" (their mean); with --per-pair, OUTPUT_DIR/{a}_{b}/{model}.pt per
pair, skipping pairs already done (then run average_id.py).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spacesgg.cli import make_parser, run_cli  # noqa: E402
from spacesgg.errors import UserError  # noqa: E402
from spatial_id.extract import Extractor  # noqa: E402
from spatial_id.ids import compute_ids, pair_folders  # noqa: E402
from spatial_id.registry import add_model_args, parse_layers, resolve_model  # noqa: E402


def build_parser():
    p = make_parser(__doc__, __doc__.split("\n\n", 2)[2])
    p.add_argument("--image-dir", required=True, help="a pair folder ({a}_{b} with manifest.json) or a folder of them")
    p.add_argument("--output-dir", required=True, help="where the .pt files go")
    p.add_argument("--per-pair", action="store_true", help="one file per pair in OUTPUT_DIR/{a}_{b}/ (resumable); else one file")
    add_model_args(p)
    return p


def main(args):
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {args.batch_size}")
    choice = resolve_model(args.model, args.model_path)
    pair_folders(args.image_dir)                 # fail on a bad folder before loading a model
    extractor = Extractor(choice, args.device, args.dtype)
    return compute_ids(extractor, args.image_dir, args.output_dir, parse_layers(args.layers), args.batch_size, args.per_pair)


if __name__ == "__main__":
    sys.exit(run_cli(main, build_parser()))
