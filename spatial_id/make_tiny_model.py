"""Build a tiny random-weight VLM of one family offline (for tests, the demo and trying the pipeline).

    python spatial_id/make_tiny_model.py --family llava --output-dir models/tiny-llava

Its IDs come from random weights and mean nothing; load it with --model ALIAS --model-path DIR.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from batchkit.cli import make_parser, positive_int, run_cli
from spatial_id.tiny import FAMILIES, build_tiny_model


def build_parser():
    p = make_parser(__doc__, "Random weights, a BPE tokenizer trained here, the family's real processor and a chat "
                             "template in the family's format, saved with save_pretrained.")
    p.add_argument("--family", required=True, choices=FAMILIES, help="model family")
    p.add_argument("--output-dir", required=True, help="folder to save into")
    p.add_argument("--layers", type=positive_int, default=4, help="decoder layers (default %(default)s)")
    p.add_argument("--hidden", type=positive_int, default=64, help="decoder hidden size (default %(default)s)")
    p.add_argument("--image-size", type=positive_int, default=32, help="vision input size in pixels (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="weight seed (default %(default)s)")
    return p


def main(args):
    out = build_tiny_model(args.family, args.output_dir, args.layers, args.hidden, args.image_size, args.seed)
    print(f"make_tiny_model: tiny {args.family} (random weights) saved to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, build_parser()))
