"""Text-only hidden states of "left" and "right" in the query of the first pair (Figure 5's markers).

    python spatial_id/text_embed.py --model llava-7b --image-dir data/grid_data --output-dir embeds/grid_id

Writes OUTPUT_DIR/{model}_text.pt: {"meta", "layers", "embeds": {word: Tensor[L, D]}}.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from batchkit.cli import make_parser, run_cli
from spatial_id.extract import QUERY, Extractor, check_query
from spatial_id.ids import pair_folders, text_embeddings
from spatial_id.registry import add_model_args, parse_layers, resolve_model


def build_parser():
    p = make_parser(__doc__, __doc__.split("\n\n", 2)[2])
    p.add_argument("--image-dir", required=True, help="folder of pair folders; the first in name order gives the query")
    p.add_argument("--output-dir", required=True, help="where {model}_text.pt goes")
    p.add_argument("--words", nargs="+", default=["left", "right"], help="words of the query to read (default: left right)")
    add_model_args(p, with_batch=False)
    return p


def main(args):
    choice = resolve_model(args.model, args.model_path)
    pair_folders(args.image_dir)
    extractor = Extractor(choice, args.device, args.dtype)
    return text_embeddings(extractor, args.image_dir, args.output_dir, args.words, parse_layers(args.layers),
                           check_query(args.query or QUERY))


if __name__ == "__main__":
    sys.exit(run_cli(main, build_parser()))
