"""Depth maps to point clouds (SpaceSGG stage 1.1).

    python d2p.py --dataset-path data/synthetic_scenes --scale-factor 5000 --workers 2

Writes DATASET/point_clouds/{stem}.ply (binary, float32 xyz + uchar rgb) and
{stem}.npy (H x W x 3 float32 camera-frame point map, NaN where depth is
invalid). Camera frame: OpenCV (x right, y down, z forward), metres.
"""

import os
import sys

from batchkit.cli import add_shard_arg, make_parser, number, positive_float, positive_int, run_cli
from spacesgg.camera import DEFAULT_FOV_DEG
from spacesgg.d2p import DEFAULT_MAX_DEPTH, DEFAULT_SCALE_FACTOR, convert_dataset, parse_outputs


def build_parser():
    p = make_parser(__doc__, "Back-project 16-bit depth maps into binary PLY point clouds and camera-frame .npy point maps. "
                                "Images and depth maps are paired by file stem; intrinsics come from DATASET/K.txt "
                                "or, if it is absent, from --fov with the principal point at the image centre.")
    p.add_argument("--dataset-path", required=True, help="folder with images/, depth_maps/ and optionally K.txt, poses.txt")
    p.add_argument("--scale-factor", type=positive_float, default=DEFAULT_SCALE_FACTOR, help="depth PNG value per metre (default %(default)g)")
    p.add_argument("--fov", type=number(float, 0, 180, low_open=True, high_open=True), default=DEFAULT_FOV_DEG, help="horizontal field of view in degrees when K.txt is absent (default %(default)g)")
    p.add_argument("--max-depth", type=positive_float, default=DEFAULT_MAX_DEPTH, help="depths beyond this many metres are invalid (default %(default)g)")
    p.add_argument("--world-coordinates", action="store_true", help="transform the PLY by the image's camera-to-world pose from DATASET/poses.txt (the .npy stays in the camera frame)")
    p.add_argument("--output-dir", default=None, help="where to write (default DATASET/point_clouds)")
    p.add_argument("--workers", type=positive_int, default=min(4, os.cpu_count() or 1), help="images converted in parallel processes (default %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="redo images whose outputs are already newer than their inputs")
    p.add_argument("--outputs", default="ply,npy", help="what to write: ply (point clouds), npy (point maps) or ply,npy "
                   "(default %(default)s); stage 1.3 can read depth maps instead of point maps (--depth-dir)")
    add_shard_arg(p)
    return p


def main(args):
    return convert_dataset(args.dataset_path, scale_factor=args.scale_factor, output_dir=args.output_dir, fov=args.fov,
                           max_depth=args.max_depth, world_coordinates=args.world_coordinates,
                           workers=args.workers, overwrite=args.overwrite, outputs=parse_outputs(args.outputs),
                           shard=args.shard)


if __name__ == "__main__":
    sys.exit(run_cli(main, build_parser()))
