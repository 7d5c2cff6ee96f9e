"""Box-prompted masks (SAM, SAM-HQ, SAM 2) for the objects of an annotation file that have a box but no mask.

All boxes of an image go to the model in one prompt batch; of the candidate
masks of each box the best-scoring one (the model's own IoU estimate) is kept,
written as MASK_DIR/{stem}_{id}.png (0/255) and named in the output
annotation file with its "mask_score". Resume: MASK_DIR/segment_settings.json
records the model, snapshot and dtype before any mask is written, and a mask
newer than that record is reused, so a killed run picks up where it stopped.
"""

from pathlib import Path

import numpy as np

from batchkit.batch import Tally, map_records
from batchkit.errors import RecordError, UserError
from batchkit.files import check_name, check_output_file, record_settings, write_json
from batchkit.shards import in_shard, shard_path
from spacesgg.annotations import check_box, check_object, check_rewrite_flags, image_stem, load_annotations, object_items, rewrite_path
from spacesgg.io import read_rgb, write_png

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

    def __init__(self, choice: Choice, device="auto", dtype="auto"):
        self.choice = choice
        self.model, self.processor, self.device, self.dtype_name = load(choice, SEG_FAMILIES, device, dtype)

    def masks(self, image, boxes):
        """(bool masks N x H x W, scores N) for N pixel boxes [x0, y0, x1, y1] on one uint8 RGB image."""
        import torch
        inputs = self.processor(images=[image], input_boxes=[[list(map(float, b)) for b in boxes]], return_tensors="pt")
        inputs = {k: v.to(self.device, self.model.dtype) if k == "pixel_values" else v.to(self.device)
                  for k, v in inputs.items()}
        with torch.inference_mode():
            outputs = self.model(**inputs, multimask_output=True)
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


def segment_record(key, record, segmenter, dataset, mask_dir, since, overwrite, tally, dataset_base=None, data_prefix=None):
    """The record with a mask for every object that has a box (and no mask, unless overwrite)."""
    items = object_items(key, record)
    stem = image_stem(key)
    wanted, objects = [], dict(record["objects"])
    for oid, obj in items:
        if not isinstance(obj, dict) or (obj.get("mask") and not overwrite):
            continue
        try:
            check_name(str(oid).replace("_", "-"), "object id")
            check_object(key, oid, dict(obj, mask=obj.get("mask") or "pending"))
            wanted.append(oid)
        except Exception as e:  # one bad object costs one object
            tally.fail_record(f"{key}: object {oid}", e)
    if not wanted:
        return record
    todo = []
    for oid in wanted:
        name = f"{stem}_{oid}.png"
        path = Path(mask_dir) / name
        if path.is_file() and path.stat().st_mtime >= since:
            objects[oid] = dict(objects[oid], mask=name)              # made by an earlier run with these settings
            continue
        todo.append(oid)
    if todo:
        image = read_rgb(_image_path(key, dataset, dataset_base, data_prefix))
        height, width = image.shape[:2]
        boxed = []
        for oid in todo:
            try:
                check_box(key, oid, objects[oid]["box"], width, height)
                boxed.append(oid)
            except RecordError as e:                                   # one bad box costs that object
                tally.fail_record(f"{key}: object {oid}", e)
        todo = boxed
    if todo:
        masks, scores = segmenter.masks(image, [objects[oid]["box"] for oid in todo])
        for oid, mask, score in zip(todo, masks, scores):
            name = f"{stem}_{oid}.png"
            write_png(Path(mask_dir) / name, mask.astype(np.uint8) * 255)
            objects[oid] = dict(objects[oid], mask=name, mask_score=round(float(score), 4))
            tally.counts["masks"] += 1
    out = dict(record)
    out["objects"] = objects
    return out


def segment_annotations(dataset_path, input_file, output_file, model, mask_dir=None, overwrite=False, device="auto",
                        dtype="auto", dataset_base=None, data_prefix=None, shard=None):
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
    segmenter = Segmenter(choice, device, dtype)
    since = record_settings(shard_path(mask_dir / "segment_settings.json", shard),
                            {"model": choice.name, "snapshot": choice.source, "dtype": segmenter.dtype_name})
    print(f"segment_objects: {len(records)} images, {choice.name} ({choice.source}) on {segmenter.device} "
          f"{segmenter.dtype_name}", flush=True)
    tally = Tally("segment_objects")
    out = map_records(records, lambda k, r: segment_record(k, r, segmenter, dataset, mask_dir, since, overwrite, tally,
                                                           dataset_base, data_prefix), tally, "segment")
    write_json(output_file, out)
    tally.summary(f"{tally.counts['masks']} masks made, in {mask_dir}; wrote {output_file}")
    return tally.exit_code
