"""A COCO instances file into the dataset layout of stage 1: images linked, masks decoded, an annotation file.

Masks are decoded with pycocotools, the format's own decoder (polygons,
uncompressed and compressed RLE). Crowd annotations (iscrowd = 1) and those
below --min-area are skipped and counted. Images are symbolic links to the
originals, never copies.
"""

import os
from collections import Counter, defaultdict
from pathlib import Path, PurePath

import numpy as np
from tqdm import tqdm

from batchkit.batch import Tally
from batchkit.errors import RecordError, UserError
from batchkit.files import check_output_file, inside, read_json, write_json
from spacesgg.io import write_png


def _categories(instances, wanted):
    names = {c["id"]: c["name"] for c in instances.get("categories", []) if isinstance(c, dict)}
    if not wanted:
        return names
    unknown = sorted(set(wanted) - set(names.values()))
    if unknown:
        raise UserError(f"--categories: {', '.join(map(repr, unknown))} not in the instances file; it has "
                        f"{', '.join(sorted(set(names.values()))[:20])}{' ...' if len(names) > 20 else ''}")
    return {cid: name for cid, name in names.items() if name in set(wanted)}


def decode_mask(segmentation, height, width):
    """The boolean H x W mask of a COCO segmentation: polygons, uncompressed RLE or compressed RLE."""
    from pycocotools import mask as coco_mask
    if isinstance(segmentation, list):                                  # polygons [[x, y, ...], ...]
        polygons = [p for p in segmentation if isinstance(p, list) and len(p) >= 6]
        if not polygons:
            raise ValueError("no polygon with at least three points")
        rle = coco_mask.merge(coco_mask.frPyObjects(polygons, height, width))
    elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
        rle = coco_mask.frPyObjects(segmentation, height, width)       # uncompressed RLE
    elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), str):
        rle = dict(segmentation, counts=segmentation["counts"].encode("ascii"))
    else:
        raise ValueError(f"segmentation of type {type(segmentation).__name__} is neither polygons nor RLE")
    mask = coco_mask.decode(rle).astype(bool)
    if mask.shape != (height, width):
        raise ValueError(f"segmentation decodes to {mask.shape[1]}x{mask.shape[0]}, the image is {width}x{height}")
    return mask


def _link(source, target):
    """A symbolic link `target` -> `source` (absolute), replaced if it points elsewhere."""
    source = source.resolve()
    if target.is_symlink() and Path(os.readlink(target)) == source:
        return
    if target.is_symlink() or target.exists():
        target.unlink()
    target.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(source, target)


def import_coco(instances_file, image_dir, output_dir, captions_file=None, min_area=0.0, categories=None, limit=None):
    """Write DATASET/images/ (links), DATASET/masks/ and DATASET/annotations.json; returns the exit code."""
    instances = read_json(instances_file, "COCO instances file")
    if not isinstance(instances, dict) or not isinstance(instances.get("images"), list) \
            or not isinstance(instances.get("annotations"), list):
        raise UserError(f"{instances_file}: not a COCO instances file (needs \"images\", \"annotations\", \"categories\")")
    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise UserError(f"{image_dir}: image folder not found")
    out = Path(output_dir)
    annotations_file = check_output_file(out / "annotations.json")
    names = _categories(instances, categories)
    captions = {}
    if captions_file:
        data = read_json(captions_file, "COCO captions file")
        for c in data.get("annotations", []) if isinstance(data, dict) else []:
            if isinstance(c, dict) and isinstance(c.get("caption"), str):
                captions.setdefault(c.get("image_id"), c["caption"].strip())
    by_image, skipped = defaultdict(list), Counter()
    for ann in instances["annotations"]:
        if not isinstance(ann, dict) or ann.get("category_id") not in names:
            skipped["other category" if isinstance(ann, dict) else "malformed"] += 1
        elif ann.get("iscrowd"):
            skipped["crowd"] += 1
        elif float(ann.get("area") or 0) < min_area:
            skipped["below --min-area"] += 1
        else:
            by_image[ann.get("image_id")].append(ann)
    images = [im for im in instances["images"] if isinstance(im, dict) and by_image.get(im.get("id"))]
    images.sort(key=lambda im: im["id"])
    if limit is not None:
        images = images[:limit]
    tally = Tally("import_coco")
    records = {}
    for im in tqdm(images, desc="coco images", unit="img"):
        name = str(im.get("file_name"))
        try:
            source = inside(image_dir, name, "file_name")
            if not source.is_file():
                raise RecordError(f"{name}: image not found in {image_dir}")
            width, height = int(im["width"]), int(im["height"])
            if width <= 0 or height <= 0:
                raise RecordError(f"{name}: width and height must be positive, got {width}x{height}")
            stem = PurePath(name).stem
            link = out / "images" / PurePath(name).name
            objects = {}
            for k, ann in enumerate(sorted(by_image[im["id"]], key=lambda a: a.get("id", 0))):
                oid = f"o{k}"
                mask = decode_mask(ann.get("segmentation"), height, width)
                if not mask.any():
                    skipped["empty mask"] += 1
                    continue
                x, y, w, h = (float(v) for v in ann["bbox"])
                mask_name = f"{stem}_{oid}.png"
                write_png(out / "masks" / mask_name, mask.astype(np.uint8) * 255)
                objects[oid] = {"label": names[ann["category_id"]], "box": [x, y, x + w, y + h], "mask": mask_name,
                                "coco_id": ann.get("id")}
            if not objects:
                raise RecordError(f"{name}: no object left to import")
            _link(source, link)
            records[str(link.parent.resolve() / link.name)] = {
                "depth": f"{stem}.png", "caption": captions.get(im["id"], ""), "objects": objects, "relations": []}
            tally.done += 1
        except Exception as e:  # one bad image costs one image
            tally.fail_record(name, e)
    write_json(annotations_file, records)
    tally.summary(", ".join(f"{n} {why} skipped" for why, n in sorted(skipped.items()))
                  + (", " if skipped else "") + f"wrote {annotations_file}")
    return tally.exit_code
