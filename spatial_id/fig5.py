"""Figure 5 as PNG: spatial IDs (size 224) on the orthonormalised x/y plane, and the explained variance per layer.

    python spatial_id/fig5.py --id-file embeds/grid_id/llava-7b.pt --text-file embeds/grid_id/llava-7b_text.pt --layer 16 --output fig5.png --sweep-output fig5_layers.png

Several --id-file (with as many --text-file and --labels, or none) draw side by side, e.g. a random and a
trained model.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from batchkit.cli import make_parser, nonnegative_int, run_cli
from spatial_id.figure import write_fig5
from spatial_id.ids import UNIVERSAL


def build_parser():
    p = make_parser(__doc__, "Project one key's size-224 spatial IDs at one layer onto the plane of its x and y axes "
                             "(Gram-Schmidt, x first), coloured by cell, with the text-only \"left\"/\"right\" "
                             "embeddings (centred on their mean) marked; the title gives the variance the plane explains.")
    p.add_argument("--id-file", required=True, nargs="+", help="ID file(s) from compute_id.py / average_id.py")
    p.add_argument("--text-file", default=None, nargs="+", help="{model}_text.pt from text_embed.py, one per ID file (optional markers)")
    p.add_argument("--labels", default=None, nargs="+", help="a panel title prefix per ID file, e.g. random trained")
    p.add_argument("--word", default=UNIVERSAL, help="which key of the ID file (default %(default)s)")
    p.add_argument("--layer", type=nonnegative_int, default=None, help="hidden-state index (default: the middle extracted layer)")
    p.add_argument("--output", required=True, help="PNG to write")
    p.add_argument("--sweep-output", default=None, help="also write the explained variance per layer as this PNG")
    return p


def main(args):
    return write_fig5(args.id_file, args.output, args.text_file, args.word, args.layer, args.sweep_output, args.labels)


if __name__ == "__main__":
    sys.exit(run_cli(main, build_parser()))
