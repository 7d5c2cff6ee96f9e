"""Stage 1.1: point maps and PLY files against the exact synthetic geometry."""

import json

import numpy as np
import open3d as o3d
import pytest
from PIL import Image

from conftest import run_script
from dataengine import scenes as sc
from dataengine.scenes import make_scene, render
from spacesgg.camera import Intrinsics, load_poses
from spacesgg.d2p import convert_dataset
from spacesgg.ply import read_ply


def _boxes(scenes_dir, stem):
    from dataengine.scenes import Box
    expected = json.loads((scenes_dir / "expected.json").read_text())["scenes"][stem]
    return [Box(b["oid"], b["label"], tuple(b["slot"]), tuple(b["center"]), tuple(b["size"])) for b in expected["boxes"]]


def _exact_points(depth, intr):
    h, w = depth.shape
    u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    return np.stack([(u - intr.cx) / intr.fx * depth, (v - intr.cy) / intr.fy * depth, depth], axis=-1)


def test_point_map_matches_exact_geometry(scenes_dir):
    stems = sorted(p.stem for p in (scenes_dir / "images").iterdir())
    assert len(stems) == 6
    for stem in stems:
        boxes = _boxes(scenes_dir, stem)
        depth, index, _ = render(boxes, sc.intrinsics())
        exact = _exact_points(depth, sc.intrinsics())
        points = np.load(scenes_dir / "point_clouds" / f"{stem}.npy")
        assert points.dtype == np.float32 and points.shape == (480, 640, 3)
        valid = depth > 0
        assert np.array_equal(~np.isnan(points[..., 2]), valid)
        err = np.abs(points[valid] - exact[valid]).max()
        assert err < 1e-3, f"{stem}: max error {err * 1000:.3f} mm"
        # each box: pixels of the box lie on its surface (inside its extent, within quantisation)
        for k, box in enumerate(boxes):
            pts = points[index == k]
            assert (pts >= box.lo - 1e-3).all() and (pts <= box.hi + 1e-3).all()
            # the front face (z = lo_z) is what the camera sees nearest
            assert abs(np.nanmin(pts[:, 2]) - box.lo[2]) < 1e-3


def test_ply_is_binary_readable_by_open3d_with_all_valid_points(scenes_dir):
    stem = "scene_000"
    ply = scenes_dir / "point_clouds" / f"{stem}.ply"
    assert ply.read_bytes().startswith(b"ply\nformat binary_little_endian 1.0\n")
    points = np.load(scenes_dir / "point_clouds" / f"{stem}.npy")
    valid = ~np.isnan(points[..., 2])
    cloud = o3d.io.read_point_cloud(str(ply))
    assert len(cloud.points) == valid.sum()
    np.testing.assert_allclose(np.asarray(cloud.points), points[valid], atol=1e-6)
    rgb = np.asarray(Image.open(scenes_dir / "images" / f"{stem}.png"))
    np.testing.assert_allclose(np.asarray(cloud.colors) * 255, rgb[valid], atol=0.51)


def test_world_coordinates_apply_pose_to_ply_only(scenes_copy, tmp_path):
    out = tmp_path / "world"
    assert convert_dataset(scenes_copy, output_dir=out, world_coordinates=True, workers=2) == 0
    stems = sorted(p.stem for p in (scenes_copy / "images").iterdir())
    poses = load_poses(scenes_copy / "poses.txt", len(stems))
    for stem, pose in zip(stems, poses):
        camera = np.load(scenes_copy / "point_clouds" / f"{stem}.npy")
        assert np.array_equal(np.load(out / f"{stem}.npy"), camera, equal_nan=True)
        xyz, _ = read_ply(out / f"{stem}.ply")
        cam = camera[~np.isnan(camera[..., 2])].astype(np.float64)
        expected = cam @ pose[:3, :3].T + pose[:3, 3]
        np.testing.assert_allclose(xyz, expected, atol=1e-4)
        assert not np.allclose(xyz, cam, atol=1e-2)


def test_fov_intrinsics_and_max_depth(scenes_copy, tmp_path):
    (scenes_copy / "K.txt").unlink()
    out = tmp_path / "fov"
    assert convert_dataset(scenes_copy, output_dir=out, fov=90.0, max_depth=6.5) == 0
    points = np.load(out / "scene_000.npy")
    depth = np.asarray(Image.open(scenes_copy / "depth_maps" / "scene_000.png")).astype(np.float64) / 5000
    intr = Intrinsics.from_fov(640, 480, 90.0)
    assert intr.fx == pytest.approx(320.0) and intr.cx == pytest.approx(319.5) and intr.cy == pytest.approx(239.5)
    keep = (depth > 0) & (depth <= 6.5)
    assert np.array_equal(~np.isnan(points[..., 2]), keep)
    assert not keep[depth == 7.0].any()   # the back wall at 7 m is beyond --max-depth
    exact = _exact_points(depth, intr)
    np.testing.assert_allclose(points[keep], exact[keep], atol=1e-5)


def test_intrinsics_per_image_then_k_then_fov_per_width(scenes_copy, tmp_path, capsys):
    """intrinsics.json wins for the images it names, K.txt serves the rest; without K.txt, --fov per image width."""
    depth0 = np.asarray(Image.open(scenes_copy / "depth_maps" / "scene_000.png")).astype(np.float64) / 5000
    per_image = Intrinsics(fx=600.0, fy=610.0, cx=300.0, cy=250.0)
    (scenes_copy / "intrinsics.json").write_text(json.dumps({"scene_000": [600, 610, 300, 250]}))
    out = tmp_path / "a"
    assert convert_dataset(scenes_copy, output_dir=out) == 0
    assert "1 from intrinsics.json, 5 from K.txt" in capsys.readouterr().out
    keep = depth0 > 0
    np.testing.assert_allclose(np.load(out / "scene_000.npy")[keep], _exact_points(depth0, per_image)[keep], atol=1e-5)
    depth1 = np.asarray(Image.open(scenes_copy / "depth_maps" / "scene_001.png")).astype(np.float64) / 5000
    keep1 = depth1 > 0
    np.testing.assert_allclose(np.load(out / "scene_001.npy")[keep1], _exact_points(depth1, sc.intrinsics())[keep1],
                               atol=1e-5)
    # no K.txt: --fov from each image's own width (a half-size image gets half the focal length)
    (scenes_copy / "K.txt").unlink()
    for sub in ("images", "depth_maps"):
        im = Image.open(scenes_copy / sub / "scene_002.png")
        im.resize((320, 240), Image.NEAREST).save(scenes_copy / sub / "scene_002.png")
    assert convert_dataset(scenes_copy, output_dir=tmp_path / "b", fov=90.0) == 0
    small = np.load(tmp_path / "b" / "scene_002.npy")
    d2 = np.asarray(Image.open(scenes_copy / "depth_maps" / "scene_002.png")).astype(np.float64) / 5000
    keep2 = d2 > 0
    np.testing.assert_allclose(small[keep2], _exact_points(d2, Intrinsics.from_fov(320, 240, 90.0))[keep2], atol=1e-5)
    # a bad entry costs its image only
    (scenes_copy / "intrinsics.json").write_text(json.dumps({"scene_000": [600, "nan", 300, 250], "scene_001": [1, 2]}))
    assert convert_dataset(scenes_copy, output_dir=tmp_path / "c") == 1
    assert sorted(p.stem for p in (tmp_path / "c").glob("*.npy")) == ["scene_002", "scene_003", "scene_004", "scene_005"]


def test_rerun_skips_finished_images_and_parallel_equals_serial(scenes_copy, tmp_path, capsys):
    assert np.load(scenes_copy / "point_clouds" / "scene_000.npy")[150, 100, 2] == pytest.approx(7.0)   # the back wall
    assert convert_dataset(scenes_copy, workers=2) == 0
    assert "0 done, 6 skipped" in capsys.readouterr().out
    assert convert_dataset(scenes_copy, max_depth=6.5) == 0                  # other settings: everything is redone
    assert "6 done, 0 skipped" in capsys.readouterr().out
    assert np.isnan(np.load(scenes_copy / "point_clouds" / "scene_000.npy")[150, 100, 2])   # the wall (7 m) is now cut
    assert convert_dataset(scenes_copy) == 0
    assert "6 done, 0 skipped" in capsys.readouterr().out
    out = tmp_path / "serial"
    assert convert_dataset(scenes_copy, output_dir=out, workers=1) == 0
    for stem in ("scene_000", "scene_005"):
        assert (out / f"{stem}.ply").read_bytes() == (scenes_copy / "point_clouds" / f"{stem}.ply").read_bytes()


# ---- bad input: one clear line naming the file, batch goes on, non-zero exit

def _one_error_line(proc, *needles):
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors, proc.stderr
    assert any(all(n in line for n in needles) for line in errors), errors
    return errors


def test_missing_dataset_folder(tmp_path):
    proc = run_script("d2p.py", "--dataset-path", tmp_path / "nope")
    assert proc.returncode == 2
    _one_error_line(proc, "nope", "not found")


def test_k_txt_wrong_count(scenes_copy):
    (scenes_copy / "K.txt").write_text("525 0 319.5 0 525 239.5 0 0\n")
    proc = run_script("d2p.py", "--dataset-path", scenes_copy, "--overwrite")
    assert proc.returncode == 2
    _one_error_line(proc, "K.txt", "expected 9 numbers", "found 8")


def test_poses_fewer_than_images(scenes_copy):
    lines = (scenes_copy / "poses.txt").read_text().splitlines()
    (scenes_copy / "poses.txt").write_text("\n".join(lines[:4]) + "\n")
    proc = run_script("d2p.py", "--dataset-path", scenes_copy, "--world-coordinates")
    assert proc.returncode == 2
    _one_error_line(proc, "poses.txt", "4 poses for 6 images")


def test_bad_images_are_reported_and_the_rest_converted(scenes_copy, tmp_path):
    depth_dir, image_dir = scenes_copy / "depth_maps", scenes_copy / "images"
    d8 = (np.asarray(Image.open(depth_dir / "scene_001.png")) // 256).astype(np.uint8)
    Image.fromarray(d8).save(depth_dir / "scene_001.png")                       # 8-bit depth
    Image.open(image_dir / "scene_002.png").resize((320, 240)).save(image_dir / "scene_002.png")  # size mismatch
    (depth_dir / "scene_003.png").unlink()                                      # image without depth
    Image.fromarray(np.zeros((480, 640), np.uint16)).save(depth_dir / "extra.png")  # depth without image
    out = tmp_path / "pc"
    proc = run_script("d2p.py", "--dataset-path", scenes_copy, "--output-dir", out, "--workers", "2")
    assert proc.returncode == 1
    _one_error_line(proc, "scene_001.png", "16-bit")
    _one_error_line(proc, "scene_002", "320x240", "640x480")
    _one_error_line(proc, "scene_003", "no depth map")
    _one_error_line(proc, "extra.png", "no image")
    assert "3 done, 0 skipped, 4 failed" in proc.stdout
    assert sorted(p.name for p in out.glob("scene_*")) == ["scene_000.npy", "scene_000.ply", "scene_004.npy", "scene_004.ply",
                                                     "scene_005.npy", "scene_005.ply"]


def test_make_scenes_is_deterministic(tmp_path):
    a = sc.write_dataset(tmp_path / "a", n_scenes=2, seed=3)
    b = sc.write_dataset(tmp_path / "b", n_scenes=2, seed=3)
    for rel in ("images/scene_001.png", "depth_maps/scene_001.png", "annotations.json", "expected.json", "poses.txt"):
        assert (a / rel).read_bytes() == (b / rel).read_bytes()
    boxes = make_scene(np.random.default_rng(0), 9)
    assert len({b.slot for b in boxes}) == 9


def test_make_scenes_rerun_leaves_a_current_dataset_alone(tmp_path):
    out = tmp_path / "scenes"
    assert run_script("dataengine/make_scenes.py", "--output-dir", out, "--scenes", "2").returncode == 0
    image = out / "images" / "scene_001.png"
    stamp = image.stat().st_mtime_ns
    again = run_script("dataengine/make_scenes.py", "--output-dir", out, "--scenes", "2")
    assert again.returncode == 0 and "0 scenes written, 2 skipped" in again.stdout
    assert image.stat().st_mtime_ns == stamp                # untouched, so d2p's rerun has nothing to redo
    other = run_script("dataengine/make_scenes.py", "--output-dir", out, "--scenes", "2", "--seed", "5")
    assert other.returncode == 0 and "2 scenes written" in other.stdout
    assert image.stat().st_mtime_ns != stamp
    assert json.loads((out / "expected.json").read_text())["settings"]["seed"] == 5
