"""Render the offline stand-ins of the ten object names as RGBA PNGs.

    python dataengine/make_objects.py --output-dir data/objects

Existing files (for example real Objaverse renders) are kept unless --overwrite.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from batchkit.cli import make_parser, positive_int, run_cli
from dataengine.grid import default_objects_dir, make_objects
from dataengine.objects import OBJECT_NAMES, RENDER_SIZE


def build_parser():
    p = make_parser(__doc__, "Ray-march small 3D models of primitives into centred, square RGBA renders "
                             "with a transparent background, one per object name.")
    p.add_argument("--output-dir", default=str(default_objects_dir()), help="folder to write {name}.png into (default %(default)s)")
    p.add_argument("--names", nargs="+", choices=OBJECT_NAMES, default=list(OBJECT_NAMES), help="objects to render (default: all ten)")
    p.add_argument("--size", type=positive_int, default=RENDER_SIZE, help="render side in pixels (default %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace existing renders")
    return p


def main(args):
    written = make_objects(args.names, args.output_dir, args.size, args.overwrite)
    print(f"make_objects: {len(written)} written, {len(args.names) - len(written)} kept, in {args.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, build_parser()))
