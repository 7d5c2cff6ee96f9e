"""Open-vocabulary boxes (Grounding DINO, OWLv2) for photos that have no annotation yet.

For each image: the model's own post-processing gives boxes above
--box-threshold; every box gets one of the given labels (Grounding DINO: the
label whose tokens hold the strongest match above --text-threshold, so its
matched phrase maps back to a given label; OWLv2: the query it answered), boxes
are clipped to the image, class-aware NMS (--nms-iou) removes duplicates, and
the --max-objects best are kept. Output: an annotation file in our format
(label, box, "score", an empty caption, no masks yet) keyed by the image path;
an image where nothing was found gets an empty "objects", which the stages skip.
"""

import re
from pathlib import Path

import numpy as np
from tqdm import tqdm

from batchkit.batch import Tally
from batchkit.errors import UserError
from batchkit.files import check_output_file, read_json, write_json
from spacesgg.d2p import IMAGE_EXTENSIONS, list_by_stem
from spacesgg.io import read_rgb

from .models import load, resolve

DETECT_FAMILIES = {"grounding-dino": "GroundingDinoForObjectDetection", "owlv2": "Owlv2ForObjectDetection"}
DETECT_MODELS = {
    "grounding-dino-tiny": ("IDEA-Research/grounding-dino-tiny", "grounding-dino"),
    "grounding-dino-base": ("IDEA-Research/grounding-dino-base", "grounding-dino"),
    "owlv2-base": ("google/owlv2-base-patch16-ensemble", "owlv2"),
    "owlv2-large": ("google/owlv2-large-patch14-ensemble", "owlv2"),
}
DEFAULT_BOX_THRESHOLD = 0.35
DEFAULT_TEXT_THRESHOLD = 0.25
DEFAULT_NMS_IOU = 0.5
DEFAULT_MAX_OBJECTS = 20
OWL_QUERY = "a photo of a {}"


def parse_labels(labels=None, labels_file=None):
    """The label list from "a, b, c" or a file (one per line or comma-separated); duplicates dropped, order kept."""
    if bool(labels) == bool(labels_file):
        raise UserError("give the labels to look for: --labels \"chair, table, lamp\" or --labels-file FILE (one of them)")
    if labels_file:
        try:
            labels = Path(labels_file).read_text(encoding="utf-8").replace("\n", ",")
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"{labels_file}: cannot read the label list ({e})") from None
    out = list(dict.fromkeys(" ".join(part.split()) for part in labels.split(",") if part.strip()))
    if not out:
        raise UserError("the label list is empty; give labels like --labels \"chair, table, lamp\"")
    bad = [label for label in out if re.search(r"[<>.]", label)]
    if bad:
        raise UserError(f"label {bad[0]!r} holds '<', '>' or '.', which the tags or Grounding DINO's prompt use; drop them")
    return out


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
        if choice.family == "grounding-dino":
            self.text = ". ".join(label.lower() for label in labels) + "."
            enc = self.processor.tokenizer(self.text, return_offsets_mapping=True)
            starts, position = [], 0
            for label in labels:
                start = self.text.index(label.lower(), position)
                starts.append((start, start + len(label)))
                position = start + len(label)
            self.spans = [[k for k, (s, e) in enumerate(enc["offset_mapping"]) if e > s and s < end and e > start]
                          for start, end in starts]

    def _inputs(self, image):
        if self.choice.family == "grounding-dino":
            inputs = self.processor(images=[image], text=self.text, return_tensors="pt")
        else:
            inputs = self.processor(text=[[OWL_QUERY.format(label) for label in self.labels]], images=[image],
                                    return_tensors="pt", padding=True, truncation=True)
        return {k: v.to(self.device, self.model.dtype) if v.is_floating_point() else v.to(self.device)
                for k, v in inputs.items()}

    def detect(self, image, box_threshold, text_threshold):
        """(boxes N x 4 pixels, scores N, label indices N) for one uint8 RGB image, before NMS."""
        import torch
        height, width = image.shape[:2]
        inputs = self._inputs(image)
        with torch.inference_mode():
            outputs = self.model(**inputs)
        if self.choice.family == "owlv2":
            result = self.processor.post_process_grounded_object_detection(
                outputs, threshold=box_threshold, target_sizes=[(height, width)], text_labels=[self.labels])[0]
            return result["boxes"].float().cpu().numpy(), result["scores"].float().cpu().numpy(), result["labels"].cpu().numpy()
        result = self.processor.post_process_grounded_object_detection(
            outputs, input_ids=inputs["input_ids"], threshold=box_threshold, text_threshold=text_threshold,
            target_sizes=[(height, width)])[0]
        probs = torch.sigmoid(outputs.logits[0].float())                     # queries x text tokens
        kept = (probs.max(dim=-1).values > box_threshold).nonzero().flatten()  # the queries the post-processing kept
        classes = []
        for query in kept.tolist():
            matched = probs[query] * (probs[query] > text_threshold)           # the matched phrase's tokens
            strength = [float(matched[span].max()) if span else 0.0 for span in self.spans]
            classes.append(int(np.argmax(strength)) if max(strength) > 0 else -1)
        classes = np.array(classes, dtype=np.int64)
        found = classes >= 0                                                   # a phrase of no given label: dropped
        return (result["boxes"].float().cpu().numpy()[found], result["scores"].float().cpu().numpy()[found], classes[found])


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
    todo = [stem for stem in images if records.get(keys[stem], {}).get("detection") != settings]
    tally = Tally("detect_objects")
    tally.skipped = len(images) - len(todo)
    print(f"detect_objects: {len(images)} images, {len(labels)} labels, {choice.name} ({choice.source}) on "
          f"{detector.device}, {tally.skipped} already done", flush=True)
    try:
        for stem in tqdm(todo, desc="detect", unit="img"):
            try:
                objects = detect_image(detector, read_rgb(images[stem]), box_threshold, text_threshold, nms_iou, max_objects)
                records[keys[stem]] = {"depth": f"{stem}.png", "caption": "", "objects": objects, "relations": [],
                                       "detection": settings}
                tally.done += 1
                tally.counts["objects"] += len(objects)
                tally.counts["empty"] += not objects
            except Exception as e:  # one bad image costs one image
                tally.fail_record(images[stem], e)
    finally:
        write_json(output_file, records)                 # what was found so far survives an interruption
    tally.summary(f"{tally.counts['objects']} objects, {tally.counts['empty']} images with none, wrote {output_file}")
    return tally.exit_code
