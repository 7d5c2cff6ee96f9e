"""Render one object pair's grid images in one process (target b in every cell, reference a elsewhere).

    python dataengine/tile_two_objects.py --object-a camel --object-b frog --output-dir data/grid_data

Writes OUTPUT_DIR/{a}_{b}/{a}_{b}_{i}_{j}_{size}.png ((i, j) = column, row of b,
0-based from the top-left) and manifest.json. A complete folder of the same
configuration is skipped; one of another configuration is refused.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from batchkit.cli import make_parser, run_cli
from dataengine.grid import add_tiling_args, default_objects_dir, ensure_objects, tile_pair


def build_parser():
    p = make_parser(__doc__, "Paste object b (the target) in every cell of a grid and object a (the reference) "
                             "in a seeded random other cell, at every size, with a manifest of cells and boxes.")
    p.add_argument("--object-a", required=True, help="reference object name (render OBJECTS_DIR/{name}.png)")
    p.add_argument("--object-b", required=True, help="target object name, the word whose spatial ID is read")
    p.add_argument("--output-dir", required=True, help="dataset folder; the pair goes to OUTPUT_DIR/{a}_{b}/")
    add_tiling_args(p)
    return p


def main(args):
    objects_dir = args.objects_dir or default_objects_dir()
    ensure_objects([args.object_a, args.object_b], objects_dir)
    status = tile_pair(args.object_a, args.object_b, objects_dir, args.output_dir, args.grid, args.cell_size, args.sizes,
                       args.seed, args.background, args.no_same_row_or_col, args.local_variation, args.key_background,
                       args.references)
    print(f"tile_two_objects: {args.object_a}_{args.object_b} {status} in {Path(args.output_dir) / f'{args.object_a}_{args.object_b}'}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, build_parser()))
