"""A COCO instances file into the dataset layout of stage 1: images linked, masks decoded, an annotation file.

Masks are decoded with pycocotools, the format's own decoder (polygons,
uncompressed and compressed RLE). Crowd annotations (iscrowd = 1), those below
--min-area and those of categories not asked for are skipped and counted.
Images are symbolic links to the originals, never copies.

One annotation, one error: an annotation that cannot be used (no valid bbox, a
polygon with fewer than 3 points or an odd number of coordinates, an RLE of
another size than its image, an unknown category, an image id that no image
has) is reported on one line and counted by cause; the other annotations of
its image are imported. One image, one error: a file that is missing or
unreadable, an id given twice, a stored size that differs from the JSON's (an
EXIF-rotated photo recorded at its displayed size is named as such), or a file
name that another image already uses costs that image.
"""

import math
import os
from collections import Counter, defaultdict
from pathlib import Path, PurePath

import numpy as np
from tqdm import tqdm

from batchkit.batch import Tally, printable
from batchkit.errors import RecordError, UserError
from batchkit.files import check_output_file, inside, read_json, write_json
from spacesgg.io import EXIF_ORIENTATION, write_png

TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)      # EXIF orientations that swap width and height on display


class AnnotationError(Exception):
    """One annotation that cannot be imported; `cause` is what the summary counts it under."""

    def __init__(self, cause, detail):
        super().__init__(detail)
        self.cause = cause


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _order(value):
    """A sort key for COCO ids: numbers in numeric order, then anything else as text."""
    return (0, value, "") if _number(value) else (1, 0, str(value))


def _categories(instances, wanted):
    """({id: name} of every category, the ids asked for)."""
    names = {c["id"]: str(c["name"]) for c in instances.get("categories", []) if isinstance(c, dict)
             and "id" in c and "name" in c}
    if not wanted:
        return names, set(names)
    unknown = sorted(set(wanted) - set(names.values()))
    if unknown:
        raise UserError(f"--categories: {', '.join(map(repr, unknown))} not in the instances file; it has "
                        f"{', '.join(sorted(set(names.values()))[:20])}{' ...' if len(names) > 20 else ''}")
    return names, {cid for cid, name in names.items() if name in set(wanted)}


def decode_mask(segmentation, height, width):
    """The boolean H x W mask of a COCO segmentation: polygons, uncompressed RLE or compressed RLE."""
    from pycocotools import mask as coco_mask
    if isinstance(segmentation, list):                                  # polygons [[x, y, ...], ...]
        if not segmentation:
            raise AnnotationError("bad polygon", "segmentation is an empty list of polygons")
        for polygon in segmentation:
            if not isinstance(polygon, list) or not all(_number(v) for v in polygon):
                raise AnnotationError("bad polygon", "a polygon is not a list of finite numbers")
            if len(polygon) % 2:
                raise AnnotationError("bad polygon", f"a polygon has an odd number of coordinates ({len(polygon)})")
            if len(polygon) < 6:
                raise AnnotationError("bad polygon", f"a polygon has {len(polygon) // 2} points; it needs at least 3")
        rle = coco_mask.merge(coco_mask.frPyObjects([[float(v) for v in p] for p in segmentation], height, width))
    elif isinstance(segmentation, dict) and "counts" in segmentation:
        size = segmentation.get("size")
        if list(size or []) != [height, width]:
            raise AnnotationError("RLE of another size", f"RLE size {size!r} is not the image's [height, width] "
                                                         f"[{height}, {width}]")
        counts = segmentation["counts"]
        if isinstance(counts, list):
            if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in counts) or sum(counts) != height * width:
                raise AnnotationError("RLE of another size", f"uncompressed RLE counts sum to "
                                      f"{sum(v for v in counts if _number(v))}, not {height} x {width} pixels")
            rle = coco_mask.frPyObjects(segmentation, height, width)
        elif isinstance(counts, str):
            rle = dict(segmentation, counts=counts.encode("ascii", "replace"))
        else:
            raise AnnotationError("bad RLE", f"RLE counts of type {type(counts).__name__}")
    else:
        raise AnnotationError("no segmentation", f"segmentation of type {type(segmentation).__name__} is neither "
                                                 "polygons nor RLE")
    try:
        mask = coco_mask.decode(rle).astype(bool)
    except Exception as e:  # pycocotools' own refusal of a corrupt string
        raise AnnotationError("bad RLE", f"RLE does not decode ({e})") from None
    if mask.ndim == 3:
        mask = mask.any(axis=2)
    if mask.shape != (height, width):
        raise AnnotationError("RLE of another size", f"segmentation decodes to {mask.shape[1]}x{mask.shape[0]}, the "
                                                     f"image is {width}x{height}")
    return mask


def _box(ann, width, height):
    """[x0, y0, x1, y1] of a COCO bbox [x, y, w, h], clipped to the image; a missing, negative or empty one is refused."""
    bbox = ann.get("bbox")
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(_number(v) for v in bbox)):
        raise AnnotationError("bad bbox", f"bbox {bbox!r} is not 4 finite numbers [x, y, w, h]")
    x, y, w, h = (float(v) for v in bbox)
    if x < 0 or y < 0 or w <= 0 or h <= 0:
        raise AnnotationError("bad bbox", f"bbox {bbox} is negative or empty")
    x1, y1 = min(x + w, width), min(y + h, height)
    if x >= x1 or y >= y1:
        raise AnnotationError("bad bbox", f"bbox {bbox} lies outside the {width}x{height} image")
    return [x, y, x1, y1]


def _stored_size(path, width, height):
    """Check the image file's stored size against the JSON's; the EXIF orientation explains a transposed one."""
    from PIL import Image
    try:
        with Image.open(path) as im:
            stored, orientation = im.size, im.getexif().get(EXIF_ORIENTATION)
    except Exception as e:  # 0 bytes, truncated, not an image
        raise RecordError(f"{path}: cannot read image ({e})") from None
    if stored == (width, height):
        return
    why = ""
    if stored == (height, width) and orientation in TRANSPOSING_ORIENTATIONS:
        why = (f": an EXIF-rotated photo (orientation {orientation}) whose annotation was made at its displayed size; "
               "its masks would not lie on the stored pixels that LLaVA's loader reads")
    raise RecordError(f"{path}: the file is {stored[0]}x{stored[1]} but the instances file says {width}x{height}{why}")


def _link(source, target):
    """A symbolic link `target` -> `source` (absolute), replaced if it points elsewhere."""
    source = source.resolve()
    if target.is_symlink() and Path(os.readlink(target)) == source:
        return
    if target.is_symlink() or target.exists():
        target.unlink()
    target.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(source, target)


def _index_images(instances, tally):
    """{id: image entry} of the images given once; an id given twice costs both entries (one error)."""
    by_id, twice = {}, set()
    for im in instances["images"]:
        key = im.get("id") if isinstance(im, dict) else None
        if not isinstance(key, (int, str)) or isinstance(key, bool):
            tally.fail(f"image entry {printable(repr(im))[:80]}: no usable \"id\"")
        elif key in by_id or key in twice:
            twice.add(key)
            by_id.pop(key, None)
        else:
            by_id[key] = im
    for key in sorted(twice, key=str):
        tally.fail(f"image id {key!r}: given twice in the instances file; which one the annotations mean is unknown")
    return by_id, twice


def _sort_annotations(instances, images, twice, names, wanted, min_area, tally, skipped, causes):
    """{image id: [annotations]} of the annotations to import; the others are skipped or errors (counted)."""
    by_image = defaultdict(list)
    for k, ann in enumerate(instances["annotations"]):
        try:
            if not isinstance(ann, dict):
                raise AnnotationError("malformed", f"is a {type(ann).__name__}, not an object")
            if ann.get("image_id") in twice:
                skipped["of an image id given twice"] += 1
                continue
            if ann.get("image_id") not in images:
                raise AnnotationError("image id without image", f"image_id {ann.get('image_id')!r} has no image entry")
            if ann.get("category_id") not in names:
                raise AnnotationError("unknown category", f"category_id {ann.get('category_id')!r} is not in categories")
            if ann["category_id"] not in wanted:
                skipped["other category"] += 1
            elif ann.get("iscrowd"):
                skipped["crowd"] += 1
            elif not _number(ann.get("area", 0)):
                raise AnnotationError("bad area", f"area {ann.get('area')!r} is not a number")
            elif float(ann.get("area") or 0) < min_area:
                skipped["below --min-area"] += 1
            else:
                by_image[ann["image_id"]].append(ann)
        except AnnotationError as e:
            causes[e.cause] += 1
            name = ann.get("id", f"#{k}") if isinstance(ann, dict) else f"#{k}"
            tally.fail(f"annotation {printable(repr(name))}: {e}")
    return by_image


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
    names, wanted = _categories(instances, categories)
    captions = {}
    if captions_file:
        data = read_json(captions_file, "COCO captions file")
        for c in data.get("annotations", []) if isinstance(data, dict) else []:
            if isinstance(c, dict) and isinstance(c.get("caption"), str):
                captions.setdefault(c.get("image_id"), c["caption"].strip())
    tally = Tally("import_coco")
    skipped, causes = Counter(), Counter()
    images, twice = _index_images(instances, tally)
    by_image = _sort_annotations(instances, images, twice, names, wanted, min_area, tally, skipped, causes)
    todo = sorted(by_image, key=_order)
    if limit is not None:
        todo = todo[:limit]
    records, linked = {}, {}
    for image_id in tqdm(todo, desc="coco images", unit="img"):
        im = images[image_id]
        name = printable(im.get("file_name"))
        try:
            source = inside(image_dir, im.get("file_name"), "file_name")
            if not source.is_file():
                raise RecordError(f"{name}: image not found in {image_dir}")
            width, height = im.get("width"), im.get("height")
            if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
                raise RecordError(f"{name}: width and height must be positive integers, got {width!r} x {height!r}")
            _stored_size(source, width, height)
            link_name = PurePath(source).name
            stem = PurePath(link_name).stem
            if stem in linked:
                raise RecordError(f"{name}: its file stem {stem!r} is used by image id {linked[stem]!r} too (masks and "
                                  "depth maps are named by stem); rename one of them")
            objects = {}
            for ann in sorted(by_image[image_id], key=lambda a: _order(a.get("id"))):
                try:
                    box = _box(ann, width, height)
                    mask = decode_mask(ann.get("segmentation"), height, width)
                except AnnotationError as e:
                    causes[e.cause] += 1
                    tally.fail(f"annotation {printable(repr(ann.get('id')))} of {name}: {e}")
                    continue
                if not mask.any():
                    skipped["empty mask"] += 1
                    continue
                oid = f"o{len(objects)}"
                mask_name = f"{stem}_{oid}.png"
                write_png(out / "masks" / mask_name, mask.astype(np.uint8) * 255)
                objects[oid] = {"label": names[ann["category_id"]], "box": box, "mask": mask_name, "coco_id": ann.get("id")}
            if not objects:
                skipped["images with no object left"] += 1
                continue
            link = out / "images" / link_name
            _link(source, link)
            linked[stem] = image_id
            records[str(link.parent.resolve() / link.name)] = {
                "depth": f"{stem}.png", "caption": captions.get(image_id, ""), "objects": objects, "relations": []}
            tally.done += 1
        except Exception as e:  # one bad image costs one image
            tally.fail_record(name, e)
    write_json(annotations_file, records)
    parts = [f"{n} {why} skipped" for why, n in sorted(skipped.items())]
    parts += [f"{n} annotations refused: {cause}" for cause, n in sorted(causes.items())]
    tally.summary(", ".join(parts + [f"wrote {annotations_file}"]))
    return tally.exit_code
