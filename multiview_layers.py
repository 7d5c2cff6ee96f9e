"""Layers and pairwise relations from the front, left, right and back of the scene (SpaceSGG stage 1.3).

    python multiview_layers.py --input-file outputs/layers.json --depth-dir data/synthetic_scenes/depth_maps --mask-dir data/synthetic_scenes/masks --output-file outputs/multiview.json

Reads the {stem}.npy point maps of d2p.py (--point-cloud-dir), or computes the
same points from the depth maps and the dataset's intrinsics (--depth-dir). Views orbit the scene about the
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
from pathlib import Path

from batchkit.cli import add_shard_arg, make_parser, number, positive_float, run_cli
from spacesgg.annotations import ImagePaths
from spacesgg.camera import DEFAULT_FOV_DEG
from spacesgg.cli import add_layer_args, add_mask_args, add_order_args, add_path_rewrite_args
from spacesgg.d2p import DEFAULT_MAX_DEPTH, DEFAULT_SCALE_FACTOR
from spacesgg.multiview import multiview_layers
from spacesgg.settings import GeometrySettings


def build_parser():
    p = make_parser(__doc__, __doc__.split("\n\n", 2)[2])
    p.add_argument("--input-file", required=True, help="annotation JSON (the output of layers_aggregation.py, or any native/legacy annotation)")
    p.add_argument("--point-cloud-dir", default=None, help="folder of {stem}.npy point maps written by d2p.py (or --depth-dir)")
    p.add_argument("--depth-dir", default=None, help="instead of point maps: the depth maps, back-projected with the dataset's "
                                                     "intrinsics exactly as d2p.py does (no point maps on disk)")
    p.add_argument("--camera-dir", default=None, help="with --depth-dir: the folder holding intrinsics.json / K.txt (default: the depth folder's parent)")
    p.add_argument("--scale-factor", type=positive_float, default=DEFAULT_SCALE_FACTOR, help="with --depth-dir: depth PNG value per metre (default %(default)g)")
    p.add_argument("--fov", type=number(float, 0, 180, low_open=True, high_open=True), default=DEFAULT_FOV_DEG,
                   help="with --depth-dir: horizontal field of view in degrees where there is no intrinsics.json entry or K.txt (default %(default)g)")
    p.add_argument("--max-depth", type=positive_float, default=DEFAULT_MAX_DEPTH, help="with --depth-dir: depths beyond this many metres are invalid (default %(default)g)")
    p.add_argument("--mask-dir", required=True, help="folder of object mask PNGs")
    p.add_argument("--output-file", required=True, help="annotation JSON to write (atomically)")
    add_path_rewrite_args(p)
    add_layer_args(p)
    add_mask_args(p)
    add_shard_arg(p)
    add_order_args(p)
    return p


def main(args):
    images = ImagePaths.from_args(args, Path(args.point_cloud_dir or args.depth_dir or ".").parent)
    return multiview_layers(args.input_file, args.point_cloud_dir, args.mask_dir, args.output_file,
                            GeometrySettings.from_args(args), images, args.depth_dir, args.camera_dir, args.shard)


if __name__ == "__main__":
    sys.exit(run_cli(main, build_parser()))
