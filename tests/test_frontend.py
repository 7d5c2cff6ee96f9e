"""The real-image front end: COCO import, depth estimation, box-prompted masks, open-vocabulary boxes."""

import json
import os

import numpy as np
from PIL import Image
from pycocotools import mask as coco_mask

from batchkit.cli import run_cli
from dataengine import import_coco as import_coco_cli


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
