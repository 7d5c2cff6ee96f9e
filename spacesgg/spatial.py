"""The two rules that turn object extents into layers and pairwise orders.

An object's extent along an axis is the 5th..95th percentile of its points
(robust to mask edges that catch the background), with the median as its centre.

Layers (near to far): objects sorted by their near extent join the current
layer while their near extent lies within `gap` of the layer's far extent,
gap = max(layer_gap metres, layer_gap_rel x the layer's far depth); an object
beyond that starts a new layer. So objects whose depth ranges overlap (or
nearly touch) share a layer and a clearly farther object starts a new one.

Order along an axis (relations): a before b (-1) or after b (+1) by their
medians, but only when the extents overlap by less than `overlap_tolerance` x
the shorter extent and the medians are at least `min_separation` metres apart;
otherwise the order is ambiguous (0).
"""

import numpy as np

PERCENTILES = (5.0, 50.0, 95.0)
DEFAULT_LAYER_GAP = 0.25            # metres
DEFAULT_LAYER_GAP_REL = 0.05        # fraction of the layer's far depth
DEFAULT_OVERLAP_TOLERANCE = 0.25    # fraction of the shorter extent
DEFAULT_MIN_SEPARATION = 0.1        # metres between medians


def extents(values):
    """(lo, median, hi) per column of an N x K array (or a 1-D array) as float64 arrays."""
    lo, med, hi = np.percentile(np.asarray(values, dtype=np.float64), PERCENTILES, axis=0)
    return lo, med, hi


def group_layers(items, layer_gap=DEFAULT_LAYER_GAP, layer_gap_rel=DEFAULT_LAYER_GAP_REL):
    """Layers near to far from [(id, near, far), ...]; ids within a layer in near-to-far order."""
    levels, layer_far = [], None
    for oid, near, far in sorted(items, key=lambda it: (it[1], it[2])):
        if layer_far is not None and near <= layer_far + max(layer_gap, layer_gap_rel * layer_far):
            levels[-1].append(oid)
            layer_far = max(layer_far, far)
        else:
            levels.append([oid])
            layer_far = far
    return levels


def order(a, b, overlap_tolerance=DEFAULT_OVERLAP_TOLERANCE, min_separation=DEFAULT_MIN_SEPARATION):
    """-1 if extent a = (lo, med, hi) comes before b along the axis, +1 if after, 0 if ambiguous."""
    a_lo, a_med, a_hi = a
    b_lo, b_med, b_hi = b
    overlap = min(a_hi, b_hi) - max(a_lo, b_lo)
    shorter = min(a_hi - a_lo, b_hi - b_lo)
    if overlap < overlap_tolerance * shorter and abs(a_med - b_med) >= min_separation:
        return -1 if a_med < b_med else 1
    return 0
