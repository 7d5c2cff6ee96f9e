"""Box-prompted masks for every object of an annotation file that has a box but no mask (SAM, SAM-HQ, SAM 2).

    python dataengine/segment_objects.py --dataset-path data/my_photos --input-file data/my_photos/annotations.json --output-file data/my_photos/annotations.masks.json --model sam-vit-base

All boxes of an image go to the model in one prompt batch; one mask per box
(as SAM's reference predictor gives for a box, or with --multimask-output the
best of three candidates) is written as MASK_DIR/{stem}_{id}.png (default
DATASET/masks) and named in the output annotation file, with "mask_score" and
"mask_from" (the box, image digest and model it was made from). Images are
found at their annotation key (or --dataset-base/--data-prefix), else in
DATASET/images/. A rerun reuses a mask only when it was made from today's
box, image and model; any other mask of ours is made again.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from batchkit.cli import add_shard_arg, make_parser, run_cli  # noqa: E402
from batchkit.models import add_device_args  # noqa: E402
from dataengine.segment import SEG_MODELS, segment_annotations  # noqa: E402
from spacesgg.cli import add_path_rewrite_args  # noqa: E402


def build_parser():
    p = make_parser(__doc__, __doc__.split("\n\n", 2)[2])
    p.add_argument("--dataset-path", required=True, help="dataset folder (images/ is where images are looked for last)")
    p.add_argument("--input-file", required=True, help="annotation JSON whose objects have boxes")
    p.add_argument("--output-file", required=True, help="annotation JSON to write, every object with a mask")
    p.add_argument("--model", required=True, help=f"alias ({', '.join(SEG_MODELS)}) or a local model folder")
    p.add_argument("--mask-dir", default=None, help="where the masks go (default DATASET/masks)")
    p.add_argument("--overwrite", action="store_true", help="make masks for every object, also those given with the data and current ones")
    p.add_argument("--multimask-output", action="store_true",
                   help="ask for three candidate masks per box and keep the best by the model's IoU estimate (default: one "
                        "mask per box, as SAM's predictor for unambiguous box prompts)")
    add_device_args(p)
    add_path_rewrite_args(p)
    add_shard_arg(p)
    return p


def main(args):
    return segment_annotations(args.dataset_path, args.input_file, args.output_file, args.model, args.mask_dir,
                               args.overwrite, args.device, args.dtype, args.dataset_base, args.data_prefix, args.shard,
                               args.multimask_output)


if __name__ == "__main__":
    sys.exit(run_cli(main, build_parser()))
