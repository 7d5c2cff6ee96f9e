"""Box-prompted masks for every object of an annotation file that has a box but no mask (SAM, SAM-HQ, SAM 2).

    python dataengine/segment_objects.py --dataset-path data/my_photos --input-file data/my_photos/annotations.json --output-file data/my_photos/annotations.masks.json --model sam-vit-base

All boxes of an image go to the model in one prompt batch; the best-scoring
candidate mask of each box is written as MASK_DIR/{stem}_{id}.png (default
DATASET/masks) and named in the output annotation file, with "mask_score".
Images are found at their annotation key (or --dataset-base/--data-prefix),
else in DATASET/images/. A rerun reuses the masks made with the same settings.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from batchkit.cli import add_shard_arg, make_parser, run_cli  # noqa: E402
from dataengine.models import add_device_args  # noqa: E402
from dataengine.segment import SEG_MODELS, segment_annotations  # noqa: E402
from spacesgg.cli import add_path_rewrite_args  # noqa: E402


def build_parser():
    p = make_parser(__doc__, __doc__.split("\n\n", 2)[2])
    p.add_argument("--dataset-path", required=True, help="dataset folder (images/ is where images are looked for last)")
    p.add_argument("--input-file", required=True, help="annotation JSON whose objects have boxes")
    p.add_argument("--output-file", required=True, help="annotation JSON to write, every object with a mask")
    p.add_argument("--model", required=True, help=f"alias ({', '.join(SEG_MODELS)}) or a local model folder")
    p.add_argument("--mask-dir", default=None, help="where the masks go (default DATASET/masks)")
    p.add_argument("--overwrite", action="store_true", help="make masks for objects that already have one too")
    add_device_args(p)
    add_path_rewrite_args(p)
    add_shard_arg(p)
    return p


def main(args):
    return segment_annotations(args.dataset_path, args.input_file, args.output_file, args.model, args.mask_dir,
                               args.overwrite, args.device, args.dtype, args.dataset_base, args.data_prefix, args.shard)


if __name__ == "__main__":
    sys.exit(run_cli(main, build_parser()))
