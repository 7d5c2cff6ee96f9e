"""Open-vocabulary boxes (Grounding DINO, OWLv2) for photos that have no annotation yet.

For each image: the model's own post-processing gives boxes above
--box-threshold; every box gets one of the given labels (Grounding DINO: the
label whose tokens hold the strongest match above --text-threshold, so its
matched phrase maps back to a given label; OWLv2: the query it answered), boxes
are clipped to the image, class-aware NMS (--nms-iou) removes duplicates, and
the --max-objects best are kept. Output: an annotation file in our format
(label, box, "score", an empty caption, no masks yet) keyed by the image path;
an image where nothing was found gets an empty "objects", which the stages skip.

Labels are normalised (trimmed, spaces collapsed, a byte-order mark and CR
dropped, duplicates found case-insensitively dropped). Grounding DINO reads
all labels as one prompt "a. b. c." of at most its text length (256 tokens in
the released checkpoints): longer lists are split into chunks that fit, each
chunk run on the image, and the boxes of all chunks merged before NMS.
Each record keeps "detection": the settings and the image file's digest it
was made from; a rerun redoes an image whose settings or file changed.
"""

import re
from pathlib import Path

import numpy as np
from tqdm import tqdm

from batchkit.batch import Tally
from batchkit.errors import UserError
from batchkit.files import check_output_file, file_digest, read_json, write_json
from spacesgg.d2p import IMAGE_EXTENSIONS, list_by_stem
from spacesgg.io import read_photo, warn_photo

from .models import load, resolve

DETECT_FAMILIES = {"grounding_dino": "GroundingDinoForObjectDetection", "owlv2": "Owlv2ForObjectDetection"}
DETECT_MODELS = {
    "grounding-dino-tiny": ("IDEA-Research/grounding-dino-tiny", "grounding_dino"),
    "grounding-dino-base": ("IDEA-Research/grounding-dino-base", "grounding_dino"),
    "owlv2-base": ("google/owlv2-base-patch16-ensemble", "owlv2"),
    "owlv2-large": ("google/owlv2-large-patch14-ensemble", "owlv2"),
}
DEFAULT_BOX_THRESHOLD = 0.35
DEFAULT_TEXT_THRESHOLD = 0.25
DEFAULT_NMS_IOU = 0.5
DEFAULT_MAX_OBJECTS = 20
OWL_QUERY = "a photo of a {}"


def parse_labels(labels=None, labels_file=None):
    """The label list from "a, b, c" or a file (one per line or comma-separated), normalised.

    Items are trimmed and their spaces collapsed; a byte-order mark, CR and empty items are dropped; a label that
    repeats another one up to case is dropped (the first spelling is kept). Order is kept.
    """
    if bool(labels) == bool(labels_file):
        raise UserError("give the labels to look for: --labels \"chair, table, lamp\" or --labels-file FILE (one of them)")
    if labels_file:
        try:
            labels = Path(labels_file).read_bytes().decode("utf-8-sig")
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"{labels_file}: cannot read the label list as UTF-8 text ({e})") from None
    text = labels.replace("\ufeff", "").replace("\r", "\n").replace("\n", ",")
    out = {}
    for part in text.split(","):
        label = " ".join(part.split())
        if label and label.casefold() not in out:
            out[label.casefold()] = label
    if not out:
        raise UserError("the label list is empty; give labels like --labels \"chair, table, lamp\"")
    bad = [label for label in out.values() if re.search(r"[<>.]", label)]
    if bad:
        raise UserError(f"label {bad[0]!r} holds '<', '>' or '.', which the tags or Grounding DINO's prompt use; drop them")
    return list(out.values())


def prompt_chunks(labels, count_tokens, max_tokens):
    """Consecutive label index lists whose Grounding DINO prompts ("a. b.") each fit in `max_tokens` tokens."""
    chunks, current = [], []
    for k, label in enumerate(labels):
        if count_tokens(grounding_prompt([label])) > max_tokens:
            raise UserError(f"label {label!r} alone is longer than the detector's text length ({max_tokens} tokens); "
                            "shorten it")
        if current and count_tokens(grounding_prompt([labels[i] for i in current + [k]])) > max_tokens:
            chunks.append(current)
            current = []
        current.append(k)
    return chunks + [current]


def grounding_prompt(labels):
    return ". ".join(label.lower() for label in labels) + "."


def nms(boxes, scores, classes, iou):
    """Indices kept by class-aware non-maximum suppression, best score first."""
    import torch
    from torchvision.ops import batched_nms
    if len(boxes) == 0:
        return []
    keep = batched_nms(torch.as_tensor(boxes, dtype=torch.float32), torch.as_tensor(scores, dtype=torch.float32),
                       torch.as_tensor(classes), iou)
    return keep.tolist()


class Detector:
    """A loaded open-vocabulary detector and its processor, for one label list."""

    def __init__(self, choice, labels, device="auto", dtype="auto"):
        self.choice, self.labels = choice, labels
        self.model, self.processor, self.device, self.dtype_name = load(choice, DETECT_FAMILIES, device, dtype)
        if choice.family == "grounding_dino":
            tokenizer = self.processor.tokenizer
            max_tokens = int(self.model.config.max_text_len)
            self.chunks = []                    # (prompt text, label indices, token span of each label)
            for indices in prompt_chunks(labels, lambda t: len(tokenizer(t)["input_ids"]), max_tokens):
                text = grounding_prompt([labels[k] for k in indices])
                offsets = tokenizer(text, return_offsets_mapping=True)["offset_mapping"]
                spans, position = [], 0
                for k in indices:
                    start = text.index(labels[k].lower(), position)
                    end = start + len(labels[k])
                    spans.append([t for t, (s, e) in enumerate(offsets) if e > s and s < end and e > start])
                    position = end
                self.chunks.append((text, indices, spans))

    def _inputs(self, image, text=None):
        if self.choice.family == "grounding_dino":
            inputs = self.processor(images=[image], text=text, return_tensors="pt")
        else:
            inputs = self.processor(text=[[OWL_QUERY.format(label) for label in self.labels]], images=[image],
                                    return_tensors="pt", padding=True, truncation=True)
        return {k: v.to(self.device, self.model.dtype) if v.is_floating_point() else v.to(self.device)
                for k, v in inputs.items()}

    def detect(self, image, box_threshold, text_threshold):
        """(boxes N x 4 pixels, scores N, label indices N) for one uint8 RGB image, before NMS."""
        import torch
        height, width = image.shape[:2]
        if self.choice.family == "owlv2":
            inputs = self._inputs(image)
            with torch.inference_mode():
                outputs = self.model(**inputs)
            result = self.processor.post_process_grounded_object_detection(
                outputs, threshold=box_threshold, target_sizes=[(height, width)], text_labels=[self.labels])[0]
            return result["boxes"].float().cpu().numpy(), result["scores"].float().cpu().numpy(), result["labels"].cpu().numpy()
        found = [self._detect_chunk(image, chunk, box_threshold, text_threshold) for chunk in self.chunks]
        return tuple(np.concatenate(parts) for parts in zip(*found))

    def _detect_chunk(self, image, chunk, box_threshold, text_threshold):
        """Grounding DINO on one prompt chunk: boxes, scores and global label indices of the boxes of a given label."""
        import torch
        text, indices, spans = chunk
        height, width = image.shape[:2]
        inputs = self._inputs(image, text)
        with torch.inference_mode():
            outputs = self.model(**inputs)
        result = self.processor.post_process_grounded_object_detection(
            outputs, input_ids=inputs["input_ids"], threshold=box_threshold, text_threshold=text_threshold,
            target_sizes=[(height, width)])[0]
        probs = torch.sigmoid(outputs.logits[0].float())                     # queries x text tokens
        kept = (probs.max(dim=-1).values > box_threshold).nonzero().flatten()  # the queries the post-processing kept
        classes = []
        for query in kept.tolist():
            matched = probs[query] * (probs[query] > text_threshold)           # the matched phrase's tokens
            strength = [float(matched[span].max()) if span else 0.0 for span in spans]
            classes.append(indices[int(np.argmax(strength))] if max(strength) > 0 else -1)
        classes = np.array(classes, dtype=np.int64)
        found = classes >= 0                                                   # a phrase of no given label: dropped
        return (result["boxes"].float().cpu().numpy().reshape(-1, 4)[found],
                result["scores"].float().cpu().numpy()[found], classes[found])


def detect_image(detector, image, box_threshold, text_threshold, nms_iou, max_objects):
    """{id: {"label", "box", "score"}} of one image: clipped, NMS'd, best first, at most max_objects."""
    height, width = image.shape[:2]
    boxes, scores, classes = detector.detect(image, box_threshold, text_threshold)
    if len(boxes):
        boxes = np.clip(boxes, 0, [width, height, width, height])
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        ok = (area > 0) & (scores > box_threshold)
        boxes, scores, classes = boxes[ok], scores[ok], classes[ok]
    keep = nms(boxes, scores, classes, nms_iou)[:max_objects]
    return {f"o{k}": {"label": detector.labels[int(classes[i])], "box": [round(float(v), 1) for v in boxes[i]],
                      "score": round(float(scores[i]), 4)} for k, i in enumerate(keep)}


def detect_dataset(dataset_path, output_file, model, labels, box_threshold=DEFAULT_BOX_THRESHOLD,
                   text_threshold=DEFAULT_TEXT_THRESHOLD, nms_iou=DEFAULT_NMS_IOU, max_objects=DEFAULT_MAX_OBJECTS,
                   device="auto", dtype="auto"):
    """Boxes for every image of DATASET/images that the output file does not hold yet; returns the exit code."""
    dataset = Path(dataset_path)
    images_dir = dataset / "images"
    if not images_dir.is_dir():
        raise UserError(f"{images_dir}: folder not found; a dataset holds images/")
    output_file = check_output_file(output_file)
    images = list_by_stem(images_dir, IMAGE_EXTENSIONS)
    records = read_json(output_file, "annotation file") if output_file.is_file() else {}
    if not isinstance(records, dict):
        raise UserError(f"{output_file}: expected one JSON object keyed by image path")
    choice = resolve(model, DETECT_MODELS, DETECT_FAMILIES, "open-vocabulary detection")
    detector = Detector(choice, labels, device, dtype)
    settings = {"model": choice.name, "snapshot": choice.source, "labels": labels, "box_threshold": box_threshold,
                "text_threshold": text_threshold, "nms_iou": nms_iou, "max_objects": max_objects}
    keys = {stem: str(images_dir.resolve() / path.name) for stem, path in images.items()}
    tally = Tally("detect_objects")
    todo = {}
    for stem, path in images.items():
        try:
            made_from = dict(settings, image=file_digest(path))
        except OSError as e:                                              # a folder named like an image, unreadable
            records.pop(keys[stem], None)
            tally.fail_record(path, e)
            continue
        previous = records.get(keys[stem])
        if isinstance(previous, dict) and previous.get("detection") == made_from:
            tally.skipped += 1
        else:
            tally.counts["redone"] += isinstance(previous, dict) and "detection" in previous
            todo[stem] = made_from
    gone = [key for key, record in records.items() if isinstance(record, dict) and "detection" in record
            and key not in keys.values()]
    for key in gone:                                                      # detections of photos no longer there
        del records[key]
    print(f"detect_objects: {len(images)} images, {len(labels)} labels"
          + (f" in {len(detector.chunks)} prompt chunks" if hasattr(detector, "chunks") else "")
          + f", {choice.name} ({choice.source}) on {detector.device}, {tally.skipped} already done"
          + (f", {tally.counts['redone']} redone (other settings or image file)" if tally.counts["redone"] else "")
          + (f", {len(gone)} records of photos no longer in {images_dir} dropped" if gone else ""), flush=True)
    try:
        for stem, made_from in tqdm(todo.items(), desc="detect", unit="img"):
            try:
                image, problems = read_photo(images[stem])
                warn_photo(tally, images[stem], problems)
                objects = detect_image(detector, image, box_threshold, text_threshold, nms_iou, max_objects)
                records[keys[stem]] = {"depth": f"{stem}.png", "caption": "", "objects": objects, "relations": [],
                                       "detection": made_from}
                tally.done += 1
                tally.counts["objects"] += len(objects)
                tally.counts["empty"] += not objects
            except Exception as e:  # one bad image costs one image
                records.pop(keys[stem], None)                                  # no stale boxes left under its key
                tally.fail_record(images[stem], e)
    finally:
        write_json(output_file, records)                 # what was found so far survives an interruption
    tally.summary(f"{tally.counts['objects']} objects, {tally.counts['empty']} images with none, wrote {output_file}")
    return tally.exit_code
