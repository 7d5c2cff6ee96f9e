"""A COCO instances file into the dataset layout of stage 1 (images linked, masks decoded, annotations.json).

    python dataengine/import_coco.py --instances annotations/instances_val2017.json --captions annotations/captions_val2017.json --image-dir val2017 --output-dir data/coco_val

Writes OUTPUT_DIR/images/{file_name} (symbolic links to the originals),
OUTPUT_DIR/masks/{stem}_{id}.png (decoded with pycocotools: polygons and RLE)
and OUTPUT_DIR/annotations.json keyed by the linked image path, each object
with its label, box [x0, y0, x1, y1] and mask. Crowd annotations and those
below --min-area are skipped and counted. Depth comes next:
dataengine/estimate_depth.py.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from batchkit.cli import make_parser, nonnegative_float, positive_int, run_cli  # noqa: E402
from dataengine.coco import import_coco  # noqa: E402


def build_parser():
    p = make_parser(__doc__, __doc__.split("\n\n", 2)[2])
    p.add_argument("--instances", required=True, help="COCO instances JSON (e.g. instances_val2017.json)")
    p.add_argument("--captions", default=None, help="COCO captions JSON; the first caption of an image becomes its caption")
    p.add_argument("--image-dir", required=True, help="folder holding the images named by file_name")
    p.add_argument("--output-dir", required=True, help="dataset folder to write (images/, masks/, annotations.json)")
    p.add_argument("--min-area", type=nonnegative_float, default=0.0, help="skip objects whose COCO area is below this many pixels (default %(default)g)")
    p.add_argument("--categories", default=None, help="comma-separated category names to keep (default: all)")
    p.add_argument("--limit", type=positive_int, default=None, help="only the first N images (by id) that have an object")
    return p


def main(args):
    categories = [c.strip() for c in args.categories.split(",") if c.strip()] if args.categories else None
    return import_coco(args.instances, args.image_dir, args.output_dir, args.captions, args.min_area, categories, args.limit)


if __name__ == "__main__":
    sys.exit(run_cli(main, build_parser()))
