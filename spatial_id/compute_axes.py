"""x and y axes of spatial IDs: mean differences between cells along rows and columns (size-224 images).

    python spatial_id/compute_axes.py --id-file embeds/grid_id/llava-7b.pt

Writes {model}_x.pt and {model}_y.pt beside the ID file (or in --output-dir), an
axis for every key of the file: x = mean over rows j and x1 < x2 of
ID(x2, j) - ID(x1, j); y likewise over columns and y1 < y2.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from batchkit.cli import make_parser, positive_int, run_cli
from spatial_id.ids import AXIS_SIZE, compute_axes


def build_parser():
    p = make_parser(__doc__, __doc__.split("\n\n", 2)[2])
    p.add_argument("--id-file", required=True, help="an ID file written by compute_id.py or average_id.py")
    p.add_argument("--output-dir", default=None, help="default: beside the ID file")
    p.add_argument("--size", type=positive_int, default=AXIS_SIZE, help="object size whose cells define the axes (default %(default)s)")
    return p


def main(args):
    return compute_axes(args.id_file, args.output_dir, args.size)


if __name__ == "__main__":
    sys.exit(run_cli(main, build_parser()))
