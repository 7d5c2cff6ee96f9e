"""The numbers stages 1.2 and 1.3 are run with, as one settings object (defaults defined where each rule lives)."""

from dataclasses import asdict, dataclass, fields

from .camera import DEFAULT_FOV_DEG
from .d2p import DEFAULT_MAX_DEPTH, DEFAULT_SCALE_FACTOR
from .spatial import DEFAULT_LAYER_GAP, DEFAULT_LAYER_GAP_REL, DEFAULT_MIN_SEPARATION, DEFAULT_OVERLAP_TOLERANCE


@dataclass(frozen=True)
class GeometrySettings:
    scale_factor: float = DEFAULT_SCALE_FACTOR            # depth PNG value per metre
    max_depth: float = DEFAULT_MAX_DEPTH                  # metres; farther depth is invalid (stage 1.3 with depth maps)
    fov: float = DEFAULT_FOV_DEG                          # horizontal degrees, where no intrinsics are given
    mask_erode: int = 0                                   # pixels off every mask before depth is read
    layer_gap: float = DEFAULT_LAYER_GAP                  # metres (spatial.group_layers)
    layer_gap_rel: float = DEFAULT_LAYER_GAP_REL          # fraction of the layer's far depth
    overlap_tolerance: float = DEFAULT_OVERLAP_TOLERANCE  # fraction of the shorter extent (spatial.order)
    min_separation: float = DEFAULT_MIN_SEPARATION        # metres between medians

    @classmethod
    def from_args(cls, args):
        """The settings of a parsed command line (flags a stage does not have keep their defaults)."""
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)})

    def layer_rules(self):
        return {"layer_gap": self.layer_gap, "layer_gap_rel": self.layer_gap_rel}

    def view_rules(self):
        return {**self.layer_rules(), "overlap_tolerance": self.overlap_tolerance, "min_separation": self.min_separation}

    def record(self):
        return asdict(self)
