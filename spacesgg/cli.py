"""Flags that several SpaceSGG stages share (the runner and parser live in batchkit.cli)."""

from batchkit.cli import nonnegative_float, nonnegative_int

from .spatial import DEFAULT_LAYER_GAP, DEFAULT_LAYER_GAP_REL, DEFAULT_MIN_SEPARATION, DEFAULT_OVERLAP_TOLERANCE


def add_path_rewrite_args(p):
    p.add_argument("--dataset-base", default=None, help="path prefix of the annotation keys to replace (with --data-prefix)")
    p.add_argument("--data-prefix", default=None, help="local folder that replaces --dataset-base to find the images")


def add_layer_args(p):
    p.add_argument("--layer-gap", type=nonnegative_float, default=DEFAULT_LAYER_GAP,
                   help="an object starts a new layer when its near depth lies more than max(layer-gap, "
                        "layer-gap-rel x layer far depth) beyond the current layer's far depth; metres (default %(default)g)")
    p.add_argument("--layer-gap-rel", type=nonnegative_float, default=DEFAULT_LAYER_GAP_REL,
                   help="relative part of that gap, a fraction of the layer's far depth (default %(default)g)")


def add_order_args(p):
    p.add_argument("--overlap-tolerance", type=nonnegative_float, default=DEFAULT_OVERLAP_TOLERANCE,
                   help="an order along an axis is stated only if the two 5..95th-percentile extents overlap by less "
                        "than this fraction of the shorter one (default %(default)g); else 0 (ambiguous)")
    p.add_argument("--min-separation", type=nonnegative_float, default=DEFAULT_MIN_SEPARATION,
                   help="and only if the medians are at least this many metres apart (default %(default)g)")


def add_mask_args(p):
    p.add_argument("--mask-erode", type=nonnegative_int, default=0,
                   help="shrink every mask by this many pixels (OpenCV erosion) before depth is read, against the "
                        "flying pixels that estimated depth smears over object borders (default %(default)s)")
