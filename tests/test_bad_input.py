"""Hostile input, table-driven: every case gets its exit code and one `error:` line naming the record or file;
good records are still in the output; nothing is written outside the output folder; JSON stays strict."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import d2p as d2p_cli
import layers_aggregation as layers_cli
import llm_based_query as llm_cli
import multiview_layers as multiview_cli
from batchkit.cli import run_cli
from batchkit.errors import UserError
from conftest import ROOT
from dataengine import make_grid_data as grid_cli
from dataengine.grid import make_objects, tile_pair
from spacesgg.backends import retry_after_seconds
from spacesgg.prompt_functions import PROMPT_FUNCTIONS, check_reply
from spacesgg.spatial import order
from spacesgg.stub_server import StubServer
from spatial_id import average_id as average_cli
from spatial_id import compute_id as compute_id_cli
from spatial_id.figure import explained_by_layer, projection
from spatial_id.ids import save_pt

KEY = "sk-test-SECRET-77c1"


def cli(module, *args):
    """Run a script's main in-process as its command line would; the exit code."""
    try:
        return run_cli(module.main, module.build_parser(), [str(a) for a in args])
    except SystemExit as e:                 # argparse refusing a flag
        return e.code


def error_lines(capsys):
    captured = capsys.readouterr()
    return [line for line in captured.err.splitlines() if line.startswith("error:")], captured


def strict_json(path):
    def refuse(token):
        raise AssertionError(f"{path} holds {token}")
    return json.loads(Path(path).read_text(encoding="utf-8"), parse_constant=refuse)


def linked_copy(src, dst):
    """A folder of symbolic links to `src`'s files, where a case may add or replace files."""
    dst.mkdir(parents=True)
    for f in src.iterdir():
        (dst / f.name).symlink_to(f)
    return dst


# ---- stages 1.2 and 1.3: one bad record or object costs that record or object ------------------------------------

def _first_object(records, key):
    return next(iter(records[key]["objects"]))


def _set_object(field, value):
    def mutate(records, key, folders):
        records[key]["objects"][_first_object(records, key)][field] = value
    return mutate


def _replace_file(kind, content):
    """The record's depth map (kind "depth") or first mask (kind "mask") replaced by `content` bytes."""
    def mutate(records, key, folders):
        record = records[key]
        name = record["depth"] if kind == "depth" else record["objects"][_first_object(records, key)]["mask"]
        target = folders[kind] / name
        data = content((folders["src_" + kind] / name).read_bytes())
        target.unlink()
        target.write_bytes(data)
    return mutate


def _set_record(value):
    def mutate(records, key, folders):
        records[key] = value
    return mutate


def _set_field(field, value):
    def mutate(records, key, folders):
        records[key][field] = value
    return mutate


def _bad_key(records, key, folders):
    records["\ud800bad-key.png"] = records.pop(key)


def _odd_size_image(records, key, folders):
    (folders["images"] / Path(key).name).unlink()                # a link to the shared fixture: replace, not write
    Image.new("RGB", (320, 240)).save(folders["images"] / Path(key).name)


# (case, mutation, "record" or "object": what the one error costs)
RECORD_CASES = [
    ("record is a list", _set_record([1, 2]), "record"),
    ("record is null", _set_record(None), "record"),
    ("objects is null", _set_field("objects", None), "record"),
    ("relations is text", _set_field("relations", "o0 on o1"), "relations"),
    ("relation names null", _set_field("relations", [[None, "on", "o0"]]), "relations"),
    ("key is not valid text", _bad_key, "record"),
    ("mask is null", _set_object("mask", None), "object"),
    ("mask is a number", _set_object("mask", 7), "object"),
    ("mask is an absolute path", _set_object("mask", "/etc/hostname"), "object"),
    ("mask climbs out with ..", _set_object("mask", "../depth_maps/scene_000.png"), "object"),
    ("box is text", _set_object("box", "10 20 30 40"), "object"),
    ("box is null", _set_object("box", None), "object"),
    ("box holds NaN", _set_object("box", [float("nan"), 1, 20, 30]), "object"),
    ("label is null", _set_object("label", None), "object"),
    ("label is empty", _set_object("label", "  "), "object"),
    ("label holds a tag", _set_object("label", "<ref>cup"), "object"),
    ("label is a number", _set_object("label", 42), "object"),
    ("depth climbs out with ..", _set_field("depth", "../masks/x.png"), "record"),
    ("depth is absolute", _set_field("depth", "/etc/hostname"), "record"),
    ("depth map is 0 bytes", _replace_file("depth", lambda data: b""), "record"),
    ("depth map is truncated", _replace_file("depth", lambda data: data[: len(data) // 3]), "record"),
    ("mask is 0 bytes", _replace_file("mask", lambda data: b""), "object"),
    ("mask is truncated", _replace_file("mask", lambda data: data[:60]), "object"),
    ("image size differs from the depth map", _odd_size_image, "record"),
]


@pytest.fixture
def folders(scenes_dir, tmp_path):
    out = {"src_depth": scenes_dir / "depth_maps", "src_mask": scenes_dir / "masks"}
    out["depth"] = linked_copy(scenes_dir / "depth_maps", tmp_path / "depth_maps")
    out["mask"] = linked_copy(scenes_dir / "masks", tmp_path / "masks")
    out["images"] = linked_copy(scenes_dir / "images", tmp_path / "images")
    return out


@pytest.mark.parametrize("case,mutate,costs", RECORD_CASES, ids=[c[0] for c in RECORD_CASES])
def test_stage12_and_13_one_bad_record(case, mutate, costs, scenes_dir, folders, tmp_path, capsys):
    records = json.loads((scenes_dir / "annotations.json").read_text())
    keys = list(records)
    key = keys[1]
    mutate(records, key, folders)
    annotations = tmp_path / "a.json"
    annotations.write_text(json.dumps(records))                   # NaN goes in as the JSON token NaN
    out = tmp_path / "out" / "layers.json"
    code = cli(layers_cli, "--input-file", annotations, "--depth-dir", folders["depth"], "--mask-dir", folders["mask"],
               "--output-file", out)
    errors, captured = error_lines(capsys)
    assert code == 1 and len(errors) == 1, captured.err
    assert "Traceback" not in captured.err
    named = "bad-key" if case == "key is not valid text" else key
    assert named in errors[0], errors
    layers = strict_json(out)
    for good in keys[:1] + keys[2:]:                                # every other record is complete
        assert sorted(sum(layers[good]["levels"], [])) == sorted(records[good]["objects"])
    if costs == "object":
        bad = _first_object(records, key)
        assert bad not in sum(layers[key]["levels"], []) and len(sum(layers[key]["levels"], [])) == len(records[key]["objects"]) - 1
    elif costs == "record" and isinstance(layers.get(key), dict):
        assert "levels" not in layers[key]
    # stage 1.3 on that output: what stage 1.2 rejected stays out, and nothing fails twice
    mv = tmp_path / "out" / "mv.json"
    code = cli(multiview_cli, "--input-file", out, "--point-cloud-dir", scenes_dir / "point_clouds", "--mask-dir",
               folders["mask"], "--output-file", mv)
    errors, captured = error_lines(capsys)
    assert code == 0 and not errors, captured.err
    views = strict_json(mv)
    for record in views.values():
        if not isinstance(record, dict) or "levels" not in record:
            assert not isinstance(record, dict) or "views" not in record
            continue
        kept = set(sum(record["levels"], []))
        for view in record["views"].values():
            assert set(sum(view["levels"], [])) == kept
            assert {o for pair in view["relations"] for o in pair.split(">")} <= kept


@pytest.mark.parametrize("content,needle", [
    (b"\xff\xfe{\x00}\x00", "not UTF-8"),
    (b'{"a": {"objects": ', "malformed JSON"),
    (b"[1, 2]", "expected one JSON object"),
    (b"{}", "holds no record"),
], ids=["not utf-8", "truncated", "a list", "empty"])
def test_unreadable_annotation_file_is_fatal(content, needle, scenes_dir, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_bytes(content)
    for module, dir_flag, folder in ((layers_cli, "--depth-dir", scenes_dir / "depth_maps"),
                                     (multiview_cli, "--point-cloud-dir", scenes_dir / "point_clouds")):
        code = cli(module, "--input-file", bad, dir_flag, folder, "--mask-dir", scenes_dir / "masks",
                   "--output-file", tmp_path / "o.json")
        errors, captured = error_lines(capsys)
        assert code == 2 and len(errors) == 1 and "bad.json" in errors[0] and needle in errors[0], captured.err
    assert not (tmp_path / "o.json").exists()


def test_output_file_that_is_a_folder(scenes_dir, tmp_path, capsys):
    (tmp_path / "o.json").mkdir()
    code = cli(layers_cli, "--input-file", scenes_dir / "annotations.json", "--depth-dir", scenes_dir / "depth_maps",
               "--mask-dir", scenes_dir / "masks", "--output-file", tmp_path / "o.json")
    errors, _ = error_lines(capsys)
    assert code == 2 and len(errors) == 1 and "is a folder" in errors[0]


@pytest.mark.parametrize("name,damage", [("0 bytes", lambda data: b""), ("truncated", lambda data: data[:100])])
def test_stage13_unreadable_point_map(name, damage, scenes_dir, tmp_path, capsys):
    points = linked_copy(scenes_dir / "point_clouds", tmp_path / "pc")
    data = (scenes_dir / "point_clouds" / "scene_002.npy").read_bytes()
    (points / "scene_002.npy").unlink()
    (points / "scene_002.npy").write_bytes(damage(data))
    code = cli(multiview_cli, "--input-file", scenes_dir / "annotations.json", "--point-cloud-dir", points,
               "--mask-dir", scenes_dir / "masks", "--output-file", tmp_path / "mv.json")
    errors, captured = error_lines(capsys)
    assert code == 1 and len(errors) == 1 and "scene_002" in errors[0] and "Traceback" not in captured.err
    assert sum("views" in r for r in strict_json(tmp_path / "mv.json").values()) == 5


def test_ambiguity_rule_zeros():
    # extents (lo, median, hi) in metres; tolerance 0.25 of the shorter extent, medians 0.1 m apart at least
    assert order((0, 0.5, 1), (2, 2.5, 3)) == -1 and order((2, 2.5, 3), (0, 0.5, 1)) == 1
    assert order((0, 0.5, 1), (0.9, 1.4, 1.9)) == -1            # overlap 0.1 < 0.25 x 1
    assert order((0, 0.5, 1), (0.7, 1.2, 1.7)) == 0             # overlap 0.3: ambiguous
    assert order((0, 0.02, 0.04), (0.05, 0.07, 0.09)) == 0      # disjoint, but medians only 5 cm apart
    assert order((0, 0.5, 1), (0, 0.5, 1)) == 0


# ---- d2p: bad numbers are refused, bad images cost one image, nothing stale is trusted ------------------------------

@pytest.mark.parametrize("k_txt,needle", [
    ("525 0 319.5 0 525 239.5 0 0 nan", "NaN or infinity"),
    ("525 0 319.5 0 inf 239.5 0 0 1", "NaN or infinity"),
    ("-525 0 319.5 0 525 239.5 0 0 1", "must be positive"),
    ("0 0 319.5 0 525 239.5 0 0 1", "must be positive"),
    ("525 0 319.5", "expected 9 numbers"),
    ("five two five", "not a number"),
], ids=["nan", "inf", "negative fx", "zero fx", "too few", "words"])
def test_d2p_bad_intrinsics(k_txt, needle, scenes_copy, capsys):
    (scenes_copy / "K.txt").write_text(k_txt)
    code = cli(d2p_cli, "--dataset-path", scenes_copy, "--workers", 1, "--output-dir", scenes_copy / "new")
    errors, _ = error_lines(capsys)
    assert code == 2 and len(errors) == 1 and "K.txt" in errors[0] and needle in errors[0], errors
    assert not list((scenes_copy / "new").glob("*.npy")) if (scenes_copy / "new").exists() else True


@pytest.mark.parametrize("change,needle", [
    (lambda p: p.__setitem__((0, 0, 3), np.inf), "NaN or infinity"),
    (lambda p: p.__setitem__((1, 0, 0), 2.0), "not orthonormal"),
    (lambda p: p.__setitem__((2, 3, 0), 0.5), "last row"),
], ids=["inf", "scaled rotation", "bad last row"])
def test_d2p_bad_poses(change, needle, scenes_copy, capsys):
    poses = np.loadtxt(scenes_copy / "poses.txt").reshape(-1, 4, 4)
    change(poses)
    np.savetxt(scenes_copy / "poses.txt", poses.reshape(-1, 16))
    code = cli(d2p_cli, "--dataset-path", scenes_copy, "--world-coordinates", "--output-dir", scenes_copy / "new")
    errors, _ = error_lines(capsys)
    assert code == 2 and len(errors) == 1 and "poses.txt" in errors[0] and needle in errors[0], errors


@pytest.mark.parametrize("flag,value", [
    ("--scale-factor", "0"), ("--scale-factor", "-5000"), ("--scale-factor", "nan"), ("--fov", "0"), ("--fov", "180"),
    ("--fov", "inf"), ("--max-depth", "0"), ("--max-depth", "-1"), ("--workers", "0")])
def test_d2p_bad_numbers(flag, value, scenes_dir, tmp_path, capsys):
    code = cli(d2p_cli, "--dataset-path", scenes_dir, flag, value, "--output-dir", tmp_path / "o")
    errors, captured = error_lines(capsys)
    assert code == 2 and len(errors) == 1 and flag in errors[0] and "Traceback" not in captured.err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("name,damage", [
    ("empty depth", lambda d: (d / "depth_maps" / "scene_001.png").write_bytes(b"")),
    ("truncated depth", lambda d: (d / "depth_maps" / "scene_001.png").write_bytes(
        (d / "depth_maps" / "scene_001.png").read_bytes()[:500])),
    ("truncated image", lambda d: (d / "images" / "scene_001.png").write_bytes(
        (d / "images" / "scene_001.png").read_bytes()[:500])),
    ("image of another size", lambda d: Image.new("RGB", (64, 48)).save(d / "images" / "scene_001.png")),
])
def test_d2p_one_bad_image_costs_one_image(name, damage, scenes_copy, capsys):
    damage(scenes_copy)
    out = scenes_copy / "new"
    code = cli(d2p_cli, "--dataset-path", scenes_copy, "--workers", 2, "--output-dir", out)
    errors, captured = error_lines(capsys)
    assert code == 1 and len(errors) == 1 and "scene_001" in errors[0] and "Traceback" not in captured.err
    assert sorted(p.stem for p in out.glob("*.npy")) == ["scene_000", "scene_002", "scene_003", "scene_004", "scene_005"]
    assert not list(out.glob(".*.tmp"))


def test_d2p_run_killed_with_other_settings_is_redone(scenes_copy, monkeypatch, capsys):
    """Run A, then run B killed after two images, then B again: every output holds B's depths."""
    out = scenes_copy / "pc"
    assert cli(d2p_cli, "--dataset-path", scenes_copy, "--workers", 1, "--output-dir", out) == 0
    depth = np.asarray(Image.open(scenes_copy / "depth_maps" / "scene_005.png")).astype(np.float32)
    import spacesgg.d2p as lib
    real, calls = lib.convert_one, []

    def dies_after_two(job):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(job.stem)
        return real(job)
    monkeypatch.setattr(lib, "convert_one", dies_after_two)
    assert cli(d2p_cli, "--dataset-path", scenes_copy, "--workers", 1, "--output-dir", out, "--scale-factor", 2500) == 130
    monkeypatch.setattr(lib, "convert_one", real)
    assert cli(d2p_cli, "--dataset-path", scenes_copy, "--workers", 1, "--output-dir", out, "--scale-factor", 2500) == 0
    for stem in ("scene_000", "scene_005"):                       # one made by the killed run, one by run A
        z = np.load(out / f"{stem}.npy")[..., 2]
        d = np.asarray(Image.open(scenes_copy / "depth_maps" / f"{stem}.png")).astype(np.float32)
        valid = d > 0
        np.testing.assert_allclose(z[valid], d[valid] / 2500, rtol=1e-6)
    assert depth.any()


# ---- processes: nothing survives its parent, no temporary file survives SIGTERM ------------------------------------

def _children(pid):
    out = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
        except OSError:
            continue
        if fields.get("PPid", "").strip() == str(pid):
            out.append(int(status.parent.name))
    return out


def _alive(pid):
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:\t", 1)[1][0] not in "ZX"
    except (OSError, IndexError):
        return False


def _wait(condition, limit=60.0):
    """Poll until `condition()` holds; the limit only guards against a hang, it is no timing assertion."""
    end = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < end, "gave up waiting"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def big_dataset(scenes_dir, tmp_path_factory):
    """120 image/depth pairs (copies of the six scenes under new stems), and a last image that is a named pipe: reading
    it blocks for ever, so the run cannot end before it is killed, however fast the machine."""
    root = tmp_path_factory.mktemp("big") / "ds"
    for sub in ("images", "depth_maps"):
        (root / sub).mkdir(parents=True)
        for k in range(121):
            src = sorted((scenes_dir / sub).glob("*.png"))[k % 6]
            if sub == "images" and k == 120:
                os.mkfifo(root / sub / f"img_{k:03d}.png")
            else:
                os.link(src, root / sub / f"img_{k:03d}.png")
    return root


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_d2p_workers_die_with_their_parent(how, big_dataset, tmp_path):
    out = tmp_path / "pc"
    child = subprocess.Popen([sys.executable, str(ROOT / "d2p.py"), "--dataset-path", big_dataset, "--workers", "2",
                              "--output-dir", out], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait(lambda: len(list(out.glob("*.npy"))) >= 4 or child.poll() is not None)
    workers = _children(child.pid)
    assert child.poll() is None and workers, "the run ended before it could be killed"
    child.send_signal(getattr(signal, how))
    code = child.wait(timeout=60)
    _wait(lambda: not any(_alive(w) for w in workers))
    if how == "SIGTERM":
        assert code == 143 and "Traceback" not in child.stderr.read()
        assert not list(out.glob(".*.tmp"))                          # the writes in progress were removed
    else:
        child.stderr.read()


def test_grid_workers_die_with_their_parent(tmp_path):
    child = subprocess.Popen([sys.executable, str(ROOT / "dataengine" / "make_grid_data.py"), "--output-dir",
                              tmp_path / "grid", "--objects", "camel", "frog", "dog", "teapot", "cake", "fan",
                              "--objects-dir", tmp_path / "objects", "--workers", "2"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait(lambda: len(list((tmp_path / "grid").glob("*/*.png"))) >= 10 or child.poll() is not None)
    workers = _children(child.pid)
    assert child.poll() is None and workers
    child.kill()
    child.wait(timeout=60)
    _wait(lambda: not any(_alive(w) for w in workers))


# ---- grid engine: names, completeness, letterboxing ----------------------------------------------------------------

@pytest.fixture(scope="module")
def renders(tmp_path_factory):
    out = tmp_path_factory.mktemp("renders")
    make_objects(["camel", "frog"], out)
    return out


@pytest.mark.parametrize("pair", ["../evil_frog", "camel_..", "cam el_frog", "camel_frog_dog", "camel/x_frog"])
def test_grid_bad_object_names(pair, renders, tmp_path, capsys):
    code = cli(grid_cli, "--output-dir", tmp_path / "out", "--pairs", pair, "--objects-dir", renders)
    errors, _ = error_lines(capsys)
    assert code == 2 and len(errors) == 1 and "Traceback" not in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == [] or sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert not (tmp_path / "evil_frog").exists() and not (tmp_path.parent / "evil_frog").exists()


@pytest.mark.parametrize("flag,value", [("--grid", "1"), ("--cell-size", "0"), ("--sizes", "-74"), ("--workers", "0"),
                                        ("--sizes", "300")])
def test_grid_bad_numbers(flag, value, renders, tmp_path, capsys):
    code = cli(grid_cli, "--output-dir", tmp_path / "out", "--pairs", "camel_frog", "--objects-dir", renders, flag, value)
    errors, _ = error_lines(capsys)
    assert code in (1, 2) and len(errors) == 1 and not list(tmp_path.glob("out/*/*.png"))


def test_grid_pair_complete_only_with_its_manifest_and_decodable_images(renders, tmp_path):
    kw = dict(sizes=[40], cell_size=40)
    assert tile_pair("camel", "frog", renders, tmp_path, **kw) == "done"
    folder = tmp_path / "camel_frog"
    good = {p.name: p.read_bytes() for p in folder.glob("*.png")}
    victim = folder / "camel_frog_2_1_40.png"
    victim.write_bytes(victim.read_bytes()[:40])                      # truncated by a kill
    assert tile_pair("camel", "frog", renders, tmp_path, **kw) == "done"
    assert victim.read_bytes() == good[victim.name]
    (folder / "manifest.json").unlink()                              # killed before the manifest: not complete
    (folder / "camel_frog_0_0_40.png").unlink()
    assert tile_pair("camel", "frog", renders, tmp_path, **kw) == "done"
    assert {p.name: p.read_bytes() for p in folder.glob("*.png")} == good
    assert tile_pair("camel", "frog", renders, tmp_path, **kw) == "skipped"


def test_grid_non_square_render_is_letterboxed(tmp_path):
    objects = tmp_path / "objects"
    objects.mkdir()
    wide = np.zeros((60, 120, 4), np.uint8)                           # transparent, 2:1 ...
    wide[5:55, 10:110] = (200, 30, 30, 255)                           # ... with an opaque 2:1 rectangle inside
    Image.fromarray(wide).save(objects / "bar.png")
    make_objects(["frog"], objects)
    tile_pair("frog", "bar", objects, tmp_path / "out", sizes=[80], cell_size=80)
    manifest = json.loads((tmp_path / "out" / "frog_bar" / "manifest.json").read_text())
    image = np.asarray(Image.open(tmp_path / "out" / "frog_bar" / manifest["images"][0]["file"]))
    x0, y0, x1, y1 = manifest["images"][0]["target"]["box"]
    red = (image[y0:y1, x0:x1, 0] > 150) & (image[y0:y1, x0:x1, 1] < 80)
    rows, cols = np.flatnonzero(red.any(1)), np.flatnonzero(red.any(0))
    assert abs(cols.size / rows.size - 2) < 0.1 and cols.size > 60   # 2:1 kept, not squashed to a square


# ---- spatial IDs: files that disagree, figure 5 by hand ------------------------------------------------------------

def _id_file(path, pairs, dtype="float32", layers=(0, 1), cells=((0, 0, 224), (1, 0, 224)), model_path="/m", seed=0):
    g = torch.Generator().manual_seed(seed)
    word = pairs[0].split("_")[1]
    save_pt(path, {"meta": {"model": "llava-7b", "model_path": model_path, "dtype": dtype, "pairs": list(pairs),
                            "query": {}, "target": {}, "subtokens": {}},
                   "layers": list(layers), "cells": [list(c) for c in cells],
                   "ids": {word: torch.randn(len(layers), len(cells), 8, generator=g)}})


@pytest.mark.parametrize("field,value,needle", [("dtype", "bfloat16", "dtype"), ("model_path", "/other", "model_path"),
                                                ("layers", (0, 2), "layers"), ("cells", ((0, 0, 224), (0, 1, 224)), "cells")])
def test_average_id_refuses_files_that_disagree(field, value, needle, tmp_path, capsys):
    _id_file(tmp_path / "camel_frog" / "m.pt", ["camel_frog"])
    _id_file(tmp_path / "dog_teapot" / "m.pt", ["dog_teapot"], **{field: value})
    (tmp_path / "stray_pair").mkdir()
    code = cli(average_cli, "--input-dir", tmp_path, "--model", "m", "--pairs", "camel_frog", "dog_teapot")
    errors, _ = error_lines(capsys)
    assert code == 2 and len(errors) == 1 and needle in errors[0] and "dog_teapot" in errors[0]
    assert not (tmp_path / "m.pt").exists()


def test_average_id_averages_each_word_over_the_files_that_hold_it(tmp_path):
    _id_file(tmp_path / "camel_frog" / "m.pt", ["camel_frog"], seed=1)
    _id_file(tmp_path / "dog_frog" / "m.pt", ["dog_frog"], seed=2)
    _id_file(tmp_path / "dog_teapot" / "m.pt", ["dog_teapot"], seed=3)
    _id_file(tmp_path / "not_listed" / "m.pt", ["not_listed"], seed=4)       # lies there, is not a pair we gave
    assert cli(average_cli, "--input-dir", tmp_path, "--model", "m", "--pairs", "camel_frog", "dog_frog", "dog_teapot") == 0
    out = torch.load(tmp_path / "m.pt", weights_only=True)
    ids = {p: torch.load(tmp_path / p / "m.pt", weights_only=True)["ids"] for p in ("camel_frog", "dog_frog", "dog_teapot")}
    torch.testing.assert_close(out["ids"]["frog"], (ids["camel_frog"]["frog"] + ids["dog_frog"]["frog"]) / 2)
    torch.testing.assert_close(out["ids"]["teapot"], ids["dog_teapot"]["teapot"])
    torch.testing.assert_close(out["ids"]["universal"], (ids["camel_frog"]["frog"] + ids["dog_frog"]["frog"]
                                                         + ids["dog_teapot"]["teapot"]) / 3)
    assert out["meta"]["pairs"] == ["camel_frog", "dog_frog", "dog_teapot"]


def test_model_folder_of_another_family_is_refused(tmp_path, capsys):
    (tmp_path / "qwen").mkdir()
    (tmp_path / "qwen" / "config.json").write_text(json.dumps({"model_type": "qwen2_vl"}))
    (tmp_path / "grid").mkdir()
    code = cli(compute_id_cli, "--model", f"llava-7b={tmp_path / 'qwen'}", "--image-dir", tmp_path / "grid",
               "--output-dir", tmp_path / "o")
    errors, _ = error_lines(capsys)
    assert code == 2 and len(errors) == 1 and "qwen2_vl" in errors[0] and "qwen2-2b" in errors[0]


def test_fig5_projection_by_hand_and_a_zero_layer():
    cells = [[i, j, 224] for j in range(2) for i in range(2)]
    e1, e2 = torch.zeros(4), torch.zeros(4)
    e1[0], e2[1] = 1.0, 1.0
    layer1 = torch.stack([3 * i * e1 + 2 * j * e2 + (0.5 if (i + j) % 2 else -0.5) * torch.tensor([0, 0, 1.0, 0])
                          for i, j, _ in cells])
    ids = torch.stack([torch.zeros(4, 4), layer1 - layer1.mean(0)])     # layer 0: all zero (no x/y plane)
    data = {"meta": {"model": "hand"}, "layers": [0, 1], "cells": cells, "ids": {"universal": ids}}
    coords, got_cells, explained, basis, layer = projection(data, layer=1)
    # by hand: x axis = 3 e1, y axis = 2 e2; the plane is (e1, e2); coords = centred (3i, 2j); the z part is left out
    want = np.array([[3 * i - 1.5, 2 * j - 1.0] for i, j, _ in cells])
    np.testing.assert_allclose(coords, want, atol=1e-6)
    assert explained == pytest.approx((4 * 1.5 ** 2 + 4 * 1.0) / (4 * 1.5 ** 2 + 4 * 1.0 + 4 * 0.25))
    with pytest.raises(UserError, match="zero"):
        projection(data, layer=0)
    sweep = dict(explained_by_layer(data))
    assert np.isnan(sweep[0]) and sweep[1] == pytest.approx(explained)


# ---- stage 2: the LLM path cannot hang or be fooled -----------------------------------------------------------------

def _ask(mv, out, url, *extra, fn="create_rotation_prompt"):
    return cli(llm_cli, "--anno-file", mv, "--prompt-function", fn, "--output-file", out, "--backend", "openai",
               "--base-url", url, "--backoff", "0.01", "--concurrency", "1", *extra)


def _no_key(tmp_path):
    for f in tmp_path.rglob("*"):
        if f.is_file():
            assert KEY not in f.read_text(errors="replace"), f


@pytest.mark.parametrize("fault,extra,outcome", [
    ("drip", ("--timeout", "1", "--max-retries", "0"), "failed"),       # a reply dripping a byte at a time ends
    ("429long", ("--max-wait", "0.05"), "answered"),                      # Retry-After: 3600 waits the cap
    ("429date", ("--max-wait", "0.05"), "answered"),                      # an HTTP date an hour ahead: the cap
    ("huge", (), "rejected"),
    ("reverse", (), "rejected"),
    ("chatml", (), "rejected"),
    ("leak", (), "redacted"),
])
def test_llm_faults(fault, extra, outcome, mv_file, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with StubServer(api_key=KEY, drip=0.05) as stub:
        stub.inject(*[fault] * (2 if outcome == "rejected" else 1))      # a rejected reply is asked once more
        out = tmp_path / "rot.json"
        code = _ask(mv_file, out, stub.url, "--limit", "1", *extra)
        _errors, captured = error_lines(capsys)
        records = strict_json(out)
        rejects = strict_json(f"{out}.rejects.json")
        if outcome == "failed":
            assert code == 1 and records == [] and "timed out" in captured.err
        elif outcome == "answered":
            assert code == 0 and len(records) == 1
            assert [e["outcome"] for e in stub.log] == [fault, "ok"]
        elif outcome == "rejected":
            assert code == 1 and records == [] and len(rejects) == 1       # every request rejected: non-zero
        else:
            assert code == 0 and len(records) == 1 and "[REDACTED]" in records[0]["conversations"][1]["value"]
    assert "Traceback" not in captured.err
    _no_key(tmp_path)


def test_retry_after_forms():
    assert retry_after_seconds({"retry-after": "3"}) == 3.0
    assert retry_after_seconds({"retry-after-ms": "250"}) == 0.25
    assert retry_after_seconds({"retry-after": "Wed, 25 Nov 2026 12:00:00 GMT"}, now=1795608000.0 - 60) == 60.0
    assert retry_after_seconds({"retry-after": "Wed, 25 Nov 2026 12:00:00 -0000"}, now=1795608000.0 - 60) == 60.0
    for junk in ("soon", "-5", "nan", "inf", ""):
        assert retry_after_seconds({"retry-after": junk}) is None


def test_comparative_and_rotation_answers_are_checked_against_the_geometry(mv_file):
    record = next(iter(json.loads(mv_file.read_text()).items()))
    between = PROMPT_FUNCTIONS["create_between_prompt"].build(*record)[0]
    A, B, rel, a_box, b_box = between.facts["pairs"][0]
    axis = next(i for i, r in enumerate(rel) if r)
    words = (("to the left of", "to the right of"), ("above", "below"), ("in front of", "behind"))[axis]
    right, wrong = words[0 if rel[axis] < 0 else 1], words[1 if rel[axis] < 0 else 0]
    assert check_reply(between, f"Q: Where is {A}?\nA: {A} is {right} {B}.")[0] is None
    assert "contradicts" in check_reply(between, f"Q: Where is {A}?\nA: {A} is {wrong} {B}.")[0]
    assert "contradicts" in check_reply(between, f"Q: Where is {A}?\nA: {B} is {right} {A}.")[0]
    rotation = PROMPT_FUNCTIONS["create_rotation_prompt"].build(*record)[0]
    a, b, rel = rotation.facts["a"], rotation.facts["b"], rotation.facts["relation"]
    side = "left" if rel[0] < 0 else "right"
    rest = " and ".join(w for axis, w in ((1, "above" if rel[1] < 0 else "below"),
                                          (2, "in front of" if rel[2] < 0 else "behind")) if rel[axis])
    tail = f", {rest}" if rest else ""
    if rel[0]:
        ok = f"Seen from its left side, {a} is on the {side} side of{tail} {b}."
        assert check_reply(rotation, ok)[0] is None, check_reply(rotation, ok)
        flipped = ok.replace(f"the {side} side", f"the {'right' if side == 'left' else 'left'} side")
        assert "reverse" in check_reply(rotation, flipped)[0]
    layer = PROMPT_FUNCTIONS["create_layer_prompt"].build(*record)[0]
    assert "cites no object" in check_reply(layer, "A nice room with some furniture.")[0]
    assert "<image>" in check_reply(layer, layer.facts["levels"][0][0] + " <image> here")[0]


@pytest.mark.parametrize("change,needle", [
    (lambda r: r["objects"]["o0"].update(label="<b>cup"), "'<' or '>'"),
    (lambda r: r["objects"]["o0"].update(label=""), "not a non-empty text"),
    (lambda r: r.update(image_size=[0, 0]), "image_size"),
])
def test_stage2_bad_record_costs_one_record(change, needle, mv_file, tmp_path, capsys):
    records = json.loads(mv_file.read_text())
    key = list(records)[2]
    change(records[key])
    (tmp_path / "mv.json").write_text(json.dumps(records))
    code = cli(llm_cli, "--anno-file", tmp_path / "mv.json", "--prompt-function", "create_layer_prompt",
               "--output-file", tmp_path / "o.json")
    errors, _ = error_lines(capsys)
    assert code == 1 and len(errors) == 1 and key in errors[0] and needle in errors[0]
    assert len(strict_json(tmp_path / "o.json")) == len(records) - 1


def test_stage2_no_record_at_all_is_not_a_success(mv_file, tmp_path, capsys):
    records = json.loads(mv_file.read_text())
    for record in records.values():
        del record["views"]
    (tmp_path / "mv.json").write_text(json.dumps(records))
    code = cli(llm_cli, "--anno-file", tmp_path / "mv.json", "--prompt-function", "create_between_prompt",
               "--output-file", tmp_path / "o.json")
    assert code == 1 and strict_json(tmp_path / "o.json") == []


def test_llm_cache_torn_line_stale_answer_and_model_in_key(mv_file, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    out = tmp_path / "rot.json"
    cache = Path(f"{out}.cache.jsonl")
    with StubServer(api_key=KEY) as stub:
        assert _ask(mv_file, out, stub.url, "--limit", "3") == 0
        lines = cache.read_text().splitlines()
        assert len(lines) == 3
        stale = json.loads(lines[0])
        stale["reply"] = "Seen from its left side, nothing in particular."   # fails today's rotation check
        cache.write_text("\n".join([json.dumps(stale)] + lines[1:]) + '\n{"key": "torn by a ki')   # a torn last line
        before = len(stub.log)
        assert _ask(mv_file, out, stub.url, "--limit", "4") == 0
        assert len(stub.log) - before == 2                               # the stale one and the new one, nothing else
        for line in cache.read_text().splitlines()[:-3] + cache.read_text().splitlines()[-2:]:
            json.loads(line)                                             # every entry on a line of its own
        assert len(strict_json(out)) == 4
        before = len(stub.log)
        assert _ask(mv_file, out, stub.url, "--limit", "4", "--model", "other-model") == 0
        assert len(stub.log) - before == 4                               # the model is part of the key
    _no_key(tmp_path)


def _default_sigint():
    """A run started in the background by a shell inherits SIGINT ignored (and Python then keeps it ignored);
    the child gets Ctrl-C as a terminal user's process does."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_llm_ctrl_c_flushes_the_cache_and_exits_130(mv_file, tmp_path):
    out = tmp_path / "rot.json"
    cache = Path(f"{out}.cache.jsonl")
    with StubServer(api_key=KEY, latency=0.1, hang=5.0) as stub:
        stub.inject("ok", "ok", "ok", *["timeout"] * 100)    # three answers, then it hangs: the run cannot end first
        child = subprocess.Popen([sys.executable, str(ROOT / "llm_based_query.py"), "--anno-file", mv_file,
                                  "--prompt-function", "create_rotation_prompt", "--output-file", out, "--backend",
                                  "openai", "--base-url", stub.url, "--concurrency", "2"],
                                 env=dict(os.environ, OPENAI_API_KEY=KEY), stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)
        _wait(lambda: cache.exists() and len(cache.read_text().splitlines()) >= 3)
        child.send_signal(signal.SIGINT)
        code = child.wait(timeout=60)
        err = child.stderr.read()
    assert code == 130 and "Traceback" not in err and err.strip().splitlines()[-1].startswith("interrupted")
    assert all(json.loads(line)["status"] == "ok" for line in cache.read_text().splitlines())
    assert not out.exists()


def test_llava_loader_joins_image_root_and_finds_every_image(scenes_dir, tmp_path):
    """What LLaVA-1.5's LazySupervisedDataset (v1) does with a record: image_folder / image opens; one <image>
    at the start of the first human turn; turns alternate; no answer holds what breaks its masking."""
    env = dict(os.environ, PYTHON=sys.executable)
    dataset = Path(shutil.copytree(scenes_dir, tmp_path / "ds", symlinks=True))
    shutil.rmtree(dataset / "point_clouds")
    proc = subprocess.run(["bash", str(ROOT / "run_spacesgg.sh"), dataset, tmp_path / "out"], capture_output=True,
                          text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert not (dataset / "point_clouds").exists()                       # the default run writes no point clouds
    inputs = sum(f.stat().st_size for sub in ("images", "depth_maps", "masks") for f in (dataset / sub).iterdir())
    outputs = sum(f.stat().st_size for f in (tmp_path / "out").iterdir())
    assert outputs <= 1.5 * inputs, (outputs, inputs)
    for kind in ("layer", "between", "rotation"):
        for record in strict_json(tmp_path / "out" / f"{kind}.json"):
            with Image.open(os.path.join(dataset / "images", record["image"])) as im:
                im.convert("RGB")
            turns = record["conversations"]
            assert [t["from"] for t in turns] == ["human", "gpt"] * (len(turns) // 2)
            assert turns[0]["value"].startswith("<image>\n") and sum(t["value"].count("<image>") for t in turns) == 1
            for t in turns[1::2]:
                assert "</s>" not in t["value"] and "USER:" not in t["value"] and "ASSISTANT:" not in t["value"]


def test_wrapper_goes_on_past_exit_1_and_stops_at_2(scenes_dir, tmp_path):
    dataset = Path(shutil.copytree(scenes_dir, tmp_path / "ds", symlinks=True))
    records = json.loads((dataset / "annotations.json").read_text())
    first = next(iter(records))
    records[first]["objects"]["o0"]["mask"] = "../../etc/passwd"           # one bad object: steps exit 1
    (dataset / "annotations.json").write_text(json.dumps(records))
    env = dict(os.environ, PYTHON=sys.executable)
    proc = subprocess.run(["bash", str(ROOT / "run_spacesgg.sh"), dataset, tmp_path / "out"], capture_output=True,
                          text=True, env=env, timeout=600)
    assert proc.returncode == 1
    assert all((tmp_path / "out" / f"{kind}.json").is_file() for kind in ("layer", "between", "rotation"))
    (dataset / "annotations.json").write_text("{ broken")                 # a fatal input: exit 2, stop there
    shutil.rmtree(tmp_path / "out")
    proc = subprocess.run(["bash", str(ROOT / "run_spacesgg.sh"), dataset, tmp_path / "out"], capture_output=True,
                          text=True, env=env, timeout=600)
    assert proc.returncode == 2 and not (tmp_path / "out" / "multiview.json").exists()
    assert "summary" in proc.stdout


def test_fig5_shuffled_control_and_marker_cosines():
    from spatial_id.figure import marker_cosines, plane, shuffled_explained
    cells = [[i, j, 224] for j in range(3) for i in range(3)]
    e = torch.eye(5)
    layer1 = torch.stack([2 * i * e[0] + 2 * j * e[1] for i, j, _ in cells])
    ids = torch.stack([torch.zeros(9, 5), layer1 - layer1.mean(0)])
    data = {"meta": {"model": "hand"}, "layers": [0, 1], "cells": cells, "ids": {"universal": ids}}
    assert projection(data, layer=1)[2] == pytest.approx(1.0)            # a perfect grid lies in its plane
    assert shuffled_explained(data, layer=1) == pytest.approx(1.0)        # ... and so does any permutation of it
    noisy = layer1 + torch.stack([torch.zeros(5)] * 9)
    noisy[:, 2] = torch.tensor([1.0, -1, 1, -1, 1, -1, 1, -1, 0])         # variance off the plane too
    data["ids"]["universal"] = torch.stack([torch.zeros(9, 5), noisy - noisy.mean(0)])
    true, control = projection(data, layer=1)[2], shuffled_explained(data, layer=1)
    assert 0 < control < true < 1
    basis = plane(e[0], e[1])
    text = {"meta": {}, "layers": [0, 1], "embeds": {"left": torch.stack([e[0], 3 * e[0] + 4 * e[3]]),
                                                     "right": torch.stack([e[1], -3 * e[0] - 4 * e[3]])}}
    cos = marker_cosines(text, 1, basis)                                   # centred: +-(3 e0 + 4 e3), |.| = 5
    assert cos["left"] == pytest.approx((0.6, 0.0)) and cos["right"] == pytest.approx((-0.6, 0.0))
    assert marker_cosines(text, 7, basis) is None


# ---- Hardening II: the photo path never reuses what was made from something else ------------------------------------

from dataengine import detect_objects as detect_cli  # noqa: E402
from dataengine import estimate_depth as estimate_depth_cli  # noqa: E402
from dataengine import import_coco as coco_cli  # noqa: E402
from dataengine import normalise_photos as normalise_cli  # noqa: E402
from dataengine import segment_objects as segment_cli  # noqa: E402
from spacesgg import export as export_cli  # noqa: E402
from spacesgg import inspect as inspect_cli  # noqa: E402
from spacesgg import merge as merge_cli  # noqa: E402


def _random_photos(root, names=("p0.png", "p1.png")):
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name in names:
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(root / "images" / name)
    return root


def test_stale_masks_follow_new_boxes_and_nothing_current_is_redone(tiny_frontend, tmp_path, monkeypatch, capsys):
    from dataengine.detect import Detector
    from dataengine.segment import Segmenter
    dataset = _random_photos(tmp_path / "ds")
    boxes, masks = dataset / "annotations.json", tmp_path / "masks.json"
    detect = ("--dataset-path", dataset, "--output-file", boxes, "--model", tiny_frontend["grounding_dino"],
              "--box-threshold", 0.0, "--text-threshold", 0.0, "--max-objects", 3, "--device", "cpu")
    segment = ("--dataset-path", dataset, "--input-file", boxes, "--output-file", masks, "--model", tiny_frontend["sam"],
               "--device", "cpu")
    prompted, real_masks = [], Segmenter.masks

    def counting(self, image, boxes_):
        prompted.append([list(map(float, b)) for b in boxes_])
        return real_masks(self, image, boxes_)
    monkeypatch.setattr(Segmenter, "masks", counting)

    def check_masks_follow_boxes():
        records = json.loads(masks.read_text())
        segmenter = Segmenter.__new__(Segmenter)
        for key, record in records.items():
            image = np.asarray(Image.open(key).convert("RGB"))
            objects = record["objects"]
            want, _ = real_masks(segmenter_cache, image, [o["box"] for o in objects.values()])
            for (oid, obj), expected in zip(objects.items(), want):
                assert obj["mask_from"]["box"] == obj["box"], oid
                assert np.array_equal(np.asarray(Image.open(dataset / "masks" / obj["mask"])) > 0, expected), (key, oid)
        return segmenter
    segmenter_cache = Segmenter(__import__("dataengine.models", fromlist=["x"]).resolve(
        str(tiny_frontend["sam"]), {}, {"sam": "SamModel"}, "x"), "cpu")
    assert cli(detect_cli, *detect, "--labels", "chair, lamp") == 0
    assert cli(segment_cli, *segment) == 0
    first = json.loads(masks.read_text())
    check_masks_follow_boxes()
    # other labels: detection hands the ids o0, o1, ... to other boxes, and every mask follows its new box
    assert cli(detect_cli, *detect, "--labels", "cup, dog, tv") == 0
    prompted.clear()
    assert cli(segment_cli, *segment) == 0
    second = json.loads(masks.read_text())
    moved = [(k, o) for k in first for o in first[k]["objects"] if o in second[k]["objects"]
             and second[k]["objects"][o]["box"] != first[k]["objects"][o]["box"]]
    assert moved and sum(len(p) for p in prompted) == sum(len(r["objects"]) for r in second.values())
    check_masks_follow_boxes()
    # nothing changed: nothing is asked again, neither boxes nor masks
    calls = []
    monkeypatch.setattr(Detector, "detect", lambda *a: calls.append(a) or (_ for _ in ()).throw(AssertionError))
    prompted.clear()
    assert cli(detect_cli, *detect, "--labels", "cup, dog, tv") == 0 and cli(segment_cli, *segment) == 0
    assert calls == [] and prompted == [] and json.loads(masks.read_text()) == second
    # a box edited by hand: only that mask is made again; a photo replaced: its boxes and masks are redone
    records = json.loads(boxes.read_text())
    key = next(iter(records))
    oid = next(iter(records[key]["objects"]))
    records[key]["objects"][oid]["box"] = [1.0, 2.0, 30.0, 40.0]
    boxes.write_text(json.dumps(records))
    assert cli(segment_cli, *segment) == 0 and prompted == [[[1.0, 2.0, 30.0, 40.0]]]
    check_masks_follow_boxes()
    # stage 1.2 refuses a mask that was made for another box (a box edited after segmentation)
    records = json.loads(masks.read_text())
    records[key]["objects"][oid]["box"] = [3.0, 4.0, 20.0, 20.0]
    masks.write_text(json.dumps(records))
    (dataset / "depth_maps").mkdir()
    for name in ("p0", "p1"):
        Image.fromarray(np.full((48, 64), 5000, np.uint16)).save(dataset / "depth_maps" / f"{name}.png")
    capsys.readouterr()
    code = cli(layers_cli, "--input-file", masks, "--depth-dir", dataset / "depth_maps", "--mask-dir", dataset / "masks",
               "--output-file", tmp_path / "layers.json")
    errors, _ = error_lines(capsys)
    assert code == 1 and len(errors) == 1 and oid in errors[0] and "was made for box" in errors[0]


def _exif_photo(path, orientation=6):
    """A 64 x 48 JPEG whose EXIF orientation asks viewers to turn it (a phone photo)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    pixels = np.zeros((48, 64, 3), np.uint8)
    pixels[:, :32] = (200, 30, 30)                                 # left half red in the stored frame
    Image.fromarray(pixels).save(path, exif=exif, quality=95)
    return np.asarray(Image.open(path).convert("RGB"))


def test_exif_and_16_bit_photos_are_read_in_the_stored_frame_and_warned_once(tiny_frontend, tmp_path, capsys):
    dataset = tmp_path / "ds"
    (dataset / "images").mkdir(parents=True)
    stored = _exif_photo(dataset / "images" / "phone.jpg")
    Image.fromarray(np.full((48, 64), 40000, np.uint16)).save(dataset / "images" / "deep.png")
    boxes, masks = dataset / "annotations.json", tmp_path / "masks.json"

    def warnings_of(module, *args, code=0):
        capsys.readouterr()
        assert cli(module, *args) == code
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.startswith("warning:") and "images/" in line]
        assert sorted(("phone.jpg" in line, "deep.png" in line) for line in lines) == [(False, True), (True, False)], err
        return lines
    warnings_of(detect_cli, "--dataset-path", dataset, "--output-file", boxes, "--model", tiny_frontend["grounding_dino"],
                "--labels", "chair", "--box-threshold", 0.0, "--text-threshold", 0.0, "--device", "cpu")
    for record in json.loads(boxes.read_text()).values():
        assert record["objects"] and all(o["box"][2] <= 64 and o["box"][3] <= 48 for o in record["objects"].values())
    warnings_of(segment_cli, "--dataset-path", dataset, "--input-file", boxes, "--output-file", masks, "--model",
                tiny_frontend["sam"], "--device", "cpu")
    for record in json.loads(masks.read_text()).values():
        assert all(np.asarray(Image.open(dataset / "masks" / o["mask"])).shape == (48, 64) for o in record["objects"].values())
    warnings_of(estimate_depth_cli, "--dataset-path", dataset, "--model", tiny_frontend["depth_anything"], "--device", "cpu")
    assert all(np.asarray(Image.open(p)).shape == (48, 64) for p in (dataset / "depth_maps").glob("*.png"))
    warnings_of(layers_cli, "--input-file", masks, "--depth-dir", dataset / "depth_maps", "--mask-dir", dataset / "masks",
                "--output-file", tmp_path / "layers.json")
    warnings_of(inspect_cli, "--anno-file", tmp_path / "layers.json", "--output-dir", tmp_path / "site")
    copy = Image.open(tmp_path / "site" / "images" / "phone.png")
    assert np.array_equal(np.asarray(copy.convert("RGB")), stored) and copy.getexif().get(0x0112) is None
    assert "../images/phone.png" in (tmp_path / "site" / "pages" / "phone.html").read_text()
    record = {"id": "r0", "image": "phone.jpg", "conversations": [{"from": "human", "value": "<image>\nWhat?"},
                                                                   {"from": "gpt", "value": "A red half."}]}
    (tmp_path / "records.json").write_text(json.dumps([record, dict(record, id="r1", image="deep.png")]))
    warnings_of(export_cli, "--records", tmp_path / "records.json", "--format", "openai-jsonl", "--output",
                tmp_path / "out.jsonl", "--image-root", dataset / "images")
    import base64
    import io
    url = json.loads((tmp_path / "out.jsonl").read_text().splitlines()[0])["messages"][0]["content"][0]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    sent = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert np.array_equal(np.asarray(sent.convert("RGB")), stored) and sent.getexif().get(0x0112) is None
    # the documented fix: normalised photos have no problem left, the EXIF one turned as a viewer shows it
    assert cli(normalise_cli, "--input-dir", dataset / "images", "--output-dir", tmp_path / "fixed") == 0
    turned = np.asarray(Image.open(tmp_path / "fixed" / "phone.jpg"))
    assert turned.shape == (64, 48, 3) and turned[:32].mean(axis=(0, 1))[0] > 150 and turned[40:].mean() < 40
    assert np.asarray(Image.open(tmp_path / "fixed" / "deep.png")).max() == round(40000 / 257)


@pytest.mark.parametrize("content", [b"", b"not an image at all", "folder", "truncated", "bomb"])
def test_unreadable_photos_cost_that_photo_in_every_front_end_step(content, tiny_frontend, tmp_path, capsys, monkeypatch):
    dataset = _random_photos(tmp_path / "ds", ("good.png",))
    bad = dataset / "images" / "bad.png"
    if content == "folder":
        bad.mkdir()
    elif content == "truncated":
        bad.write_bytes((dataset / "images" / "good.png").read_bytes()[:200])
    elif content == "bomb":
        Image.new("RGB", (400, 300)).save(bad)
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10000)         # 120,000 pixels is over twice the limit
    else:
        bad.write_bytes(content)
    steps = [(detect_cli, "--dataset-path", dataset, "--output-file", dataset / "annotations.json", "--model",
              tiny_frontend["owlv2"], "--labels", "cup", "--box-threshold", 0.0, "--device", "cpu"),
             (estimate_depth_cli, "--dataset-path", dataset, "--model", tiny_frontend["depth_anything"], "--device", "cpu"),
             (normalise_cli, "--input-dir", dataset / "images", "--output-dir", tmp_path / "fixed")]
    if content != "folder":
        records = {str(p): {"caption": "", "objects": {"o0": {"label": "cup", "box": [1, 1, 20, 20]}}}
                   for p in (dataset / "images").iterdir()}
        (tmp_path / "boxes.json").write_text(json.dumps(records))
        steps.append((segment_cli, "--dataset-path", dataset, "--input-file", tmp_path / "boxes.json", "--output-file",
                      tmp_path / "masks.json", "--model", tiny_frontend["sam"], "--device", "cpu"))
    for module, *args in steps:
        code = cli(module, *args)
        errors, captured = error_lines(capsys)
        assert code == 1 and len(errors) == 1 and "bad.png" in errors[0] and "Traceback" not in captured.err, \
            (module.__name__, captured.err)
    assert (dataset / "depth_maps" / "good.png").is_file() and (tmp_path / "fixed" / "good.png").is_file()


def _coco_base(root):
    images = root / "val"
    images.mkdir(parents=True)
    for name in ("a.jpg", "b.jpg"):
        Image.new("RGB", (40, 30), (90, 90, 90)).save(images / name)
    square = [[5, 5, 15, 5, 15, 15, 5, 15]]
    return images, {
        "categories": [{"id": 1, "name": "cup"}],
        "images": [{"id": 1, "file_name": "a.jpg", "width": 40, "height": 30},
                   {"id": 2, "file_name": "b.jpg", "width": 40, "height": 30}],
        "annotations": [{"id": 10, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 100, "bbox": [5, 5, 10, 10],
                         "segmentation": square},
                        {"id": 20, "image_id": 2, "category_id": 1, "iscrowd": 0, "area": 100, "bbox": [5, 5, 10, 10],
                         "segmentation": square}]}


def _bad_annotation(**change):
    def mutate(instances, images):
        instances["annotations"].append({"id": 99, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 100,
                                         "bbox": [20, 10, 8, 8], "segmentation": [[20, 10, 28, 10, 28, 18]], **change})
    return mutate


def _image_change(**change):
    def mutate(instances, images):
        instances["images"][0].update(change)
    return mutate


def _exif_at_displayed_size(instances, images):
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (40, 30)).save(images / "a.jpg", exif=exif)
    instances["images"][0].update(width=30, height=40)           # the displayed size of the turned photo
    instances["annotations"][0]["bbox"] = [5, 5, 10, 10]


def _twice(instances, images):
    instances["images"].append(dict(instances["images"][0], file_name="b.jpg"))


def _same_stem(instances, images):
    (images / "sub").mkdir()
    Image.new("RGB", (40, 30)).save(images / "sub" / "a.jpg")
    instances["images"][1]["file_name"] = "sub/a.jpg"


# (case, mutation, "annotation" (the image stays with its good annotation) or "image" (the image is lost), needle)
COCO_CASES = [
    ("bbox missing", _bad_annotation(bbox=None), "annotation", "bbox"),
    ("bbox negative", _bad_annotation(bbox=[-3, 1, 5, 5]), "annotation", "negative"),
    ("bbox empty", _bad_annotation(bbox=[3, 1, 0, 5]), "annotation", "empty"),
    ("polygon of two points", _bad_annotation(segmentation=[[1, 1, 5, 5]]), "annotation", "at least 3"),
    ("polygon of odd length", _bad_annotation(segmentation=[[1, 1, 5, 5, 9]]), "annotation", "odd"),
    ("RLE of another size", _bad_annotation(segmentation={"size": [10, 10], "counts": [5, 5, 90]}), "annotation", "size"),
    ("unknown category", _bad_annotation(category_id=7), "annotation", "category"),
    ("image id without image", _bad_annotation(image_id=555), "annotation", "555"),
    ("image file missing", _image_change(file_name="gone.jpg"), "image", "not found"),
    ("file name climbs out", _image_change(file_name="../x/a.jpg"), "image", ".."),
    ("absolute file name", _image_change(file_name="/etc/hostname"), "image", "absolute"),
    ("stored size differs", _image_change(width=41), "image", "41x30"),
    ("EXIF photo at displayed size", _exif_at_displayed_size, "image", "EXIF"),
    ("image id twice", _twice, "image", "twice"),
    ("two images share a stem", _same_stem, "image", "stem"),
]


@pytest.mark.parametrize("case,mutate,costs,needle", COCO_CASES, ids=[c[0] for c in COCO_CASES])
def test_coco_one_annotation_one_error(case, mutate, costs, needle, tmp_path, capsys):
    images, instances = _coco_base(tmp_path)
    mutate(instances, images)
    (tmp_path / "instances.json").write_text(json.dumps(instances))
    out = tmp_path / "ds"
    code = cli(coco_cli, "--instances", tmp_path / "instances.json", "--image-dir", images, "--output-dir", out)
    errors, captured = error_lines(capsys)
    assert code == 1 and len(errors) == 1 and needle in errors[0] and "Traceback" not in captured.err, captured.err
    records = json.loads((out / "annotations.json").read_text())
    coco_ids = sorted(o["coco_id"] for r in records.values() for o in r["objects"].values())
    if costs == "annotation":                                     # both images, each with its good annotation
        assert coco_ids == [10, 20]
    else:                                                          # the bad image only is lost
        assert len(records) == 1 and coco_ids in ([10], [20])
    outside = [p for p in tmp_path.rglob("*") if p.is_symlink() and not str(p).startswith(str(out))]
    assert not outside and all(p.resolve().is_relative_to(images.resolve()) for p in (out / "images").iterdir())


def test_labels_of_any_count_fit_the_detectors_text_length(tiny_frontend, tmp_path, capsys):
    from dataengine.detect import Detector
    from dataengine.models import resolve
    words = ["chair", "table", "lamp", "cup", "dog", "cat", "person", "tv", "plant", "sofa"]
    labels = [f"{t}{a} {b}" for t in ("", "the ", "a ") for a in words for b in words if a != b][:200]
    label_file = tmp_path / "labels.txt"
    label_file.write_bytes(("\ufeff" + "\r\n".join(labels + [labels[0].upper(), "  ", labels[1]]) + "\r\n").encode())
    from dataengine.detect import parse_labels
    assert parse_labels(labels_file=label_file) == labels                # BOM, CRLF, case duplicates, blanks
    detector = Detector(resolve(str(tiny_frontend["grounding_dino"]), {}, {"grounding_dino": "x"}, "x"), labels, "cpu")
    tokenizer, limit = detector.processor.tokenizer, detector.model.config.max_text_len
    assert len(detector.chunks) > 1 and [k for _, indices, _ in detector.chunks for k in indices] == list(range(200))
    assert all(len(tokenizer(text)["input_ids"]) <= limit for text, _, _ in detector.chunks)
    dataset = _random_photos(tmp_path / "ds", ("p0.png",))
    out = dataset / "annotations.json"
    assert cli(detect_cli, "--dataset-path", dataset, "--output-file", out, "--model", tiny_frontend["grounding_dino"],
               "--labels-file", label_file, "--box-threshold", 0.0, "--text-threshold", 0.0, "--device", "cpu") == 0
    found = [o["label"] for r in json.loads(out.read_text()).values() for o in r["objects"].values()]
    assert found and set(found) <= set(labels)
    capsys.readouterr()
    code = cli(detect_cli, "--dataset-path", dataset, "--output-file", out, "--model", tiny_frontend["grounding_dino"],
               "--labels", " ".join(["chair"] * 40), "--device", "cpu")
    errors, _ = error_lines(capsys)
    assert code == 2 and len(errors) == 1 and "text length" in errors[0]


def test_template_answers_pass_their_own_validation_with_90_objects():
    from spacesgg.layers import group_layers
    from spacesgg.multiview import metric_shape, view_relations
    from spacesgg.prompt_functions.base import seeded_rng
    rng = np.random.default_rng(0)
    objects, points = {}, {}
    for k in range(90):                                            # COCO's most crowded image has 90 objects
        centre = np.array([rng.uniform(-3, 3), rng.uniform(-1.5, 1.5), rng.uniform(2, 12)])
        pts = centre + (rng.random((200, 3)) - 0.5) * rng.uniform(0.05, 0.6, 3)
        u, v = 525 * pts[:, 0] / pts[:, 2] + 320, 525 * pts[:, 1] / pts[:, 2] + 240
        x0, y0 = float(np.clip(u.min(), 0, 630)), float(np.clip(v.min(), 0, 470))
        box = [x0, y0, float(np.clip(u.max(), x0 + 1, 640)), float(np.clip(v.max(), y0 + 1, 480))]
        z = np.sort(pts[:, 2])
        points[f"o{k}"] = pts
        objects[f"o{k}"] = {"label": ["person", "chair", "cup"][k % 3], "box": box, "mask": f"m{k}.png",
                            "depth": {"near": float(z[10]), "median": float(np.median(z)), "far": float(z[-10]),
                                      "pixels": 200}, **metric_shape(pts)}
    views = view_relations(points, np.median(np.concatenate(list(points.values())), axis=0))
    record = {"caption": "A crowded room.", "objects": objects, "image_size": [640, 480], "views": views,
              "levels": group_layers([(o, d["depth"]["near"], d["depth"]["far"]) for o, d in objects.items()], 0.25, 0.05),
              "order_list": views["front"]["relations"], "depth_source": "sensor"}
    for name, fn in PROMPT_FUNCTIONS.items():
        for seed in range(3):
            requests = fn.build("/data/crowd.png", record, box_norm="pad", seed=seed)
            assert requests
            for request in requests:
                reason, _ = check_reply(request, fn.template(request, seeded_rng(seed, request.id + ":answer")))
                assert reason is None, (name, seed, request.id, reason)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed (make test installs it)")
def test_inspector_escapes_everything_from_the_data(scenes_dir, tmp_path):
    evil = "<img src=x onerror=\"document.title='pwned'\">"
    stem = "odd #name?50% é"
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (64, 48), (0, 90, 0)).save(images / f"{stem}.png")
    annotation = {str(images / f"{stem}.png"): {
        "caption": evil, "image_size": [64, 48], "levels": [["o0"]],
        "objects": {"o0": {"label": evil, "box": [2, 2, 30, 30], "mask": "m.png", "depth": {"near": 1}}},
        "views": {"front": {"levels": [["o0", evil]], "relations": {f"o0>{evil}": [-1, 0, 1]}}}}}
    (tmp_path / "a.json").write_text(json.dumps(annotation))
    records = [{"id": evil, "image": f"{stem}.png", "prompt_function": evil,
                "conversations": [{"from": "<script>document.title='pwned'</script>", "value": evil},
                                  {"from": "gpt\" onmouseover=\"x", "value": f"<ref>{evil}</ref><box>[[1, 2, 300, 400]]</box>"}]}]
    (tmp_path / "r.json").write_text(json.dumps(records))
    assert cli(inspect_cli, "--anno-file", tmp_path / "a.json", "--records", tmp_path / "r.json", "--output-dir",
               tmp_path / "site", "--image-root", tmp_path / "nowhere") == 0          # a missing root: one warning
    page = next((tmp_path / "site" / "pages").glob("*.html"))
    for target in (tmp_path / "site" / "index.html", page):
        proc = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                               "--disable-background-networking", "--disable-component-update", "--disable-sync",
                               f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", target.as_uri()],
                              capture_output=True, text=True, timeout=120)
        dom = proc.stdout
        assert proc.returncode == 0 and "<html" in dom
        assert "pwned" not in dom.split("<title>")[1].split("</title>")[0]          # no script ran
        assert "<img src=\"x\"" not in dom and "<script>" not in dom and "onmouseover=\"x\"" not in dom
    assert "&lt;img src=x" in page.read_text()                                      # shown as text
    index = (tmp_path / "site" / "index.html").read_text()
    assert "pages/odd%20%23name%3F50%25%20%C3%A9.html" in index and (tmp_path / "site" / "pages" / f"{stem}.html").is_file()
    assert "odd%20%23name%3F50%25%20%C3%A9.png" in page.read_text()


def _shards(tmp_path, mv_file, fn="create_layer_prompt", n=2, **options):
    out = tmp_path / "out.json"
    from spacesgg.llm_query import query
    for i in range(n):
        assert query(mv_file, fn, out, shard=(i, n), **options) == 0
    return [tmp_path / f"out.shard-{i}-of-{n}.json" for i in range(n)]


@pytest.mark.parametrize("case", ["truncated", "not JSON", "another N", "another prompt function", "another seed", "missing"])
def test_merge_refuses_shards_that_do_not_belong_together(case, mv_file, tmp_path, capsys):
    files = _shards(tmp_path, mv_file)
    if case == "truncated":
        longest = max(files, key=lambda f: f.stat().st_size)
        longest.write_text(longest.read_text()[:50])
    elif case == "not JSON":
        files[1].write_bytes(b"\x00\x01 binary")
    elif case == "another N":
        files[1] = _shards(tmp_path / "three", mv_file, n=3)[1]
    elif case == "another prompt function":
        (tmp_path / "b").mkdir()
        files[1] = _shards(tmp_path / "b", mv_file, "create_between_prompt")[1]
        files[1] = files[1].rename(tmp_path / "out.shard-1-of-2.json")
        Path(f"{tmp_path / 'b' / 'out.shard-1-of-2.json'}.settings.json").rename(f"{files[1]}.settings.json")
    elif case == "another seed":
        (tmp_path / "b").mkdir()
        other = _shards(tmp_path / "b", mv_file, seed=7)[1]
        other.rename(files[1])
        Path(f"{other}.settings.json").rename(f"{files[1]}.settings.json")
    else:
        files = files[:1]
    capsys.readouterr()
    code = cli(merge_cli, "--output", tmp_path / "merged.json", *files)
    errors, captured = error_lines(capsys)
    assert code == 2 and len(errors) == 1 and "Traceback" not in captured.err, captured.err
    assert not (tmp_path / "merged.json").exists()


@pytest.mark.parametrize("break_it,costs", [
    (lambda r: r.update(image="gone.png"), "image"),
    (lambda r: r["conversations"].pop(), "turns"),
    (lambda r: r["conversations"][1].update(value="  "), "empty"),
    (lambda r: r["conversations"][0].update({"from": "gpt"}), "turn"),
], ids=["image missing", "odd turns", "empty answer", "wrong roles"])
def test_export_skips_records_that_cannot_be_trained_on(break_it, costs, scenes_dir, tmp_path, capsys):
    images = scenes_dir / "images"
    good = {"id": "r0", "image": "scene_000.png", "conversations": [{"from": "human", "value": "<image>\nWhere?"},
                                                                     {"from": "gpt", "value": "Here."}]}
    bad = json.loads(json.dumps(dict(good, id="r1")))
    break_it(bad)
    absolute = dict(good, id="r2", image=str(images / "scene_001.png"))       # absolute, under the root: fine
    (tmp_path / "r.json").write_text(json.dumps([good, bad, absolute]))
    for fmt in ("llava", "sharegpt", "openai-jsonl", "parquet"):
        out = tmp_path / f"out.{fmt}"
        code = cli(export_cli, "--records", tmp_path / "r.json", "--format", fmt, "--output", out, "--image-root", images)
        errors, _ = error_lines(capsys)
        assert code == 1 and len(errors) == 1 and "r1" in errors[0] and costs in errors[0], errors
        assert out.is_file()
    assert [r["image"] for r in json.loads((tmp_path / "out.llava").read_text())] == ["scene_000.png", "scene_001.png"]
    (tmp_path / "only_bad.json").write_text(json.dumps([bad]))
    assert cli(export_cli, "--records", tmp_path / "only_bad.json", "--format", "llava", "--output", tmp_path / "none.json",
               "--image-root", images) == 1
    assert not (tmp_path / "none.json").exists()                      # no 0-byte or empty file left behind


# ---- the six held-out data-stage cases, and missing input folders -------------------------------------------------

def test_d2p_output_folder_that_is_a_file(scenes_dir, tmp_path, capsys):
    (tmp_path / "pc").write_text("x")
    code = cli(d2p_cli, "--dataset-path", scenes_dir, "--output-dir", tmp_path / "pc")
    errors, captured = error_lines(capsys)
    assert code == 2 and len(errors) == 1 and "is a file" in errors[0] and "Traceback" not in captured.err


def test_corrupt_background_image_is_named(renders, tmp_path, capsys):
    backgrounds = tmp_path / "bg"
    backgrounds.mkdir()
    (backgrounds / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    code = cli(grid_cli, "--output-dir", tmp_path / "out", "--pairs", "camel_frog", "--objects-dir", renders,
               "--background", backgrounds, "--sizes", 224)
    errors, captured = error_lines(capsys)
    assert code == 1 and len(errors) == 1 and "broken.jpg" in errors[0] and "Traceback" not in captured.err


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory):
    from spatial_id.tiny import build_tiny_model
    return build_tiny_model("llava", tmp_path_factory.mktemp("llava") / "m")


@pytest.fixture(scope="module")
def one_pair(renders, tmp_path_factory):
    out = tmp_path_factory.mktemp("grid")
    tile_pair("camel", "frog", renders, out, sizes=(224,))
    return out


@pytest.mark.parametrize("layers", ["5-2", "0-2000000", "-3000"])
def test_bad_layer_ranges_are_one_line(layers, tiny_llava, one_pair, tmp_path, capsys):
    code = cli(compute_id_cli, "--model", f"llava-7b={tiny_llava}", "--image-dir", one_pair, "--output-dir", tmp_path,
               "--layers", layers, "--device", "cpu")
    errors, captured = error_lines(capsys)
    assert code == 2 and len(errors) == 1 and len(captured.err) < 500 and "Traceback" not in captured.err
    assert not list(tmp_path.glob("*.pt"))


@pytest.mark.parametrize("per_pair", [False, True])
def test_layers_all_after_a_few_layers_is_extracted_again(per_pair, tiny_llava, one_pair, tmp_path, capsys):
    args = ("--model", f"llava-7b={tiny_llava}", "--image-dir", one_pair, "--output-dir", tmp_path, "--device", "cpu",
            *(["--per-pair"] if per_pair else []))
    assert cli(compute_id_cli, *args, "--layers", "0-2") == 0
    assert cli(compute_id_cli, *args, "--layers", "all") == 0
    path = tmp_path / "camel_frog" / "llava-7b.pt" if per_pair else tmp_path / "llava-7b.pt"
    n = torch.load(path, weights_only=True)["ids"]["frog"].shape[0]
    assert n > 3
    stamp = path.stat().st_mtime_ns
    assert cli(compute_id_cli, *args, "--layers", "all") == 0 and path.stat().st_mtime_ns == stamp   # now current


@pytest.mark.parametrize("stage", ["layers", "multiview", "multiview depth", "segment", "llm image root", "export"])
def test_missing_input_folder_is_fatal(stage, scenes_dir, mv_file, tiny_frontend, tmp_path, capsys):
    gone = tmp_path / "nowhere"
    anno = scenes_dir / "annotations.json"
    out = tmp_path / "o.json"
    runs = {
        "layers": (layers_cli, "--input-file", anno, "--depth-dir", gone, "--mask-dir", scenes_dir / "masks", "--output-file", out),
        "multiview": (multiview_cli, "--input-file", anno, "--point-cloud-dir", scenes_dir / "point_clouds", "--mask-dir",
                      gone, "--output-file", out),
        "multiview depth": (multiview_cli, "--input-file", anno, "--depth-dir", gone, "--mask-dir", scenes_dir / "masks",
                            "--output-file", out),
        "segment": (segment_cli, "--dataset-path", gone, "--input-file", anno, "--output-file", out, "--model",
                    tiny_frontend["sam"]),
        "llm image root": (llm_cli, "--anno-file", mv_file, "--prompt-function", "create_layer_prompt", "--output-file", out,
                           "--image-root", gone),
        "export": (export_cli, "--records", mv_file, "--format", "llava", "--output", out, "--image-root", gone),
    }
    module, *args = runs[stage]
    code = cli(module, *args)
    errors, captured = error_lines(capsys)
    assert code == 2 and len(errors) == 1 and "nowhere" in errors[0] and "Traceback" not in captured.err, captured.err
    assert not out.exists()


@pytest.mark.parametrize("entry", [float("nan"), "1234", [525, 525, 319.5], [True, 525, 319.5, 239.5], [0, 525, 319.5, 239.5],
                                   {"fx": 525}], ids=["NaN", "a string", "three numbers", "a boolean", "zero focal", "a dict"])
def test_bad_intrinsics_entry_costs_its_image_only(entry, scenes_copy, capsys):
    good = [525.0, 525.0, 319.5, 239.5]
    (scenes_copy / "intrinsics.json").write_text(json.dumps({"scene_001": entry, "scene_002": good}))
    out = scenes_copy / "new"
    code = cli(d2p_cli, "--dataset-path", scenes_copy, "--output-dir", out)
    errors, captured = error_lines(capsys)
    assert code == 1 and len(errors) == 1 and "scene_001" in errors[0] and "Traceback" not in captured.err, captured.err
    assert sorted(p.stem for p in out.glob("*.npy")) == ["scene_000", "scene_002", "scene_003", "scene_004", "scene_005"]


def test_depth_of_tiny_wide_and_mixed_images(tiny_frontend, tmp_path, capsys, monkeypatch):
    dataset = tmp_path / "ds"
    (dataset / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    sizes = {"dot": (1, 1), "strip": (2000, 3), "a": (64, 48), "b": (64, 48), "c": (40, 30), "d": (300, 60)}
    for name, (w, h) in sizes.items():
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(dataset / "images" / f"{name}.png")
    code = cli(estimate_depth_cli, "--dataset-path", dataset, "--model", tiny_frontend["depth_pro"], "--batch-size", 4,
               "--device", "cpu")
    errors, captured = error_lines(capsys)
    assert code == 1 and len(errors) == 1 and "dot.png" in errors[0] and "Traceback" not in captured.err
    for name, (w, h) in sizes.items():
        if name != "dot":
            assert np.asarray(Image.open(dataset / "depth_maps" / f"{name}.png")).shape == (h, w)
    # an intrinsics entry lost or edited is put back from the depth map's own record, without running the model
    intrinsics = json.loads((dataset / "intrinsics.json").read_text())
    (dataset / "intrinsics.json").write_text(json.dumps({"a": [1, 1, 1, 1]}))
    from dataengine.depth import DepthEstimator
    monkeypatch.setattr(DepthEstimator, "predict", lambda *a: (_ for _ in ()).throw(AssertionError("asked again")))
    assert cli(estimate_depth_cli, "--dataset-path", dataset, "--model", tiny_frontend["depth_pro"], "--device", "cpu") == 1
    assert json.loads((dataset / "intrinsics.json").read_text()) == intrinsics
    # a photo replaced by another under the same name gets new depth, whatever the files' times say
    stamp = (dataset / "images" / "a.png").stat()
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(dataset / "images" / "a.png")
    os.utime(dataset / "images" / "a.png", ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    monkeypatch.undo()
    capsys.readouterr()
    assert cli(estimate_depth_cli, "--dataset-path", dataset, "--model", tiny_frontend["depth_pro"], "--device", "cpu") == 1
    assert "1 done, 4 skipped" in capsys.readouterr().out


# ---- wrappers behave like commands; hub models fail fast offline ----------------------------------------------------

WRAPPERS = [("run_spacesgg.sh", 1), ("dataengine/real_images.sh", 1), ("dataengine/grid_data.sh", 0),
            ("dataengine/extraction_data.sh", 0), ("spatial_id/small_id_grid.sh", 0), ("spatial_id/batch_extraction.sh", 0),
            ("spatial_id/tiny_spatial_demo.sh", 0), ("slurm/merge.sh", 0)]


@pytest.mark.parametrize("script,required", WRAPPERS, ids=[w[0] for w in WRAPPERS])
def test_wrappers_print_usage_and_refuse_wrong_arguments_before_running(script, required, tmp_path):
    def bash(*args):
        return subprocess.run(["bash", str(ROOT / script), *map(str, args)], capture_output=True, text=True, cwd=tmp_path,
                              env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}, timeout=60)
    for flag in ("-h", "--help"):
        proc = bash(flag)
        assert proc.returncode == 0 and "Usage:" in proc.stdout and "Settings" in proc.stdout, proc.stderr
    wrong = [bash("--bogus"), bash(*["x"] * 3)]                      # an unknown option; one argument too many
    if required:
        wrong += [bash(), bash(tmp_path / "no_such_dataset")]         # a missing argument; a missing folder
    elif script.startswith("spatial_id/") and script != "spatial_id/tiny_spatial_demo.sh":
        wrong.append(bash(tmp_path / "no_such_grid"))
    for proc in wrong:
        assert proc.returncode == 2 and proc.stderr.startswith("error:") and "Usage:" in proc.stderr, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []            # nothing ran, nothing was written


@pytest.mark.parametrize("command", ["compute_id", "wrapper", "estimate_depth"])
def test_hub_models_fail_fast_and_name_the_offline_form(command, tmp_path, one_pair, monkeypatch):
    """Offline (the hub out of reach, the model not cached): one line within seconds, not minutes of retries."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path / "hf"), PYTHON=sys.executable, DEVICE="cpu")
    argv = {"compute_id": [sys.executable, ROOT / "spatial_id" / "compute_id.py", "--model", "llava-7b", "--image-dir",
                           one_pair, "--output-dir", tmp_path / "ids"],
            "wrapper": ["bash", ROOT / "spatial_id" / "small_id_grid.sh", one_pair, tmp_path / "ids"],
            "estimate_depth": [sys.executable, ROOT / "dataengine" / "estimate_depth.py", "--dataset-path", tmp_path,
                               "--model", "depth-pro"]}[command]
    if command == "estimate_depth":
        (tmp_path / "images").mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / "images" / "a.png")
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, env=env, timeout=120)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "not in the local model cache" in errors[0] and "HF_HUB_OFFLINE=1" in errors[0]
    assert ("MODELS=" in errors[0]) if command != "estimate_depth" else ("--model DIR" in errors[0])
