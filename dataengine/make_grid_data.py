"""Render the grid images of many object pairs, in parallel over pairs, skipping complete pairs.

    python dataengine/make_grid_data.py --output-dir data/grid_data --pairs camel_frog dog_teapot --workers 2

Called by grid_data.sh (2 pairs) and extraction_data.sh (all 90 ordered pairs of ten objects).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from batchkit.cli import add_shard_arg, make_parser, positive_int, run_cli
from batchkit.shards import in_shard  # noqa: E402
from dataengine.grid import add_tiling_args, make_grid_data, parse_pairs


def build_parser():
    p = make_parser(__doc__, "Tile many ordered object pairs (reference_target) into grid datasets.")
    p.add_argument("--output-dir", required=True, help="dataset folder; each pair goes to OUTPUT_DIR/{a}_{b}/")
    p.add_argument("--pairs", nargs="+", default=None, help="ordered pairs reference_target, e.g. camel_frog")
    p.add_argument("--objects", nargs="+", default=None, help="instead of --pairs: every ordered pair of these objects")
    p.add_argument("--workers", type=positive_int, default=2, help="pairs rendered in parallel processes (default %(default)s)")
    add_tiling_args(p)
    add_shard_arg(p)
    return p


def main(args):
    pairs = [pair for pair in parse_pairs(args.pairs, args.objects) if in_shard("_".join(pair), args.shard)]
    return make_grid_data(pairs, args.output_dir, args.objects_dir, args.workers,
                          grid=args.grid, cell_size=args.cell_size, sizes=args.sizes, seed=args.seed,
                          background=args.background, no_same_row_or_col=args.no_same_row_or_col,
                          local_variation=args.local_variation, key_background=args.key_background,
                          references=args.references)


if __name__ == "__main__":
    sys.exit(run_cli(main, build_parser()))
