"""Stage 1.3: layers and pairwise relations seen from the front, left, right and back of the scene.

Views orbit the scene about the vertical axis through the scene centre (the
median of all object points). Each view has x' right, y' down (up is -y),
z' forward, and right = forward x up:
  front: the original camera             x' =  x, z' =  z
  left:  viewer on the -x side, facing +x x' = -z, z' =  x
  right: viewer on the +x side, facing -x x' =  z, z' = -x
  back:  viewer behind, facing -z         x' = -x, z' = -z
(coordinates relative to the centre; y' = y). The virtual cameras stand as far
from the centre as the original one, so depths stay positive and comparable.
"""

import json
from pathlib import Path

import numpy as np

from batchkit.batch import Tally, map_records, report
from batchkit.errors import RecordError, Skipped, UserError
from batchkit.files import check_input_dir, check_output_file, inside, write_json
from batchkit.shards import in_shard, input_name, record_shard_settings, shard_path

from .annotations import ImagePaths, check_box, check_object, image_stem, load_annotations, load_object_mask, object_items
from .camera import DEFAULT_FOV_DEG, DatasetCameras, backproject
from .d2p import DEFAULT_MAX_DEPTH, DEFAULT_SCALE_FACTOR, check_settings
from .io import read_depth
from .layers import check_image_size, warn_unchecked
from .settings import GeometrySettings
from .spatial import DEFAULT_LAYER_GAP, DEFAULT_LAYER_GAP_REL, DEFAULT_MIN_SEPARATION, DEFAULT_OVERLAP_TOLERANCE, extents, group_layers, order

# view name -> rows of the rotation taking centred camera coordinates to (x', y', z')
VIEWS = {
    "front": np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float64),
    "left": np.array([[0, 0, -1], [0, 1, 0], [1, 0, 0]], dtype=np.float64),
    "right": np.array([[0, 0, 1], [0, 1, 0], [-1, 0, 0]], dtype=np.float64),
    "back": np.array([[-1, 0, 0], [0, 1, 0], [0, 0, -1]], dtype=np.float64),
}


def load_point_map(key, path):
    try:
        points = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise RecordError(f"{key}: point map {path} not found; run d2p.py on the dataset first") from None
    except (OSError, ValueError, EOFError) as e:
        raise RecordError(f"{key}: cannot read point map {path} ({e or 'empty or truncated file'}); "
                          "rerun d2p.py with --overwrite") from None
    if points.ndim != 3 or points.shape[2] != 3 or points.dtype.kind != "f":
        raise RecordError(f"{key}: point map {path} has shape {points.shape}, expected H x W x 3 (written by d2p.py)")
    return points


def view_relations(object_points, centre, layer_gap=DEFAULT_LAYER_GAP, layer_gap_rel=DEFAULT_LAYER_GAP_REL,
                   overlap_tolerance=DEFAULT_OVERLAP_TOLERANCE, min_separation=DEFAULT_MIN_SEPARATION):
    """{view: {"levels", "relations"}} for {id: N x 3 camera-frame points}."""
    distance = float(centre[2])
    views = {}
    for name, rotation in VIEWS.items():
        ext = {}
        for oid, pts in object_points.items():
            xyz = (pts - centre) @ rotation.T
            xyz[:, 2] += distance
            lo, med, hi = extents(xyz)
            ext[oid] = [(lo[i], med[i], hi[i]) for i in range(3)]
        levels = group_layers([(oid, e[2][0], e[2][2]) for oid, e in ext.items()], layer_gap, layer_gap_rel)
        relations = {f"{a}>{b}": [order(ext[a][i], ext[b][i], overlap_tolerance, min_separation) for i in range(3)]
                     for a in ext for b in ext if a != b}
        views[name] = {"levels": levels, "relations": relations}
    return views


class PointMaps:
    """Camera-frame point maps of the images: d2p's {stem}.npy files."""

    def __init__(self, folder):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise UserError(f"{folder}: point-cloud folder not found; run d2p.py, or pass --depth-dir instead")
        self.depth_source = depth_source(self.folder.parent / "depth_maps")

    def load(self, key, record):
        return load_point_map(key, self.folder / f"{image_stem(key)}.npy")


class DepthPoints:
    """The same point maps computed from the depth maps and the dataset's intrinsics, as d2p computes them."""

    def __init__(self, depth_dir, camera_dir=None, scale_factor=DEFAULT_SCALE_FACTOR, fov=DEFAULT_FOV_DEG,
                 max_depth=DEFAULT_MAX_DEPTH):
        self.depth_dir = Path(depth_dir)
        if not self.depth_dir.is_dir():
            raise UserError(f"{depth_dir}: depth folder not found")
        check_settings(scale_factor, fov, max_depth)
        self.cameras = DatasetCameras(camera_dir or self.depth_dir.parent, fov)
        self.scale_factor, self.max_depth = scale_factor, max_depth
        self.depth_source = depth_source(self.depth_dir)

    def load(self, key, record):
        stem = image_stem(key)
        try:
            depth = read_depth(inside(self.depth_dir, record.get("depth") or f"{stem}.png", "depth map"), self.scale_factor)
        except RecordError as e:
            raise RecordError(f"{key}: {e}") from None
        return backproject(depth, self.cameras.for_image(stem, depth.shape[1], depth.shape[0]), self.max_depth)


def multiview_record(key, record, points_source, mask_dir, settings, images, tally, after_stage12=False):
    """The record with "views" and "order_list" added; bad objects, and those stage 1.2 rejected, are left out.

    `after_stage12`: the file is stage 1.2's output, so a record without "levels" and an object without "depth"
    were rejected there and stay out of the views and relations.
    """
    if after_stage12 and not (isinstance(record, dict) and "levels" in record):
        raise Skipped(f"{key}: rejected by stage 1.2 (no \"levels\"); left out")
    items = object_items(key, record)
    points = points_source.load(key, record)
    shape = points.shape[:2]
    check_image_size(key, images.find(key), shape, tally)
    object_points = {}
    for oid, obj in items:
        if after_stage12 and not (isinstance(obj, dict) and isinstance(obj.get("depth"), dict)):
            report(f"skipped: {key}: object {oid}: rejected by stage 1.2 (no \"depth\"); left out of views and relations")
            tally.counts["left out"] += 1
            continue
        try:
            check_object(key, oid, obj)
            check_box(key, oid, obj["box"], shape[1], shape[0])
            mask = load_object_mask(key, oid, obj, mask_dir, shape, settings.mask_erode)
            pts = points[mask]
            pts = pts[~np.isnan(pts[:, 2])].astype(np.float64)
            if len(pts) == 0:
                raise RecordError(f"{key}: object {oid} ({obj.get('label')}): no valid point inside mask {obj['mask']}")
            object_points[oid] = pts
        except Exception as e:  # one bad object costs one object
            tally.fail_record(f"{key}: object {oid}", e)
    if not object_points:
        raise RecordError(f"{key}: no object with valid points")
    centre = np.median(np.concatenate(list(object_points.values())), axis=0)
    out = dict(record)
    out["objects"] = dict(record["objects"])
    for oid, pts in object_points.items():
        out["objects"][oid] = dict(out["objects"][oid], **metric_shape(pts))
    out["views"] = view_relations(object_points, centre, **settings.view_rules())
    out["order_list"] = out["views"]["front"]["relations"]
    out["depth_source"] = points_source.depth_source
    return out


def metric_shape(points):
    """{"centre": median [x, y, z], "extent": 5th-95th percentile [width, height, depth]}, camera frame, metres."""
    lo, med, hi = extents(points)
    return {"centre": [round(float(v), 4) for v in med], "extent": [round(float(v), 4) for v in hi - lo]}


def depth_source(depth_dir):
    """Where the depth's scale comes from: the depth model's name (depth_settings.json of estimate_depth.py), else
    "sensor" (depth maps that came with the dataset)."""
    settings = Path(depth_dir) / "depth_settings.json"
    try:
        return str(json.loads(settings.read_text(encoding="utf-8"))["model"])
    except (OSError, ValueError, KeyError, TypeError):
        return "sensor"


def multiview_layers(input_file, point_cloud_dir, mask_dir, output_file, settings=GeometrySettings(), images=None,
                     depth_dir=None, camera_dir=None, shard=None):
    """Run stage 1.3 over an annotation file, from point maps or (depth_dir) from depth maps; returns the exit code.

    `images` (ImagePaths) finds each record's image to check its size; by default relative keys are read inside
    the dataset folder that holds the point maps or depth maps.
    """
    if bool(point_cloud_dir) == bool(depth_dir):
        raise UserError("give the points to read: --point-cloud-dir (d2p's .npy point maps) or --depth-dir (depth maps "
                        "and the dataset's intrinsics), one of them")
    source = PointMaps(point_cloud_dir) if point_cloud_dir else DepthPoints(depth_dir, camera_dir, settings.scale_factor,
                                                                            settings.fov, settings.max_depth)
    images = images or ImagePaths(dataset=Path(point_cloud_dir or depth_dir).parent)
    check_output_file(output_file)
    check_input_dir(mask_dir, "--mask-dir")
    records = {k: r for k, r in load_annotations(input_file, allow_empty=shard is not None).items()
               if in_shard(k, shard)}
    output_file = shard_path(output_file, shard)
    record_shard_settings(output_file, shard, {
        "stage": "multiview_layers", "input": input_name(input_file), "points": "npy" if point_cloud_dir else "depth",
        **settings.record(), "dataset_base": images.dataset_base, "data_prefix": images.data_prefix})
    tally = Tally("multiview_layers")
    after_stage12 = any(isinstance(r, dict) and "levels" in r for r in records.values())
    out = map_records(records, lambda k, r: multiview_record(k, r, source, mask_dir, settings, images, tally, after_stage12),
                      tally, "multiview")
    write_json(output_file, out)
    warn_unchecked(tally)
    tally.summary(f"{tally.counts['left out']} objects left out as stage 1.2 rejected them, wrote {output_file}")
    return tally.exit_code
