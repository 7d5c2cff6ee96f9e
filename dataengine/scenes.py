"""Synthetic RGB-D scenes with exactly known geometry: the demo input and the test fixture.

Boxes (axis-aligned in the camera frame) stand on a 3 x 3 grid of slots in front
of a back wall above a floor. Camera frame: OpenCV (x right, y down, z forward),
metres; the camera sits at the origin. Columns are 1 m apart in x, rows 1.5 m
apart in z, and each row sits at its own height, so objects in different slots
are clearly separated along x (columns), z (rows) and y (rows), and objects of
the same column or row clearly overlap along that axis. The expected layers and
relations follow from that construction.
"""

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from batchkit.files import write_bytes, write_json
from spacesgg.camera import Intrinsics
from spacesgg.io import write_png

WIDTH, HEIGHT = 640, 480
FX = FY = 525.0
CX, CY = 319.5, 239.5
SCALE_FACTOR = 5000.0            # depth PNG value per metre
COLUMNS_X = (-1.0, 0.0, 1.0)     # slot centres along x (metres)
ROWS_Z = (2.5, 4.0, 5.5)         # slot centres along z, near to far
ROWS_Y = (0.55, 0.0, -0.55)      # slot centre heights (y down: the near row is lowest)
WALL_Z, WALL_HALF_X, WALL_TOP_Y = 7.0, 3.6, -2.2   # finite wall: the image corners see nothing (depth 0)
FLOOR_Y = 1.2
JITTER = 0.05
PALETTE = {
    "chair": (190, 60, 50), "table": (150, 100, 60), "lamp": (235, 205, 70), "sofa": (60, 90, 180),
    "plant": (50, 150, 70), "tv": (45, 45, 55), "box": (205, 150, 90), "cabinet": (125, 80, 145),
    "vase": (70, 180, 190), "bin": (150, 150, 150)}
VIEW_NAMES = ("front", "left", "right", "back")


@dataclass
class Box:
    oid: str
    label: str
    slot: tuple        # (column, row)
    center: tuple      # (x, y, z) metres, camera frame
    size: tuple        # (width x, height y, depth z) metres

    @property
    def lo(self):
        return np.array(self.center) - np.array(self.size) / 2

    @property
    def hi(self):
        return np.array(self.center) + np.array(self.size) / 2


def make_scene(rng, n_objects):
    """`n_objects` boxes in distinct random slots, with random labels, sizes and small jitter."""
    slots = rng.choice(9, size=n_objects, replace=False)
    labels = rng.choice(list(PALETTE), size=n_objects, replace=False)
    boxes = []
    for k, (slot, label) in enumerate(zip(slots, labels)):
        col, row = int(slot % 3), int(slot // 3)
        jitter = rng.uniform(-JITTER, JITTER, size=3)
        center = (COLUMNS_X[col] + jitter[0], ROWS_Y[row] + jitter[1], ROWS_Z[row] + jitter[2])
        size = tuple(float(s) for s in rng.uniform(0.3, 0.4, size=3))
        boxes.append(Box(f"o{k}", str(label), (col, row), tuple(float(c) for c in center), size))
    return boxes


def intrinsics():
    return Intrinsics(FX, FY, CX, CY)


def render(boxes, intr=None, width=WIDTH, height=HEIGHT):
    """Ray-cast the scene: exact depth z (float64, 0 = no hit), hit index (-1 none, -2 wall, -3 floor, k = box k), RGB."""
    intr = intr or intrinsics()
    xr = ((np.arange(width) - intr.cx) / intr.fx)[None, :].repeat(height, 0)
    yr = ((np.arange(height) - intr.cy) / intr.fy)[:, None].repeat(width, 1)
    depth = np.full((height, width), np.inf)
    index = np.full((height, width), -1, dtype=np.int32)
    shade = np.ones((height, width))
    # back wall: plane z = WALL_Z, finite in x and y
    x, y = xr * WALL_Z, yr * WALL_Z
    hit = (np.abs(x) <= WALL_HALF_X) & (y >= WALL_TOP_Y) & (y <= FLOOR_Y)
    depth[hit], index[hit] = WALL_Z, -2
    # floor: plane y = FLOOR_Y (below the camera, y down), as far as the wall
    with np.errstate(divide="ignore"):
        z = np.where(yr > 0, FLOOR_Y / yr, np.inf)
    hit = (z < depth) & (z <= WALL_Z) & (np.abs(xr * z) <= WALL_HALF_X)
    depth[hit], index[hit], shade[hit] = z[hit], -3, 0.8
    # boxes: slab test along the ray (xr, yr, 1); the ray parameter t is the depth z
    rays = np.stack([xr, yr, np.ones_like(xr)], axis=-1)
    light = np.array([-0.3, -0.8, -0.5]) / np.linalg.norm([-0.3, -0.8, -0.5])
    for k, box in enumerate(boxes):
        with np.errstate(divide="ignore", invalid="ignore"):
            t1, t2 = box.lo / rays, box.hi / rays
        tmin, tmax = np.minimum(t1, t2), np.maximum(t1, t2)
        t_near, face = tmin.max(axis=-1), tmin.argmax(axis=-1)
        hit = (t_near <= tmax.min(axis=-1)) & (t_near > 0) & (t_near < depth)
        depth[hit], index[hit] = t_near[hit], k
        normal_sign = -np.sign(rays[hit, face[hit]])          # the entered face faces the camera
        shade[hit] = 0.45 + 0.55 * np.clip(normal_sign * light[face[hit]], 0, 1)
    depth[~np.isfinite(depth)] = 0
    colors = np.zeros((len(boxes) + 3, 3))
    colors[: len(boxes)] = [PALETTE[b.label] for b in boxes]
    colors[-2], colors[-3] = (205, 200, 190), (160, 130, 100)   # wall (index -2), floor (index -3)
    rgb = colors[index] * shade[..., None]
    rgb[index == -1] = 0
    return depth, index, np.clip(rgb, 0, 255).astype(np.uint8)


def to_view(points, view):
    """Rotate points (relative to the scene centre) into a view: x' right, y' down, z' forward.

    Written from docs/formats.md apart from spacesgg.multiview on purpose: it is the tests' independent oracle.
    """
    x, y, z = points[..., 0], points[..., 1], points[..., 2]
    return {"front": (x, y, z), "left": (-z, y, x), "right": (z, y, -x), "back": (-x, y, -z)}[view]


def expected_levels(boxes, view):
    """Layers near to far by construction: rows (front/back) or columns (left/right) of the slot grid."""
    key = {"front": lambda b: b.slot[1], "back": lambda b: -b.slot[1],
           "left": lambda b: b.slot[0], "right": lambda b: -b.slot[0]}[view]
    groups = {}
    for b in boxes:
        groups.setdefault(key(b), []).append(b.oid)
    return [sorted(groups[k], key=lambda o: int(o[1:])) for k in sorted(groups)]


def expected_relations(boxes, view):
    """{"a>b": [lr, ud, fb]} from the true 3D extents: +-1 where the extents are disjoint, 0 where they overlap."""
    extents = {}
    for b in boxes:
        corners = np.array([[x, y, z] for x in (b.lo[0], b.hi[0]) for y in (b.lo[1], b.hi[1]) for z in (b.lo[2], b.hi[2])])
        xyz = np.stack(to_view(corners, view), axis=-1)
        extents[b.oid] = (xyz.min(0), xyz.max(0))
    relations = {}
    for a in boxes:
        for b in boxes:
            if a.oid == b.oid:
                continue
            (alo, ahi), (blo, bhi) = extents[a.oid], extents[b.oid]
            rel = [(-1 if ahi[i] < blo[i] else 1 if alo[i] > bhi[i] else 0) for i in range(3)]
            relations[f"{a.oid}>{b.oid}"] = rel
    return relations


def _settings(n_scenes, seed, min_objects, max_objects):
    return {"scenes": n_scenes, "seed": seed, "min_objects": min_objects, "max_objects": max_objects}


def dataset_is_current(out_dir, n_scenes, seed, min_objects, max_objects):
    """Whether `out_dir` holds a complete dataset written with these settings (expected.json is written last)."""
    out = Path(out_dir)
    try:
        expected = json.loads((out / "expected.json").read_text())
    except (OSError, ValueError):
        return False
    if expected.get("settings") != _settings(n_scenes, seed, min_objects, max_objects):
        return False
    files = [out / "K.txt", out / "poses.txt", out / "annotations.json"]
    files += [out / sub / f"{stem}.png" for stem in expected["scenes"] for sub in ("images", "depth_maps")]
    return all(f.is_file() for f in files)


def write_dataset(out_dir, n_scenes=6, seed=0, min_objects=3, max_objects=6):
    """Write the dataset layout (docs/formats.md), masks, annotations.json and expected.json; returns the paths."""
    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    for sub in ("images", "depth_maps", "masks"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    intr = intrinsics()
    write_bytes(out / "K.txt", ("\n".join(" ".join(f"{v:g}" for v in row) for row in intr.matrix()) + "\n").encode())
    annotations, expected, poses = {}, {}, []
    for s in tqdm(range(n_scenes), desc="synthetic scenes", unit="scene"):
        stem = f"scene_{s:03d}"
        boxes = make_scene(rng, int(rng.integers(min_objects, max_objects + 1)))
        depth, index, rgb = render(boxes, intr)
        depth16 = np.round(depth * SCALE_FACTOR).astype(np.uint16)
        write_png(out / "images" / f"{stem}.png", rgb)
        write_png(out / "depth_maps" / f"{stem}.png", depth16)
        objects = {}
        for k, b in enumerate(boxes):
            mask = index == k
            ys, xs = np.nonzero(mask)
            write_png(out / "masks" / f"{stem}_{b.oid}.png", mask.astype(np.uint8) * 255)
            objects[b.oid] = {"label": b.label, "box": [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1],
                              "mask": f"{stem}_{b.oid}.png"}
        names = ", ".join(f"a {b.label}" for b in boxes)
        annotations[f"images/{stem}.png"] = {                   # native form: the image path relative to the dataset
            "depth": f"{stem}.png", "caption": f"A synthetic room with {names}.", "objects": objects, "relations": []}
        expected[stem] = {
            "boxes": [asdict(b) for b in boxes],
            "views": {v: {"levels": expected_levels(boxes, v), "relations": expected_relations(boxes, v)} for v in VIEW_NAMES}}
        angle = rng.uniform(-np.pi, np.pi)
        pose = np.eye(4)
        pose[:3, :3] = [[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]]
        pose[:3, 3] = rng.uniform(-2, 2, size=3)
        poses.append(pose)
    write_bytes(out / "poses.txt", "".join(" ".join(f"{v:.9g}" for v in p.ravel()) + "\n" for p in poses).encode())
    write_json(out / "annotations.json", annotations)
    write_json(out / "expected.json", {
        "note": "levels by construction; relations +-1 where true 3D extents are disjoint along the view axis, 0 where they overlap",
        "scale_factor": SCALE_FACTOR, "settings": _settings(n_scenes, seed, min_objects, max_objects), "scenes": expected})
    return out

