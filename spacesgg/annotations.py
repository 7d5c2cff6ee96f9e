"""The annotation file shared by the stages: native and legacy record forms, path rewriting, object masks.

Native record (docs/formats.md): {"depth", "caption", "objects": {id: {"label", "box", "mask"}}, "relations"}.
Legacy record (upstream): object entries keyed by id whose value is a list
[label, ..., [x0, y0, x1, y1], mask_file], and "caption_annotation" for the caption.
Legacy records are normalised to the native form when read, because the list
form has no place for the per-object fields the stages add; entries that are
not objects are copied through unchanged.
"""

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from batchkit.errors import RecordError, Skipped, UserError
from batchkit.files import finite, inside, read_json

from .io import read_mask


def load_annotations(path, allow_empty=False):
    """The annotation dict {image path: record}, every record in native form."""
    data = read_json(path, "annotation file")
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected one JSON object keyed by image path, found a {type(data).__name__}")
    if not data and not allow_empty:
        raise UserError(f"{path}: the annotation file holds no record")
    return {key: normalise_record(record) for key, record in data.items()}


def check_key(key):
    """An annotation key must be text that can be written back (JSON allows lone surrogates; UTF-8 does not)."""
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise RecordError(f"{key.encode('utf-8', 'backslashreplace').decode()}: the key is not valid text "
                          "(a lone surrogate); fix the annotation file") from None
    if not key.strip():
        raise RecordError(f"{key!r}: empty annotation key; keys are image paths")


def _is_legacy_object(value):
    return (isinstance(value, list) and len(value) >= 3 and isinstance(value[0], str)
            and isinstance(value[-1], str) and isinstance(value[-2], list) and len(value[-2]) == 4)


def normalise_record(record):
    """Return the record in native form (legacy object lists become an "objects" dict); a non-object is kept as is."""
    if not isinstance(record, dict) or "objects" in record:
        return record
    legacy = {k: v for k, v in record.items() if _is_legacy_object(v)}
    if not legacy:
        return record
    out = {k: v for k, v in record.items() if k not in legacy}
    out["objects"] = {}
    for oid, value in legacy.items():
        obj = {"label": value[0], "box": value[-2], "mask": value[-1]}
        if len(value) > 3:
            obj["extra"] = value[1:-2]
        out["objects"][oid] = obj
    if "caption" not in out and "caption_annotation" in out:
        out["caption"] = out["caption_annotation"]
    return out


def rewrite_path(key, dataset_base=None, data_prefix=None):
    """Replace the `dataset_base` prefix of an annotation key by `data_prefix` (both or neither)."""
    if not dataset_base:
        return Path(key)
    base = str(PurePosixPath(dataset_base))
    if key == base or key.startswith(base.rstrip("/") + "/"):
        return Path(data_prefix) / key[len(base):].lstrip("/")
    return Path(key)


def check_rewrite_flags(dataset_base, data_prefix):
    if bool(dataset_base) != bool(data_prefix):
        raise UserError("--dataset-base and --data-prefix go together: give both (old prefix, new prefix) or neither")


@dataclass(frozen=True)
class ImagePaths:
    """How a stage finds a record's image from its key.

    First the key itself, with its --dataset-base prefix replaced by --data-prefix; a relative key (the native
    form: relative to the dataset folder) also inside `dataset`; last, DATASET/images/{file name}.
    """
    dataset_base: str | None = None
    data_prefix: str | None = None
    dataset: Path | None = None

    def __post_init__(self):
        check_rewrite_flags(self.dataset_base, self.data_prefix)

    @classmethod
    def from_args(cls, args, dataset=None):
        return cls(args.dataset_base, args.data_prefix, Path(dataset) if dataset else None)

    def rewritten(self, key):
        return rewrite_path(key, self.dataset_base, self.data_prefix)

    def find(self, key):
        """The image file of `key`, or None where none of the places holds it."""
        path = Path(self.rewritten(key))
        candidates = [path]
        if self.dataset is not None:
            if not path.is_absolute():
                candidates.append(self.dataset / path)
            candidates.append(self.dataset / "images" / path.name)
        return next((c for c in candidates if c.is_file()), None)


def image_stem(key):
    """The stem that names the image's depth map, point map and masks: the key's file stem."""
    return PurePosixPath(key).stem


def object_items(key, record):
    """(id, object) pairs of a native record (each object is checked on its own with check_object)."""
    check_key(key)
    if not isinstance(record, dict):
        raise RecordError(f"{key}: record is a {type(record).__name__}, expected an object with \"objects\"")
    objects = record.get("objects")
    if objects == {}:
        raise Skipped(f"{key}: no objects (e.g. the detector found none); nothing to do")
    if not isinstance(objects, dict):
        raise RecordError(f"{key}: record has no objects (expected an \"objects\" dict or legacy object lists)")
    return list(objects.items())


def check_label(key, oid, label):
    """A label is non-empty text without the tag characters < and > (stage 2 writes it inside <ref> tags)."""
    if not isinstance(label, str) or not label.strip():
        raise RecordError(f"{key}: object {oid} label {label!r} is not a non-empty text")
    if "<" in label or ">" in label:
        raise RecordError(f"{key}: object {oid} label {label!r} holds '<' or '>', which would break the grounding tags")
    try:
        label.encode("utf-8")
    except UnicodeEncodeError:
        raise RecordError(f"{key}: object {oid} label is not valid text (a lone surrogate)") from None


def check_object(key, oid, obj):
    """An object needs a label, a box of 4 finite numbers and a mask file name."""
    if not isinstance(obj, dict):
        raise RecordError(f"{key}: object {oid!r} is a {type(obj).__name__}, expected {{\"label\", \"box\", \"mask\"}}")
    check_label(key, oid, obj.get("label"))
    box = obj.get("box")
    if not isinstance(box, (list, tuple)) or len(box) != 4 or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                                      for v in box) or not finite(box):
        raise RecordError(f"{key}: object {oid} box {box!r} is not 4 finite numbers [x0, y0, x1, y1]")
    if not isinstance(obj.get("mask"), str):
        raise RecordError(f"{key}: object {oid} mask {obj.get('mask')!r} is not a file name")


def unknown_relation_ids(key, record):
    """One message per relation triple [subject, predicate, object] that names an object id the record lacks."""
    objects = record.get("objects", {})
    relations = record.get("relations")
    if relations is None:
        return []
    if not isinstance(relations, list):
        return [f"{key}: \"relations\" is a {type(relations).__name__}, expected a list of [subject, predicate, object]"]
    problems = []
    for triple in relations:
        if not (isinstance(triple, list) and len(triple) == 3):
            problems.append(f"{key}: relation {triple!r} is not [subject id, predicate, object id]")
            continue
        for oid in (triple[0], triple[2]):
            if not isinstance(oid, str) or oid not in objects:
                problems.append(f"{key}: relation {triple!r} names unknown object id {oid!r}; "
                                f"known ids: {', '.join(objects) or 'none'}")
    return problems


def check_box(key, oid, box, width, height):
    """A box [x0, y0, x1, y1] in pixels must lie inside the image and have positive area."""
    try:
        x0, y0, x1, y1 = (float(v) for v in box)
    except (TypeError, ValueError):
        raise RecordError(f"{key}: object {oid} box {box!r} is not 4 numbers [x0, y0, x1, y1]") from None
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise RecordError(f"{key}: object {oid} box {box} is outside the {width}x{height} image or empty; "
                          "boxes are pixels [x0, y0, x1, y1] with x1 > x0, y1 > y0")


def erode(mask, pixels):
    """The mask shrunk by `pixels` on every side (OpenCV erosion with a square kernel of side 2 x pixels + 1).

    Against flying pixels: estimated depth smears object borders into the background, so the border's depths
    are dropped before any statistic is taken.
    """
    if not pixels:
        return mask
    import cv2
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * pixels + 1, 2 * pixels + 1))
    return cv2.erode(mask.astype(np.uint8), kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0).astype(bool)


def load_object_mask(key, oid, obj, mask_dir, shape, mask_erode=0):
    """The object's boolean mask (a file name inside mask_dir), checked against the image shape, eroded.

    A mask that segment_objects.py made for another box ("mask_from" names the box it was made from) is refused:
    it would put the depth of the old box's object under the new box.
    """
    made_from = obj.get("mask_from")
    if isinstance(made_from, dict) and "box" in made_from and made_from["box"] != list(obj.get("box") or []):
        raise RecordError(f"{key}: object {oid}: mask {obj['mask']} was made for box {made_from['box']}, not for "
                          f"{obj.get('box')}; rerun dataengine/segment_objects.py to make it for this box")
    try:
        mask = read_mask(inside(mask_dir, obj["mask"], "mask"), shape)
    except RecordError as e:
        raise RecordError(f"{key}: object {oid}: {e}") from None
    mask = erode(mask, mask_erode)
    if not mask.any():
        raise RecordError(f"{key}: object {oid}: mask {obj['mask']} is empty after --mask-erode {mask_erode}; "
                          "lower it for small objects")
    return mask

