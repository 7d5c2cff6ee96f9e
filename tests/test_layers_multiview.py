"""Stages 1.2 and 1.3 against the layers and relations known by construction."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from batchkit.errors import UserError
from conftest import run_script
from dataengine.scenes import Box, intrinsics, render
from spacesgg.layers import aggregate_layers
from spacesgg.multiview import multiview_layers
from spacesgg.settings import GeometrySettings

VIEWS = ("front", "left", "right", "back")


def _stage12(dataset, out_dir, annotations=None, **kw):
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / "layers.json"
    code = aggregate_layers(annotations or dataset / "annotations.json", dataset / "depth_maps", dataset / "masks", out,
                            GeometrySettings(**kw))
    return code, json.loads(out.read_text())


def _stage13(dataset, layers_file, out_dir):
    out = out_dir / "mv.json"
    code = multiview_layers(layers_file, dataset / "point_clouds", dataset / "masks", out)
    return code, json.loads(out.read_text())


def _expected(dataset):
    return json.loads((dataset / "expected.json").read_text())["scenes"]


def _stem(key):
    return key.rsplit("/", 1)[1].rsplit(".", 1)[0]


def _as_sets(levels):
    return [sorted(level) for level in levels]


def test_depth_stats_and_layers_match_geometry(scenes_dir, tmp_path):
    code, out = _stage12(scenes_dir, tmp_path)
    assert code == 0
    expected = _expected(scenes_dir)
    source = json.loads((scenes_dir / "annotations.json").read_text())
    assert list(out) == list(source)
    for key, record in out.items():
        exp = expected[_stem(key)]
        assert _as_sets(record["levels"]) == _as_sets(exp["views"]["front"]["levels"])
        assert record["caption"] == source[key]["caption"] and record["relations"] == source[key]["relations"]
        boxes = [Box(b["oid"], b["label"], tuple(b["slot"]), tuple(b["center"]), tuple(b["size"])) for b in exp["boxes"]]
        depth, index, _ = render(boxes, intrinsics())
        for k, box in enumerate(boxes):
            stats = record["objects"][box.oid]["depth"]
            true = depth[index == k]
            assert stats["pixels"] == true.size
            near, median, far = np.percentile(true, [5, 50, 95])
            assert stats["near"] == pytest.approx(near, abs=1e-3)
            assert stats["median"] == pytest.approx(median, abs=1e-3)
            assert stats["far"] == pytest.approx(far, abs=1e-3)
            assert box.lo[2] - 1e-3 <= stats["near"] <= stats["far"] <= box.hi[2] + 1e-3


def test_multiview_levels_and_relations_match_ground_truth(scenes_dir, tmp_path):
    code, _ = _stage12(scenes_dir, tmp_path)
    code, out = _stage13(scenes_dir, tmp_path / "layers.json", tmp_path)
    assert code == 0
    expected = _expected(scenes_dir)
    checked = 0
    for key, record in out.items():
        exp = expected[_stem(key)]["views"]
        assert record["order_list"] == record["views"]["front"]["relations"]
        assert "levels" in record and all("depth" in o for o in record["objects"].values())  # stage 1.2 copied through
        for view in VIEWS:
            got = record["views"][view]
            assert _as_sets(got["levels"]) == _as_sets(exp[view]["levels"]), (key, view)
            for pair, rel in exp[view]["relations"].items():
                a, b = pair.split(">")
                assert got["relations"][pair] == [-r for r in got["relations"][f"{b}>{a}"]]
                for axis in range(3):
                    if rel[axis] != 0:
                        assert got["relations"][pair][axis] == rel[axis], (key, view, pair, axis)
                        checked += 1
    assert checked > 100


def test_view_conventions_on_a_known_layout(tmp_path):
    """Left view: the farther object is on the left; right view: on the right; back view mirrors x."""
    from spacesgg.multiview import view_relations
    near_left = np.array([[-1.0, 0.0, 2.0], [-0.8, 0.2, 2.2]])    # near, on the camera's left, lower (y down)
    far_right = np.array([[1.0, -0.6, 5.0], [1.2, -0.4, 5.2]])     # far, on the camera's right, higher
    pts = {"a": near_left, "b": far_right}
    views = view_relations(pts, np.median(np.concatenate([near_left, far_right]), axis=0))
    assert views["front"]["relations"]["a>b"] == [-1, 1, -1]       # a left of, below, in front of b
    assert views["left"]["relations"]["a>b"] == [1, 1, -1]          # viewer at -x: a (nearer the camera) is right, a in front
    assert views["right"]["relations"]["a>b"] == [-1, 1, 1]         # viewer at +x: a is left and behind b
    assert views["back"]["relations"]["a>b"] == [1, 1, 1]           # viewer behind: a is right and behind
    assert views["front"]["levels"] == [["a"], ["b"]] and views["back"]["levels"] == [["b"], ["a"]]


def test_legacy_annotation_form(scenes_dir, tmp_path):
    native = json.loads((scenes_dir / "annotations.json").read_text())
    legacy = {}
    for key, record in native.items():
        entry = {"caption_annotation": record["caption"], "depth": record["depth"]}
        for oid, obj in record["objects"].items():
            entry[oid] = [obj["label"], 0.93, obj["box"], obj["mask"]]
        legacy[key] = entry
    path = tmp_path / "legacy.json"
    path.write_text(json.dumps(legacy))
    code, out = _stage12(scenes_dir, tmp_path, annotations=path)
    assert code == 0
    code_native, ref = _stage12(scenes_dir, tmp_path / "native")
    for key in native:
        assert out[key]["levels"] == ref[key]["levels"]
        assert out[key]["caption"] == native[key]["caption"] and out[key]["caption_annotation"] == native[key]["caption"]
        for oid, obj in out[key]["objects"].items():
            assert obj["extra"] == [0.93] and obj["depth"] == ref[key]["objects"][oid]["depth"]
    code, mv = _stage13(scenes_dir, path, tmp_path)   # stage 1.3 reads the legacy form directly too
    assert code == 0 and all("views" in r for r in mv.values())


def test_path_rewrite_finds_images(scenes_copy, tmp_path):
    Image.open(scenes_copy / "images" / "scene_002.png").resize((320, 240)).save(scenes_copy / "images" / "scene_002.png")
    args = ["--depth-dir", scenes_copy / "depth_maps", "--mask-dir", scenes_copy / "masks", "--output-file", tmp_path / "o.json"]
    proc = run_script("layers_aggregation.py", "--input-file", scenes_copy / "annotations.json", *args)
    assert proc.returncode == 1 and "scene_002.png is 320x240 but its depth map is 640x480" in proc.stderr   # relative keys
    # keys of another machine, depth maps outside the dataset: found only through the prefix rewrite
    records = json.loads((scenes_copy / "annotations.json").read_text())
    (tmp_path / "legacy.json").write_text(json.dumps({f"/datasets/synthetic_scenes/{k}": r for k, r in records.items()}))
    shutil.copytree(scenes_copy / "depth_maps", tmp_path / "depth")
    args = ["--input-file", tmp_path / "legacy.json", "--depth-dir", tmp_path / "depth", *args[2:]]
    proc = run_script("layers_aggregation.py", *args)
    assert proc.returncode == 0 and "6 images were not found" in proc.stderr                          # not checked
    proc = run_script("layers_aggregation.py", *args, "--dataset-base", "/datasets/synthetic_scenes/images",
                      "--data-prefix", scenes_copy / "images")
    assert proc.returncode == 1 and "scene_002.png is 320x240 but its depth map is 640x480" in proc.stderr
    proc = run_script("layers_aggregation.py", *args, "--dataset-base", "/x")
    assert proc.returncode == 2 and "--data-prefix" in proc.stderr


def test_float_npy_depth(scenes_copy, tmp_path):
    records = json.loads((scenes_copy / "annotations.json").read_text())
    for record in records.values():
        d = np.asarray(Image.open(scenes_copy / "depth_maps" / record["depth"])).astype(np.float32) / 5000
        np.save(scenes_copy / "depth_maps" / record["depth"].replace(".png", ".npy"), d)
        record["depth"] = record["depth"].replace(".png", ".npy")
    (scenes_copy / "a.json").write_text(json.dumps(records))
    code, out = _stage12(scenes_copy, tmp_path, annotations=scenes_copy / "a.json")
    code_ref, ref = _stage12(scenes_copy, tmp_path / "ref")
    assert code == 0 and [r["levels"] for r in out.values()] == [r["levels"] for r in ref.values()]


def test_bad_records_are_reported_and_the_batch_goes_on(scenes_copy, tmp_path):
    records = json.loads((scenes_copy / "annotations.json").read_text())
    keys = list(records)
    masks = scenes_copy / "masks"
    r0 = records[keys[0]]["objects"]
    Image.fromarray(np.zeros((100, 100), np.uint8)).save(masks / r0["o0"]["mask"])           # wrong size
    Image.fromarray(np.zeros((480, 640), np.uint8)).save(masks / r0["o1"]["mask"])           # empty
    r0["o2"]["box"] = [600, 10, 700, 50]                                                     # outside the image
    r1 = records[keys[1]]
    sky = np.zeros((480, 640), np.uint8)
    sky[:5, :5] = 255                                                                        # the corner sees nothing: depth 0
    Image.fromarray(sky).save(masks / r1["objects"]["o0"]["mask"])
    r1["relations"] = [["o0", "next to", "o42"]]                                             # unknown object id
    records[keys[2]]["depth"] = "missing.png"                                                # missing depth map
    (scenes_copy / "bad.json").write_text(json.dumps(records))
    proc = run_script("layers_aggregation.py", "--input-file", scenes_copy / "bad.json", "--depth-dir",
                      scenes_copy / "depth_maps", "--mask-dir", masks, "--output-file", tmp_path / "o.json")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    err = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    want = [(keys[0], "object o0", "mask is 100x100"), (keys[0], "object o1", "mask is empty"),
            (keys[0], "object o2", "outside the 640x480 image"), (keys[1], "object o0", "no valid depth"),
            (keys[1], "unknown object id 'o42'"), (keys[2], "missing.png", "not found")]
    for needles in want:
        assert sum(all(n in line for n in needles) for line in err) == 1, (needles, err)
    assert len(err) == len(want)
    assert "5 done, 0 skipped, 6 failed" in proc.stdout
    out = json.loads((tmp_path / "o.json").read_text())
    assert "levels" not in out[keys[2]] and out[keys[2]] == records[keys[2]]
    assert all(o not in sum(out[keys[0]]["levels"], []) for o in ("o0", "o1", "o2"))
    assert sum(len(level) for level in out[keys[3]]["levels"]) == len(records[keys[3]]["objects"])


def test_malformed_json_and_missing_point_map(scenes_copy, tmp_path):
    (scenes_copy / "broken.json").write_text('{"a": {"objects": ')
    proc = run_script("layers_aggregation.py", "--input-file", scenes_copy / "broken.json", "--depth-dir", scenes_copy,
                      "--mask-dir", scenes_copy, "--output-file", tmp_path / "o.json")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "broken.json: malformed JSON at line 1" in proc.stderr
    (scenes_copy / "point_clouds" / "scene_004.npy").unlink()
    proc = run_script("multiview_layers.py", "--input-file", scenes_copy / "annotations.json", "--point-cloud-dir",
                      scenes_copy / "point_clouds", "--mask-dir", scenes_copy / "masks", "--output-file", tmp_path / "m.json")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "scene_004.npy not found; run d2p.py" in proc.stderr and "5 done, 0 skipped, 1 failed" in proc.stdout


def test_mask_erode_shrinks_masks_by_the_expected_pixels(scenes_dir, tmp_path):
    from spacesgg.annotations import erode
    mask = np.zeros((60, 80), bool)
    mask[10:30, 20:50] = True                                   # 20 x 30
    assert erode(mask, 3).sum() == 14 * 24 and erode(mask, 0).sum() == 600
    assert erode(mask, 3)[13:27, 23:47].all() and not erode(mask, 10).any()
    edge = np.zeros((60, 80), bool)
    edge[:10, :10] = True                                       # the image border erodes too
    assert erode(edge, 2).sum() == 6 * 6
    code, plain = _stage12(scenes_dir, tmp_path / "plain")
    code_eroded, eroded = _stage12(scenes_dir, tmp_path / "eroded", mask_erode=2)
    assert code == code_eroded == 0
    key = next(iter(eroded))
    record = eroded[key]
    depth = np.asarray(Image.open(scenes_dir / "depth_maps" / record["depth"])).astype(np.float32) / 5000
    for oid, obj in record["objects"].items():
        m = erode(np.asarray(Image.open(scenes_dir / "masks" / obj["mask"])) != 0, 2)
        assert obj["depth"]["pixels"] == int((depth[m] > 0).sum()) < plain[key]["objects"][oid]["depth"]["pixels"]
    mv = multiview_layers(tmp_path / "eroded" / "layers.json", scenes_dir / "point_clouds", scenes_dir / "masks",
                          tmp_path / "mv.json", GeometrySettings(mask_erode=2))
    assert mv == 0


def test_depth_dir_gives_the_same_relations_as_point_maps(scenes_dir, tmp_path):
    code, _ = _stage12(scenes_dir, tmp_path)
    assert code == 0
    from_points = _stage13(scenes_dir, tmp_path / "layers.json", tmp_path)[1]
    assert multiview_layers(tmp_path / "layers.json", None, scenes_dir / "masks", tmp_path / "mv_depth.json",
                            depth_dir=scenes_dir / "depth_maps") == 0
    assert json.loads((tmp_path / "mv_depth.json").read_text()) == from_points
    with pytest.raises(UserError, match="one of them"):
        multiview_layers(tmp_path / "layers.json", scenes_dir / "point_clouds", scenes_dir / "masks", tmp_path / "x.json",
                         depth_dir=scenes_dir / "depth_maps")


def test_d2p_outputs_only_what_is_asked(scenes_copy, tmp_path):
    from spacesgg.d2p import convert_dataset
    assert convert_dataset(scenes_copy, output_dir=tmp_path / "npy", outputs=("npy",)) == 0
    assert sorted({p.suffix for p in (tmp_path / "npy").iterdir() if not p.name.startswith(".")}) == [".npy"]
    assert convert_dataset(scenes_copy, output_dir=tmp_path / "npy", outputs=("ply", "npy")) == 0   # the PLYs follow
    assert len(list((tmp_path / "npy").glob("*.ply"))) == 6
