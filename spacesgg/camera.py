"""Pinhole intrinsics, camera poses and back-projection.

Camera frame: OpenCV, x right, y down, z forward, metres. Pixel (u, v) is the
column/row index with no half-pixel offset (as open3d and OpenCV use it), so
the ray of pixel (u, v) is ((u - cx) / fx, (v - cy) / fy, 1).

Where an image's intrinsics come from, first choice first:
DATASET/intrinsics.json {stem: [fx, fy, cx, cy]} (written by a depth model
that estimates its focal length), DATASET/K.txt (one matrix for all), and
--fov (horizontal, from the image's own width, principal point at its centre).
"""

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from batchkit.errors import RecordError, UserError
from batchkit.files import read_json

DEFAULT_FOV_DEG = 60.0
POSE_TOLERANCE = 1e-3      # |R R^T - I| and |det R - 1| of a rigid pose


@dataclass(frozen=True)
class Intrinsics:
    fx: float
    fy: float
    cx: float
    cy: float

    @classmethod
    def from_matrix(cls, K):
        K = np.asarray(K, dtype=np.float64).reshape(3, 3)
        return cls(fx=K[0, 0], fy=K[1, 1], cx=K[0, 2], cy=K[1, 2])

    @classmethod
    def from_fov(cls, width, height, fov_deg=DEFAULT_FOV_DEG):
        """Square pixels, horizontal field of view `fov_deg`, principal point at the image centre."""
        if not 0 < fov_deg < 180:
            raise UserError(f"--fov must lie strictly between 0 and 180 degrees, got {fov_deg}")
        fx = (width / 2.0) / math.tan(math.radians(fov_deg) / 2.0)
        return cls(fx=fx, fy=fx, cx=(width - 1) / 2.0, cy=(height - 1) / 2.0)

    def matrix(self):
        return np.array([[self.fx, 0, self.cx], [0, self.fy, self.cy], [0, 0, 1]], dtype=np.float64)


def _read_numbers(path, what):
    try:
        return np.array(Path(path).read_text().split(), dtype=np.float64)
    except ValueError:
        raise UserError(f"{path}: {what} holds something that is not a number; write plain whitespace-separated numbers") from None


def load_intrinsics(path):
    """K.txt: the 3x3 matrix as 9 whitespace-separated numbers."""
    values = _read_numbers(path, "K.txt")
    if values.size != 9:
        raise UserError(f"{path}: expected 9 numbers (a 3x3 intrinsics matrix), found {values.size}; fix the file or delete it and pass --fov")
    K = values.reshape(3, 3)
    if not np.isfinite(K).all():
        raise UserError(f"{path}: holds NaN or infinity; every number of K must be finite")
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise UserError(f"{path}: fx and fy (K[0,0], K[1,1]) must be positive, got {K[0, 0]} and {K[1, 1]}")
    return Intrinsics.from_matrix(K)


INTRINSICS_SOURCES = ("intrinsics.json", "K.txt", "--fov")


class DatasetCameras:
    """The intrinsics of every image of a dataset: intrinsics.json per image, else K.txt, else --fov per image."""

    def __init__(self, dataset, fov=DEFAULT_FOV_DEG):
        dataset = Path(dataset)
        self.fov = fov
        self.per_image_path = dataset / "intrinsics.json"
        self.per_image = {}
        for path in [self.per_image_path, *sorted(dataset.glob("intrinsics.shard-*-of-*.json"))]:   # sharded runs
            if path.is_file():
                entries = read_json(path, "intrinsics file")
                if not isinstance(entries, dict):
                    raise UserError(f"{path}: expected {{stem: [fx, fy, cx, cy]}}, found a {type(entries).__name__}")
                self.per_image.update(entries)
        k_path = dataset / "K.txt"
        self.shared = load_intrinsics(k_path) if k_path.is_file() else None

    def source(self, stem):
        return "intrinsics.json" if stem in self.per_image else "K.txt" if self.shared else "--fov"

    def for_image(self, stem, width, height):
        """The Intrinsics of one image of `width` x `height` pixels."""
        return self.fixed(stem) or Intrinsics.from_fov(width, height, self.fov)

    def fixed(self, stem):
        """The image's Intrinsics from intrinsics.json or K.txt, or None when they follow from --fov and its size.

        An intrinsics.json entry must be a list of 4 finite numbers (not strings or booleans) with fx, fy > 0; a bad
        one costs its image (a RecordError), never the run.
        """
        if stem in self.per_image:
            values = self.per_image[stem]
            numbers = isinstance(values, list) and len(values) == 4 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
            if not numbers:
                raise RecordError(f"{stem}: {self.per_image_path} entry {values!r} is not a list of 4 numbers "
                                  "[fx, fy, cx, cy]; fix it or delete the entry (then K.txt or --fov apply)")
            fx, fy, cx, cy = (float(v) for v in values)
            if not (np.isfinite([fx, fy, cx, cy]).all() and fx > 0 and fy > 0):
                raise RecordError(f"{stem}: {self.per_image_path} entry {values!r} needs finite numbers and fx, fy > 0; "
                                  "fix it or delete the entry (then K.txt or --fov apply)")
            return Intrinsics(fx, fy, cx, cy)
        return self.shared

    def settings(self):
        """What the intrinsics depend on, for a stage's recorded settings (a digest of the per-image entries)."""
        per_image = None
        if self.per_image:
            text = json.dumps(self.per_image, sort_keys=True, ensure_ascii=True, default=str)    # NaN stays text here
            per_image = hashlib.sha1(text.encode("ascii")).hexdigest()
        return {"intrinsics.json": per_image,
                "K": None if self.shared is None else list(self.shared.matrix().ravel()),
                "fov": self.fov}


def load_poses(path, count):
    """poses.txt: `count` 4x4 camera-to-world matrices, 16 numbers each, in sorted-stem order."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: not found; --world-coordinates needs one 4x4 camera-to-world pose per image")
    values = _read_numbers(path, "poses.txt")
    if values.size % 16:
        raise UserError(f"{path}: {values.size} numbers is not a whole number of 4x4 poses (16 numbers each)")
    n = values.size // 16
    if n < count:
        raise UserError(f"{path}: {n} poses for {count} images; give one pose per image in sorted-stem order")
    poses = values.reshape(n, 4, 4)[:count]
    for k, pose in enumerate(poses):
        where = f"{path}: pose {k + 1} (numbers {16 * k + 1}-{16 * k + 16})"
        if not np.isfinite(pose).all():
            raise UserError(f"{where} holds NaN or infinity")
        R = pose[:3, :3]
        if np.abs(R @ R.T - np.eye(3)).max() > POSE_TOLERANCE or abs(np.linalg.det(R) - 1) > POSE_TOLERANCE:
            raise UserError(f"{where}: the rotation part is not orthonormal with determinant 1 (within {POSE_TOLERANCE:g}); "
                            "give rigid camera-to-world transforms")
        if not np.allclose(pose[3], [0, 0, 0, 1], atol=POSE_TOLERANCE):
            raise UserError(f"{where}: the last row must be 0 0 0 1, got {' '.join(f'{v:g}' for v in pose[3])}")
    return poses


def pixel_rays(width, height, intr):
    """Per-pixel ray directions at unit depth: (x/z, y/z) grids, float32."""
    u = np.arange(width, dtype=np.float64)
    v = np.arange(height, dtype=np.float64)
    xr = ((u - intr.cx) / intr.fx).astype(np.float32)
    yr = ((v - intr.cy) / intr.fy).astype(np.float32)
    return xr[None, :], yr[:, None]


def backproject(depth, intr, max_depth=None):
    """H x W x 3 float32 point map in the camera frame; NaN where depth is 0, non-finite or beyond max_depth."""
    h, w = depth.shape
    xr, yr = pixel_rays(w, h, intr)
    z = depth.astype(np.float32, copy=True)
    invalid = ~(z > 0) | ~np.isfinite(z)
    if max_depth is not None:
        invalid |= z > max_depth
    z[invalid] = np.nan
    points = np.empty((h, w, 3), dtype=np.float32)
    np.multiply(xr, z, out=points[..., 0])
    np.multiply(yr, z, out=points[..., 1])
    points[..., 2] = z
    return points


def transform_points(points, pose):
    """Apply a 4x4 rigid transform to N x 3 points."""
    pose = np.asarray(pose, dtype=np.float64)
    R = pose[:3, :3].astype(np.float32)
    t = pose[:3, 3].astype(np.float32)
    return points @ R.T + t
