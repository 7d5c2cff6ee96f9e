"""Layers and pairwise relations from the front, left, right and back of the scene (SpaceSGG stage 1.3).

    python multiview_layers.py --input-file outputs/layers.json --point-cloud-dir data/synthetic_scenes/point_clouds --mask-dir data/synthetic_scenes/masks --output-file outputs/multiview.json

Reads the {stem}.npy point maps of d2p.py. Views orbit the scene about the
vertical axis through the scene centre (median of all object points); right =
forward x up, up is -y:
  front  the original camera                    x' =  x, z' =  z
  left   viewer on the scene's -x side, facing +x x' = -z, z' =  x
  right  viewer on the +x side, facing -x        x' =  z, z' = -x
  back   viewer behind the scene, facing -z      x' = -x, z' = -z
Adds per image "views": {view: {"levels": [[ids]], "relations": {"a>b": [lr, ud, fb]}}}
and "order_list" (the front view's relations). lr = -1 if a is left of b, +1 if
right; ud = -1 if a is above b, +1 if below; fb = -1 if a is in front of b, +1
if behind. Ambiguity rule: an order is stated only when the two objects'
5..95th-percentile extents along that axis overlap by less than
--overlap-tolerance x the shorter extent and their medians are at least
--min-separation metres apart; otherwise it is 0.
"""

import sys

from batchkit.cli import make_parser, run_cli
from spacesgg.cli import add_layer_args, add_mask_args, add_order_args, add_path_rewrite_args
from spacesgg.multiview import multiview_layers


def build_parser():
    p = make_parser(__doc__, __doc__.split("\n\n", 2)[2])
    p.add_argument("--input-file", required=True, help="annotation JSON (the output of layers_aggregation.py, or any native/legacy annotation)")
    p.add_argument("--point-cloud-dir", required=True, help="folder of {stem}.npy point maps written by d2p.py")
    p.add_argument("--mask-dir", required=True, help="folder of object mask PNGs")
    p.add_argument("--output-file", required=True, help="annotation JSON to write (atomically)")
    add_path_rewrite_args(p)
    add_layer_args(p)
    add_mask_args(p)
    add_order_args(p)
    return p


def main(args):
    return multiview_layers(args.input_file, args.point_cloud_dir, args.mask_dir, args.output_file, args.dataset_base,
                            args.data_prefix, mask_erode=args.mask_erode, layer_gap=args.layer_gap, layer_gap_rel=args.layer_gap_rel,
                            overlap_tolerance=args.overlap_tolerance, min_separation=args.min_separation)


if __name__ == "__main__":
    sys.exit(run_cli(main, build_parser()))
