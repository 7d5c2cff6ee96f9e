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
from spatial_id.ids import compute_ids, pair_folders, pending_pairs, text_embeddings  # noqa: E402
from spatial_id.registry import add_model_args, parse_layers, resolve_model  # noqa: E402


def build_parser():
    p = make_parser(__doc__, __doc__.split("\n\n", 2)[2])
    p.add_argument("--image-dir", required=True, help="a pair folder ({a}_{b} with manifest.json) or a folder of them")
    p.add_argument("--output-dir", required=True, help="where the .pt files go")
    p.add_argument("--per-pair", action="store_true", help="one file per pair in OUTPUT_DIR/{a}_{b}/ (resumable); else one file")
    p.add_argument("--with-text", action="store_true", help="also write {model}_text.pt (text-only \"left\"/\"right\", as text_embed.py) with the same loaded model")
    add_model_args(p)
    return p


def main(args):
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {args.batch_size}")
    choice = resolve_model(args.model, args.model_path)
    pairs = pair_folders(args.image_dir)         # fail on a bad folder before loading a model
    if args.per_pair and not args.with_text and not pending_pairs(args.image_dir, args.output_dir, choice.name):
        print(f"compute_id {choice.name}: 0 pairs done, {len(pairs)} skipped, 0 failed (all extracted in {args.output_dir})")
        return 0
    extractor = Extractor(choice, args.device, args.dtype)
    code = compute_ids(extractor, args.image_dir, args.output_dir, parse_layers(args.layers), args.batch_size, args.per_pair)
    if args.with_text:
        code = code or text_embeddings(extractor, args.image_dir, args.output_dir, layers=parse_layers(args.layers))
    return code


if __name__ == "__main__":
    sys.exit(run_cli(main, build_parser()))
