"""Stage 1.2: per-object depth statistics inside the mask and depth layers near to far."""

from pathlib import Path

import numpy as np

from batchkit.batch import Tally, map_records, report
from batchkit.errors import RecordError
from batchkit.files import check_input_dir, check_output_file, inside, json_problem, write_json
from batchkit.shards import in_shard, input_name, record_shard_settings, shard_path

from .annotations import ImagePaths, check_box, check_object, image_stem, load_annotations, load_object_mask, object_items, unknown_relation_ids
from .io import image_header, read_depth, warn_photo
from .settings import GeometrySettings
from .spatial import extents, group_layers


def check_image_size(key, image_path, shape, tally=None):
    """If the image is found (a path, else None), its size must match the depth map (and what LLaVA's loader would
    get wrong about it is warned about); else it is counted as unchecked."""
    if image_path is None or not Path(image_path).is_file():
        if tally is not None:
            tally.counts["unchecked"] += 1
        return
    try:
        (width, height), problems = image_header(image_path)
    except RecordError as e:
        raise RecordError(f"{key}: {e}") from None
    if tally is not None:
        warn_photo(tally, image_path, problems)
    if (height, width) != shape:
        raise RecordError(f"{key}: image {image_path} is {width}x{height} but its depth map is {shape[1]}x{shape[0]}")


def warn_unchecked(tally):
    """One warning for all the images that were not found at their annotation paths."""
    if tally.counts["unchecked"]:
        report(f"warning: {tally.counts['unchecked']} images were not found at their annotation paths nor in the dataset's "
               "images/, so their sizes were not checked against the depth maps; pass --dataset-base OLD --data-prefix NEW "
               "to find them")


def depth_stats(depth, mask):
    """{"near", "median", "far", "pixels"} over the valid depth inside the mask, or None if there is none."""
    values = depth[mask]
    values = values[values > 0]
    if values.size == 0:
        return None
    near, median, far = extents(values)
    return {"near": round(float(near), 4), "median": round(float(median), 4), "far": round(float(far), 4),
            "pixels": int(values.size)}


def layer_record(key, record, depth_dir, mask_dir, settings, images, tally):
    """The record with "depth" stats on each good object and "levels"; bad objects are reported and left out."""
    items_in = object_items(key, record)
    depth_name = record.get("depth") or f"{image_stem(key)}.png"
    try:
        depth = read_depth(inside(depth_dir, depth_name, "depth map"), settings.scale_factor)
    except RecordError as e:
        raise RecordError(f"{key}: {e}") from None
    check_image_size(key, images.find(key), depth.shape, tally)
    height, width = depth.shape
    for problem in unknown_relation_ids(key, record):
        tally.fail(problem)
    objects, items = {}, []
    for oid, obj in items_in:
        try:
            check_object(key, oid, obj)
            obj = dict(obj)
            check_box(key, oid, obj["box"], width, height)
            mask = load_object_mask(key, oid, obj, mask_dir, depth.shape, settings.mask_erode)
            stats = depth_stats(depth, mask)
            if stats is None:
                raise RecordError(f"{key}: object {oid} ({obj.get('label')}): no valid depth inside mask {obj['mask']}; "
                                  "check that the mask matches the depth map")
            obj["depth"] = stats
            items.append((oid, stats["near"], stats["far"]))
        except Exception as e:  # one bad object costs one object
            tally.fail_record(f"{key}: object {oid}", e)
            if json_problem(obj) is not None:
                continue                         # NaN or invalid text cannot be copied into strict JSON
        objects[oid] = obj
    out = dict(record)
    out["objects"] = objects
    out["image_size"] = [width, height]
    out["levels"] = group_layers(items, **settings.layer_rules())
    return out


def aggregate_layers(input_file, depth_dir, mask_dir, output_file, settings=GeometrySettings(), images=None, shard=None):
    """Run stage 1.2 over an annotation file; returns the exit code.

    `images` (ImagePaths) finds each record's image to check its size; by default relative keys are read inside
    the dataset folder that holds `depth_dir`.
    """
    images = images or ImagePaths(dataset=Path(depth_dir).parent)
    check_output_file(output_file)
    check_input_dir(depth_dir, "--depth-dir")
    check_input_dir(mask_dir, "--mask-dir")
    records = {k: r for k, r in load_annotations(input_file, allow_empty=shard is not None).items()
               if in_shard(k, shard)}
    output_file = shard_path(output_file, shard)
    record_shard_settings(output_file, shard, {"stage": "layers_aggregation", "input": input_name(input_file),
                                               **settings.record(), "dataset_base": images.dataset_base,
                                               "data_prefix": images.data_prefix})
    tally = Tally("layers_aggregation")
    out = map_records(records, lambda k, r: layer_record(k, r, depth_dir, mask_dir, settings, images, tally),
                      tally, "layers")
    write_json(output_file, out)
    warn_unchecked(tally)
    layers = [len(r.get("levels", [])) for r in out.values() if isinstance(r, dict)]
    tally.summary(f"{np.mean(layers) if layers else 0:.1f} layers per image, wrote {output_file}")
    return tally.exit_code
