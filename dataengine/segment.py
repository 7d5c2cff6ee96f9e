"""Box-prompted masks (SAM, SAM-HQ, SAM 2) for the objects of an annotation file that have a box but no mask.

All boxes of an image go to the model in one prompt batch. As SAM's reference
predictor does for box prompts (unambiguous), the model gives one mask per box
(`multimask=True`: three candidates, the best by the model's own IoU estimate),
written as MASK_DIR/{stem}_{id}.png (0/255) and named in the output annotation
file with its "mask_score" and "mask_from": what it was made from (the box,
the image file's digest, the model, its snapshot and settings). The same
record is written into the mask PNG itself, so a rerun reuses a mask only when
it was made from exactly today's box, image and model; a box that changed (a
new detection handed the id to another box, or an edit) gets a new mask.
Masks given with the data (no "mask_from") are kept unless --overwrite.
"""

from pathlib import Path

import numpy as np

from batchkit.batch import Tally, map_records
from batchkit.errors import RecordError, UserError
from batchkit.files import check_name, check_output_file, file_digest, write_json
from batchkit.shards import in_shard, input_name, record_shard_settings, shard_path
from spacesgg.annotations import check_box, check_object, check_rewrite_flags, image_stem, load_annotations, object_items, rewrite_path
from spacesgg.io import image_header, png_provenance, read_photo, warn_photo, write_png

from .models import Choice, load, resolve

SEG_FAMILIES = {"sam": "SamModel", "sam_hq": "SamHQModel", "sam2": "Sam2Model"}
SEG_MODELS = {
    "sam-vit-base": ("facebook/sam-vit-base", "sam"),
    "sam-vit-large": ("facebook/sam-vit-large", "sam"),
    "sam-vit-huge": ("facebook/sam-vit-huge", "sam"),
    "sam-hq-vit-base": ("syscv-community/sam-hq-vit-base", "sam_hq"),
    "sam-hq-vit-large": ("syscv-community/sam-hq-vit-large", "sam_hq"),
    "sam-hq-vit-huge": ("syscv-community/sam-hq-vit-huge", "sam_hq"),
    "sam2-hiera-tiny": ("facebook/sam2.1-hiera-tiny", "sam2"),
    "sam2-hiera-small": ("facebook/sam2.1-hiera-small", "sam2"),
    "sam2-hiera-base-plus": ("facebook/sam2.1-hiera-base-plus", "sam2"),
    "sam2-hiera-large": ("facebook/sam2.1-hiera-large", "sam2"),
}


class Segmenter:
    """A loaded box-prompted segmentation model and its processor."""

    def __init__(self, choice: Choice, device="auto", dtype="auto", multimask=False):
        self.choice, self.multimask = choice, multimask
        self.model, self.processor, self.device, self.dtype_name = load(choice, SEG_FAMILIES, device, dtype)

    def made_from(self, box, image_digest):
        """The provenance of a mask of `box` on the image with this digest, made by this model now."""
        return {"box": [float(v) for v in box], "image": image_digest, "model": self.choice.name,
                "snapshot": self.choice.source, "dtype": self.dtype_name, "multimask": self.multimask}

    def masks(self, image, boxes):
        """(bool masks N x H x W, scores N) for N pixel boxes [x0, y0, x1, y1] on one uint8 RGB image.

        One mask per box, or with `multimask` the best of the model's candidates by its own IoU estimate.
        """
        import torch
        inputs = self.processor(images=[image], input_boxes=[[list(map(float, b)) for b in boxes]], return_tensors="pt")
        inputs = {k: v.to(self.device, self.model.dtype) if k == "pixel_values" else v.to(self.device)
                  for k, v in inputs.items()}
        with torch.inference_mode():
            outputs = self.model(**inputs, multimask_output=self.multimask)
        if self.choice.family == "sam2":
            masks = self.processor.post_process_masks(outputs.pred_masks.cpu(), inputs["original_sizes"].cpu())[0]
        else:
            masks = self.processor.post_process_masks(outputs.pred_masks.cpu(), inputs["original_sizes"].cpu(),
                                                      inputs["reshaped_input_sizes"].cpu())[0]
        scores = outputs.iou_scores[0].float().cpu()                     # N x candidates
        best = scores.argmax(dim=1)
        rows = torch.arange(len(boxes))
        return masks[rows, best].numpy().astype(bool), scores[rows, best].numpy()


def _image_path(key, dataset, dataset_base, data_prefix):
    """The image of a record: its (rewritten) key if that file exists, else DATASET/images/{file name}."""
    path = Path(rewrite_path(key, dataset_base, data_prefix))
    if path.is_file():
        return path
    local = Path(dataset) / "images" / path.name
    if local.is_file():
        return local
    raise RecordError(f"{key}: image not found at {path} nor at {local}")


def _wanted(key, record, overwrite, tally):
    """Ids of the objects that need a mask of ours: no mask, one we made (checked against today's box), or all."""
    wanted = []
    for oid, obj in object_items(key, record):
        if not isinstance(obj, dict) or (obj.get("mask") and "mask_from" not in obj and not overwrite):
            continue                                                   # a mask given with the data is kept
        try:
            check_name(str(oid).replace("_", "-"), "object id")
            check_object(key, oid, dict(obj, mask=obj.get("mask") or "pending"))
            wanted.append(oid)
        except Exception as e:  # one bad object costs one object
            tally.fail_record(f"{key}: object {oid}", e)
    return wanted


def segment_record(key, record, segmenter, dataset, mask_dir, overwrite, tally, dataset_base=None, data_prefix=None):
    """The record with a mask of ours for every object that has a box (and no mask given with the data)."""
    wanted = _wanted(key, record, overwrite, tally)
    if not wanted:
        return record
    stem = image_stem(key)
    objects = dict(record["objects"])
    path = _image_path(key, dataset, dataset_base, data_prefix)
    digest = file_digest(path)
    todo = []
    for oid in wanted:
        name = f"{stem}_{oid}.png"
        made_from = segmenter.made_from(objects[oid]["box"], digest)
        stored = png_provenance(Path(mask_dir) / name)
        if not overwrite and isinstance(stored, dict) and stored.get("made_from") == made_from:
            objects[oid] = dict(objects[oid], mask=name, mask_score=stored.get("mask_score"), mask_from=made_from)
            tally.counts["reused"] += 1
            continue
        if stored is not None or "mask_from" in objects[oid]:
            tally.counts["redone"] += 1                                   # made from another box, image or model
        todo.append(oid)
    if not todo:
        warn_photo(tally, path, image_header(path)[1])
        return dict(record, objects=objects)
    image, problems = read_photo(path)
    warn_photo(tally, path, problems)
    height, width = image.shape[:2]
    boxed = []
    for oid in todo:
        try:
            check_box(key, oid, objects[oid]["box"], width, height)
            boxed.append(oid)
        except RecordError as e:                                       # one bad box costs that object
            tally.fail_record(f"{key}: object {oid}", e)
    if boxed:
        masks, scores = segmenter.masks(image, [objects[oid]["box"] for oid in boxed])
        for oid, mask, score in zip(boxed, masks, scores):
            name = f"{stem}_{oid}.png"
            made_from = segmenter.made_from(objects[oid]["box"], digest)
            score = round(float(score), 4)
            write_png(Path(mask_dir) / name, mask.astype(np.uint8) * 255,
                      provenance={"made_from": made_from, "mask_score": score})
            objects[oid] = dict(objects[oid], mask=name, mask_score=score, mask_from=made_from)
            tally.counts["made"] += 1
    for oid in set(todo) - set(boxed):                                 # no stale mask stays named on a bad box
        objects[oid] = {k: v for k, v in objects[oid].items() if k not in ("mask", "mask_score", "mask_from")}
    return dict(record, objects=objects)


def segment_annotations(dataset_path, input_file, output_file, model, mask_dir=None, overwrite=False, device="auto",
                        dtype="auto", dataset_base=None, data_prefix=None, shard=None, multimask=False):
    """Run the segmentation over an annotation file; returns the exit code."""
    check_rewrite_flags(dataset_base, data_prefix)
    check_output_file(output_file)
    dataset = Path(dataset_path)
    if not dataset.is_dir():
        raise UserError(f"{dataset}: dataset folder not found")
    records = {k: r for k, r in load_annotations(input_file, allow_empty=shard is not None).items()
               if in_shard(k, shard)}
    output_file = shard_path(output_file, shard)
    choice = resolve(model, SEG_MODELS, SEG_FAMILIES, "box-prompted segmentation")
    mask_dir = Path(mask_dir) if mask_dir else dataset / "masks"
    mask_dir.mkdir(parents=True, exist_ok=True)
    segmenter = Segmenter(choice, device, dtype, multimask)
    record_shard_settings(output_file, shard, {"stage": "segment_objects", "input": input_name(input_file),
                                               "model": choice.name, "snapshot": choice.source,
                                               "dtype": segmenter.dtype_name, "multimask": multimask,
                                               "overwrite": overwrite})
    print(f"segment_objects: {len(records)} images, {choice.name} ({choice.source}) on {segmenter.device} "
          f"{segmenter.dtype_name}", flush=True)
    tally = Tally("segment_objects")
    out = map_records(records, lambda k, r: segment_record(k, r, segmenter, dataset, mask_dir, overwrite, tally,
                                                           dataset_base, data_prefix), tally, "segment")
    write_json(output_file, out)
    c = tally.counts
    tally.summary(f"masks: {c['made']} made ({c['redone']} of them replacing masks of another box, image or model), "
                  f"{c['reused']} reused, in {mask_dir}; wrote {output_file}")
    return tally.exit_code
