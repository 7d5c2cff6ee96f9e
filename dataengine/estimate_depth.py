"""Metric monocular depth for photos without depth: DATASET/images/* -> DATASET/depth_maps/{stem}.png.

    python dataengine/estimate_depth.py --dataset-path data/my_photos --model depth-anything-v2-metric-indoor-small --batch-size 8

16-bit PNGs (metres x --scale-factor, 0 = invalid) at each image's own
resolution, provenance in DATASET/depth_maps/depth_settings.json; Depth Pro
also writes its focal lengths to DATASET/intrinsics.json. Relative-depth
checkpoints are refused: stage 1 needs metres. A rerun skips images whose
depth map was made with the same settings.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from batchkit.cli import add_shard_arg, make_parser, positive_float, positive_int, run_cli  # noqa: E402
from batchkit.models import add_device_args  # noqa: E402
from dataengine.depth import BATCH_SIZES, estimate_dataset  # noqa: E402
from dataengine.models import DEPTH_MODELS  # noqa: E402
from spacesgg.d2p import DEFAULT_MAX_DEPTH, DEFAULT_SCALE_FACTOR  # noqa: E402


def build_parser():
    p = make_parser(__doc__, __doc__.split("\n\n", 2)[2])
    p.add_argument("--dataset-path", required=True, help="folder with images/; depth_maps/ is written beside it")
    p.add_argument("--model", required=True, help=f"alias ({', '.join(DEPTH_MODELS)}) or a local model folder")
    p.add_argument("--scale-factor", type=positive_float, default=DEFAULT_SCALE_FACTOR, help="depth PNG value per metre (default %(default)g)")
    p.add_argument("--max-depth", type=positive_float, default=DEFAULT_MAX_DEPTH, help="depths beyond this many metres become 0 (default %(default)g)")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help=f"images of one size per forward pass (default: {BATCH_SIZES['cpu']} on the CPU, where larger batches "
                        f"are slower per image, {BATCH_SIZES['cuda']} on a GPU)")
    add_device_args(p)
    add_shard_arg(p)
    p.add_argument("--overwrite", action="store_true", help="redo images whose depth maps are current")
    return p


def main(args):
    return estimate_dataset(args.dataset_path, args.model, args.scale_factor, args.max_depth, args.batch_size,
                            args.device, args.dtype, args.overwrite, args.shard)


if __name__ == "__main__":
    sys.exit(run_cli(main, build_parser()))
