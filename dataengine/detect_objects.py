"""Open-vocabulary boxes for photos with no annotation (Grounding DINO, OWLv2) into an annotation file.

    python dataengine/detect_objects.py --dataset-path data/my_photos --output-file data/my_photos/annotations.json --model grounding-dino-tiny --labels "chair, table, lamp"

Every box gets one of the given labels, with its "score"; duplicates of a label
are removed by non-maximum suppression (--nms-iou) and the --max-objects best
are kept. Images the output file already holds with the same settings are
skipped. Masks come next: dataengine/segment_objects.py.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from batchkit.cli import make_parser, number, positive_int, run_cli  # noqa: E402
from batchkit.models import add_device_args  # noqa: E402
from dataengine.detect import (  # noqa: E402
    DEFAULT_BOX_THRESHOLD,
    DEFAULT_MAX_OBJECTS,
    DEFAULT_NMS_IOU,
    DEFAULT_TEXT_THRESHOLD,
    DETECT_MODELS,
    detect_dataset,
    parse_labels,
)

fraction = number(float, 0, 1)


def build_parser():
    p = make_parser(__doc__, __doc__.split("\n\n", 2)[2])
    p.add_argument("--dataset-path", required=True, help="folder with images/")
    p.add_argument("--output-file", required=True, help="annotation JSON to write (existing records are kept)")
    p.add_argument("--model", required=True, help=f"alias ({', '.join(DETECT_MODELS)}) or a local model folder")
    p.add_argument("--labels", default=None, help='comma-separated labels to look for, e.g. "chair, table, lamp"')
    p.add_argument("--labels-file", default=None, help="instead of --labels: a file of labels, one per line")
    p.add_argument("--box-threshold", type=fraction, default=DEFAULT_BOX_THRESHOLD, help="keep boxes scoring above this (default %(default)g)")
    p.add_argument("--text-threshold", type=fraction, default=DEFAULT_TEXT_THRESHOLD, help="Grounding DINO: tokens above this make a box's phrase (default %(default)g)")
    p.add_argument("--nms-iou", type=fraction, default=DEFAULT_NMS_IOU, help="boxes of one label overlapping more than this IoU are duplicates (default %(default)g)")
    p.add_argument("--max-objects", type=positive_int, default=DEFAULT_MAX_OBJECTS, help="at most this many boxes per image, best first (default %(default)s)")
    add_device_args(p)
    return p


def main(args):
    labels = parse_labels(args.labels, args.labels_file)
    return detect_dataset(args.dataset_path, args.output_file, args.model, labels, args.box_threshold,
                          args.text_threshold, args.nms_iou, args.max_objects, args.device, args.dtype)


if __name__ == "__main__":
    sys.exit(run_cli(main, build_parser()))
