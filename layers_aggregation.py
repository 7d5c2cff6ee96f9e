"""Per-object depth statistics and depth layers near to far (SpaceSGG stage 1.2).

    python layers_aggregation.py --input-file data/synthetic_scenes/annotations.json --depth-dir data/synthetic_scenes/depth_maps --mask-dir data/synthetic_scenes/masks --output-file outputs/layers.json --scale-factor 5000

Adds per object "depth": {"near", "median", "far", "pixels"} (5th, 50th and
95th percentile of all valid depths inside the mask, metres) and per image
"levels": [[ids of layer 1, nearest], [layer 2], ...].

Layer rule: objects sorted by near depth join the current layer while their
near depth is within max(--layer-gap, --layer-gap-rel x layer far depth) of the
layer's far depth; a clearly farther object starts a new layer. So objects
whose depth ranges overlap share a layer.
"""

import sys
from pathlib import Path

from batchkit.cli import add_shard_arg, make_parser, positive_float, run_cli
from spacesgg.annotations import ImagePaths
from spacesgg.cli import add_layer_args, add_mask_args, add_path_rewrite_args
from spacesgg.d2p import DEFAULT_SCALE_FACTOR
from spacesgg.layers import aggregate_layers
from spacesgg.settings import GeometrySettings


def build_parser():
    p = make_parser(__doc__, __doc__.split("\n\n", 2)[2])
    p.add_argument("--input-file", required=True, help="annotation JSON keyed by image path (native or legacy form)")
    p.add_argument("--depth-dir", required=True, help="folder of 16-bit depth PNGs (or float .npy in metres) named by each record's \"depth\"")
    p.add_argument("--mask-dir", required=True, help="folder of object mask PNGs (non-zero inside the object)")
    p.add_argument("--output-file", required=True, help="annotation JSON to write (atomically)")
    p.add_argument("--scale-factor", type=positive_float, default=DEFAULT_SCALE_FACTOR, help="depth PNG value per metre (default %(default)g)")
    add_path_rewrite_args(p)
    add_layer_args(p)
    add_mask_args(p)
    add_shard_arg(p)
    return p


def main(args):
    images = ImagePaths.from_args(args, Path(args.depth_dir).parent)
    return aggregate_layers(args.input_file, args.depth_dir, args.mask_dir, args.output_file,
                            GeometrySettings.from_args(args), images, args.shard)


if __name__ == "__main__":
    sys.exit(run_cli(main, build_parser()))
