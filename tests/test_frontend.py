"""The real-image front end: COCO import, depth estimation, box-prompted masks, open-vocabulary boxes."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as coco_mask

from batchkit.cli import run_cli
from dataengine import detect_objects as detect_cli
from dataengine import estimate_depth as estimate_depth_cli
from dataengine import import_coco as import_coco_cli
from dataengine import segment_objects as segment_cli
from dataengine.models import DEPTH_FAMILIES


def cli(module, *args):
    try:
        return run_cli(module.main, module.build_parser(), [str(a) for a in args])
    except SystemExit as e:
        return e.code


def test_coco_polygons_and_rle_decode_to_the_right_pixels(tmp_path, capsys):
    images = tmp_path / "val"
    images.mkdir()
    Image.new("RGB", (40, 30), (10, 20, 30)).save(images / "a.jpg")
    Image.new("RGB", (40, 30)).save(images / "c.jpg")
    known = np.zeros((30, 40), np.uint8, order="F")
    known[3:9, 30:37] = 1                                                   # 6 x 7 = 42 pixels
    compressed = coco_mask.encode(known)
    compressed["counts"] = compressed["counts"].decode("ascii")
    instances = {
        "categories": [{"id": 1, "name": "cup"}, {"id": 2, "name": "dog"}],
        "images": [{"id": 1, "file_name": "a.jpg", "width": 40, "height": 30},
                   {"id": 2, "file_name": "b.jpg", "width": 40, "height": 30},         # not on disk
                   {"id": 3, "file_name": "c.jpg", "width": 40, "height": 30}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 100, "bbox": [10, 10, 10, 10],
             "segmentation": [[10, 10, 20, 10, 20, 20, 10, 20]]},                  # polygon: 100 pixels
            {"id": 11, "image_id": 1, "category_id": 2, "iscrowd": 0, "area": 5, "bbox": [1, 5, 1, 5],
             "segmentation": {"size": [30, 40], "counts": [35, 5, 1160]}},        # uncompressed RLE: 5 pixels
            {"id": 12, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 42, "bbox": [30, 3, 7, 6],
             "segmentation": compressed},                                         # compressed RLE: 42 pixels
            {"id": 13, "image_id": 1, "category_id": 2, "iscrowd": 1, "area": 300, "bbox": [0, 0, 20, 15],
             "segmentation": {"size": [30, 40], "counts": [0, 300, 900]}},        # crowd: skipped
            {"id": 14, "image_id": 2, "category_id": 1, "iscrowd": 0, "area": 100, "bbox": [0, 0, 10, 10],
             "segmentation": [[0, 0, 10, 0, 10, 10, 0, 10]]},
            {"id": 15, "image_id": 3, "category_id": 1, "iscrowd": 0, "area": 100, "bbox": [0, 0, 10, 10],
             "segmentation": [[0, 0, 10, 0, 10, 10, 0, 10]]}]}
    (tmp_path / "instances.json").write_text(json.dumps(instances))
    (tmp_path / "captions.json").write_text(json.dumps({"annotations": [{"image_id": 1, "caption": " A cup. "}]}))
    out = tmp_path / "ds"
    code = cli(import_coco_cli, "--instances", tmp_path / "instances.json", "--captions", tmp_path / "captions.json",
               "--image-dir", images, "--output-dir", out, "--min-area", 4)
    err = capsys.readouterr().err
    assert code == 1 and sum(line.startswith("error:") and "b.jpg" in line for line in err.splitlines()) == 1
    records = json.loads((out / "annotations.json").read_text())
    key = str(out.resolve() / "images" / "a.jpg")
    assert sorted(records) == sorted([key, str(out.resolve() / "images" / "c.jpg")])
    assert os.path.islink(out / "images" / "a.jpg") and os.path.realpath(out / "images" / "a.jpg") == str((images / "a.jpg").resolve())
    record = records[key]
    assert record["caption"] == "A cup." and record["depth"] == "a.png"
    pixels = {o["coco_id"]: int((np.asarray(Image.open(out / "masks" / o["mask"])) > 0).sum()) for o in record["objects"].values()}
    assert pixels == {10: 100, 11: 5, 12: 42}                            # the crowd annotation is not there
    cup = next(o for o in record["objects"].values() if o["coco_id"] == 10)
    assert cup["label"] == "cup" and cup["box"] == [10, 10, 20, 20]
    mask = np.asarray(Image.open(out / "masks" / cup["mask"])) > 0
    assert mask[10:20, 10:20].all() and mask.sum() == 100
    # --min-area and --categories
    assert cli(import_coco_cli, "--instances", tmp_path / "instances.json", "--image-dir", images, "--output-dir",
               tmp_path / "ds2", "--min-area", 50, "--categories", "cup", "--limit", 1) == 0
    only = json.loads((tmp_path / "ds2" / "annotations.json").read_text())
    assert [sorted(o["coco_id"] for o in r["objects"].values()) for r in only.values()] == [[10]]
    assert cli(import_coco_cli, "--instances", tmp_path / "instances.json", "--image-dir", images, "--output-dir",
               tmp_path / "ds3", "--categories", "unicorn") == 2


# ---- metric depth ---------------------------------------------------------------------------------------------------

def _photos(root, sizes=((64, 48), (64, 48), (40, 30))):
    images = root / "images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k, (w, h) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(images / f"p{k}.jpg" if k % 2 else images / f"p{k}.png")
    return root


def _own_prediction(model_dir, image_path):
    """The model's own post-processed depth of one image, run the plain transformers way."""
    import transformers
    config = transformers.AutoConfig.from_pretrained(model_dir)
    cls = getattr(transformers, DEPTH_FAMILIES[config.model_type])
    model = cls.from_pretrained(model_dir).eval()
    processor = transformers.AutoProcessor.from_pretrained(model_dir)
    image = np.asarray(Image.open(image_path).convert("RGB"))
    with torch.no_grad():
        outputs = model(**processor(images=[image], return_tensors="pt"))
    size = [image.shape[:2]]
    extra = {"source_sizes": size} if config.model_type == "zoedepth" else {}
    return processor.post_process_depth_estimation(outputs, target_sizes=size, **extra)[0]


@pytest.mark.parametrize("family", ["depth_anything", "depth_pro", "zoedepth"])
def test_depth_png_is_the_models_own_prediction_batched_or_not(family, tiny_frontend, tmp_path, capsys):
    dataset = _photos(tmp_path / "ds")
    assert cli(estimate_depth_cli, "--dataset-path", dataset, "--model", tiny_frontend[family], "--batch-size", 2,
               "--scale-factor", 1000, "--device", "cpu") == 0
    one = _photos(tmp_path / "one")
    assert cli(estimate_depth_cli, "--dataset-path", one, "--model", tiny_frontend[family], "--batch-size", 1,
               "--scale-factor", 1000, "--device", "cpu") == 0
    for image in sorted((dataset / "images").iterdir()):
        png = np.asarray(Image.open(dataset / "depth_maps" / f"{image.stem}.png"))
        w, h = Image.open(image).size
        assert png.dtype == np.uint16 and png.shape == (h, w)
        own = _own_prediction(tiny_frontend[family], image)
        want = own["predicted_depth"].numpy()
        valid = png > 0
        assert valid.mean() > 0.5
        np.testing.assert_allclose(png[valid] / 1000, want[valid], atol=1 / 1000)           # one quantisation step
        single = np.asarray(Image.open(one / "depth_maps" / f"{image.stem}.png")).astype(int)
        assert np.abs(single - png.astype(int)).max() <= 1                                   # batched == one by one
        if family == "depth_pro":
            fx, fy, cx, cy = json.loads((dataset / "intrinsics.json").read_text())[image.stem]
            assert fx == fy == pytest.approx(float(own["focal_length"]), rel=1e-5)
            assert (cx, cy) == ((w - 1) / 2, (h - 1) / 2)
    assert (family == "depth_pro") == (dataset / "intrinsics.json").is_file()
    settings = json.loads((dataset / "depth_maps" / "depth_settings.json").read_text())
    assert settings["snapshot"] == str(tiny_frontend[family].resolve()) and settings["scale_factor"] == 1000


def test_depth_invalid_values_resume_and_bad_input(tiny_frontend, tmp_path, capsys):
    model = tiny_frontend["depth_anything"]                        # random weights: about 10 m everywhere
    dataset = _photos(tmp_path / "ds")
    assert cli(estimate_depth_cli, "--dataset-path", dataset, "--model", model, "--max-depth", 5, "--device", "cpu") == 0
    assert not any(np.asarray(Image.open(p)).any() for p in (dataset / "depth_maps").glob("*.png"))
    assert "pixels set to 0" in capsys.readouterr().out
    stamps = {p.name: p.stat().st_mtime_ns for p in (dataset / "depth_maps").glob("*.png")}
    assert cli(estimate_depth_cli, "--dataset-path", dataset, "--model", model, "--max-depth", 5, "--device", "cpu") == 0
    assert {p.name: p.stat().st_mtime_ns for p in (dataset / "depth_maps").glob("*.png")} == stamps   # resumed
    assert cli(estimate_depth_cli, "--dataset-path", dataset, "--model", model, "--device", "cpu") == 0   # other settings
    assert all(np.asarray(Image.open(p)).any() for p in (dataset / "depth_maps").glob("*.png"))
    # 16 bits at scale 5000 hold 13.1 m: a 20 m model output at scale 10000 would overflow, and becomes 0
    (dataset / "images" / "p1.jpg").write_bytes(b"")                 # an unreadable image costs that image
    capsys.readouterr()
    code = cli(estimate_depth_cli, "--dataset-path", dataset, "--model", model, "--device", "cpu", "--overwrite")
    err = capsys.readouterr().err
    assert code == 1 and sum(line.startswith("error:") for line in err.splitlines()) == 1 and "p1.jpg" in err
    for bad, needle in ((tiny_frontend["depth_anything_relative"], "relative-depth"), ("midas-large", "neither a known"),
                        (tmp_path / "nowhere", "neither a known")):
        code = cli(estimate_depth_cli, "--dataset-path", dataset, "--model", bad)
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
        assert code == 2 and len(errors) == 1 and needle in errors[0], errors
    qwen = tmp_path / "qwen"
    qwen.mkdir()
    (qwen / "config.json").write_text(json.dumps({"model_type": "qwen2_vl"}))
    assert cli(estimate_depth_cli, "--dataset-path", dataset, "--model", qwen) == 2
    assert "registry does not hold" in capsys.readouterr().err


# ---- box-prompted masks ---------------------------------------------------------------------------------------------

def _boxed_dataset(root):
    dataset = _photos(root, sizes=((64, 48), (40, 30)))
    records = {str(dataset / "images" / "p0.png"): {"caption": "", "objects": {
                   "o0": {"label": "cup", "box": [5, 5, 30, 30]},
                   "o1": {"label": "dog", "box": [20, 10, 60, 40]},
                   "o2": {"label": "kept", "box": [1, 1, 9, 9], "mask": "given.png"}}},
               "/elsewhere/p1.jpg": {"caption": "", "objects": {                      # found in DATASET/images
                   "o0": {"label": "cat", "box": [2, 2, 38, 28]},
                   "o1": {"label": "bad", "box": [30, 20, 90, 90]}}}}                   # outside the 40 x 30 image
    (dataset / "a.json").write_text(json.dumps(records))
    return dataset


@pytest.mark.parametrize("family", ["sam", "sam_hq", "sam2"])
def test_masks_are_the_models_best_per_box_each_box_once(family, tiny_frontend, tmp_path, monkeypatch, capsys):
    from dataengine.segment import Segmenter
    dataset = _boxed_dataset(tmp_path / "ds")
    prompted, real = [], Segmenter.masks

    def counting(self, image, boxes):
        prompted.append(len(boxes))
        return real(self, image, boxes)
    monkeypatch.setattr(Segmenter, "masks", counting)
    code = cli(segment_cli, "--dataset-path", dataset, "--input-file", dataset / "a.json", "--output-file",
               dataset / "b.json", "--model", tiny_frontend[family], "--device", "cpu")
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 1 and len(errors) == 1 and "o1" in errors[0] and "outside" in errors[0]
    assert prompted == [2, 1]                        # each image's boxes in one prompt; the bad box is never asked
    out = json.loads((dataset / "b.json").read_text())
    assert out["/elsewhere/p1.jpg"]["objects"]["o0"]["mask"] == "p1_o0.png" and "mask" not in out["/elsewhere/p1.jpg"]["objects"]["o1"]
    first = out[str(dataset / "images" / "p0.png")]["objects"]
    assert first["o2"]["mask"] == "given.png" and "mask_score" not in first["o2"]
    for oid in ("o0", "o1"):
        mask = np.asarray(Image.open(dataset / "masks" / first[oid]["mask"]))
        assert first[oid]["mask"] == f"p0_{oid}.png" and mask.shape == (48, 64) and set(np.unique(mask)) <= {0, 255}
    # the model's own mask for box o0, computed the plain transformers way: one mask per box prompt, as SAM's
    # predictor gives for boxes (and with --multimask-output the best of three by the model's IoU estimate)
    import transformers
    model = getattr(transformers, {"sam": "SamModel", "sam_hq": "SamHQModel", "sam2": "Sam2Model"}[family]).from_pretrained(
        tiny_frontend[family]).eval()
    processor = transformers.AutoProcessor.from_pretrained(tiny_frontend[family])
    image = np.asarray(Image.open(dataset / "images" / "p0.png").convert("RGB"))
    inputs = processor(images=[image], input_boxes=[[[5.0, 5.0, 30.0, 30.0]]], return_tensors="pt")
    extra = [] if family == "sam2" else [inputs["reshaped_input_sizes"]]
    for multimask in (False, True):
        with torch.no_grad():
            outputs = model(**inputs, multimask_output=multimask)
        candidates = processor.post_process_masks(outputs.pred_masks, inputs["original_sizes"], *extra)[0][0]
        best = candidates[int(outputs.iou_scores[0, 0].argmax())].numpy()
        if multimask:
            assert cli(segment_cli, "--dataset-path", dataset, "--input-file", dataset / "a.json", "--output-file",
                       dataset / "c.json", "--model", tiny_frontend[family], "--device", "cpu", "--mask-dir",
                       dataset / "multi", "--multimask-output") == 1
            first = json.loads((dataset / "c.json").read_text())[str(dataset / "images" / "p0.png")]["objects"]
        mask_dir = dataset / ("multi" if multimask else "masks")
        assert np.array_equal(np.asarray(Image.open(mask_dir / "p0_o0.png")) > 0, best)
        assert first["o0"]["mask_score"] == pytest.approx(float(outputs.iou_scores[0, 0].max()), abs=1e-4)
        assert first["o0"]["mask_from"]["box"] == [5, 5, 30, 30] and first["o0"]["mask_from"]["multimask"] == multimask
    # a rerun reuses the masks made with these settings
    prompted.clear()
    stamp = (dataset / "masks" / "p0_o0.png").stat().st_mtime_ns
    cli(segment_cli, "--dataset-path", dataset, "--input-file", dataset / "a.json", "--output-file", dataset / "b.json",
        "--model", tiny_frontend[family], "--device", "cpu")
    assert prompted == [] and (dataset / "masks" / "p0_o0.png").stat().st_mtime_ns == stamp


# ---- open-vocabulary boxes ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("family", ["grounding_dino", "owlv2"])
def test_detection_boxes_labels_thresholds_and_resume(family, tiny_frontend, tmp_path, monkeypatch, capsys):
    from dataengine.detect import Detector
    dataset = _photos(tmp_path / "ds", sizes=((64, 48), (40, 30)))
    out = dataset / "annotations.json"
    args = ("--dataset-path", dataset, "--output-file", out, "--model", tiny_frontend[family], "--labels", "chair, lamp",
            "--box-threshold", 0.2, "--text-threshold", 0.1, "--max-objects", 5, "--device", "cpu")
    assert cli(detect_cli, *args) == 0
    records = json.loads(out.read_text())
    assert sorted(records) == sorted(str((dataset / "images").resolve() / p.name) for p in (dataset / "images").iterdir())
    found = 0
    for key, record in records.items():
        w, h = Image.open(key).size
        assert record["caption"] == "" and record["depth"] == f"{Path(key).stem}.png" and len(record["objects"]) <= 5
        for obj in record["objects"].values():
            x0, y0, x1, y1 = obj["box"]
            assert obj["label"] in ("chair", "lamp") and obj["score"] > 0.2
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
            found += 1
    assert found > 0
    calls = []
    monkeypatch.setattr(Detector, "detect", lambda *a: calls.append(a) or (_ for _ in ()).throw(AssertionError))
    assert cli(detect_cli, *args) == 0 and calls == []                   # the same settings again: nothing asked
    assert json.loads(out.read_text()) == records


def test_nms_and_detection_bad_input(tiny_frontend, tmp_path, capsys):
    from dataengine.detect import detect_image, nms
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    assert nms(boxes, scores, np.array([0, 0, 1, 0]), 0.5) == [0, 2, 3]     # the same-label duplicate goes

    class Fake:
        labels = ["chair", "lamp"]

        def detect(self, image, box_threshold, text_threshold):
            return boxes + [[0, 0, 50, 0]], scores, np.array([0, 0, 1, 0])
    objects = detect_image(Fake(), np.zeros((30, 40, 3), np.uint8), 0.65, 0.25, 0.5, 10)
    assert [(o["label"], o["box"]) for o in objects.values()] == [("chair", [0.0, 0.0, 40.0, 10.0]), ("lamp", [0.0, 0.0, 40.0, 10.0])]
    dataset = _photos(tmp_path / "ds", sizes=((64, 48),))
    for labels, needle in ((" , ,", "empty"), ("cup. dog", "'.'"), ("<b>", "'<'")):
        code = cli(detect_cli, "--dataset-path", dataset, "--output-file", dataset / "a.json", "--model",
                   tiny_frontend["owlv2"], "--labels", labels)
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
        assert code == 2 and len(errors) == 1 and needle in errors[0], errors
    for model, needle in (("yolo-v8", "neither a known"), (tiny_frontend["sam"], "registry does not hold")):
        code = cli(detect_cli, "--dataset-path", dataset, "--output-file", dataset / "a.json", "--model", model,
                   "--labels", "cup")
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
        assert code == 2 and len(errors) == 1 and needle in errors[0], errors
