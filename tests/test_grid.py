"""Spatial-ID grid data: naming, manifest boxes against pixels, determinism, resume and bad input."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from batchkit.errors import UserError
from conftest import ROOT
from dataengine.grid import load_render, make_grid_data, tile_pair


def _check_pair(folder, a, b, grid=4, cell=224, sizes=(224, 174, 124, 74), background=0):
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["pair"] == [a, b] and manifest["grid"] == grid and manifest["cell"] == cell
    names = sorted(p.name for p in folder.glob("*.png"))
    assert len(names) == grid * grid * len(sizes) == len(manifest["images"])
    assert names == sorted(f"{a}_{b}_{i}_{j}_{s}.png" for i in range(grid) for j in range(grid) for s in sizes)
    for entry in manifest["images"]:
        i, j, s = entry["file"][:-4].split("_")[2:]
        assert entry["target"]["cell"] == [int(i), int(j)] and entry["size"] == int(s)
        assert entry["reference"]["cell"] != entry["target"]["cell"]
        image = np.asarray(Image.open(folder / entry["file"]))
        assert image.shape == (grid * cell, grid * cell, 3)
        foreground = (image != background).any(-1)
        inside = np.zeros_like(foreground)
        for role in ("target", "reference"):
            x0, y0, x1, y1 = entry[role]["box"]
            ci, cj = entry[role]["cell"]
            assert ci * cell <= x0 < x1 <= (ci + 1) * cell and cj * cell <= y0 < y1 <= (cj + 1) * cell
            assert foreground[y0:y1, x0:x1].any(), (entry["file"], role)
            inside[y0:y1, x0:x1] = True
        assert not foreground[~inside].any(), entry["file"]
    return manifest


def test_pair_files_manifest_and_pixels(objects_dir, tmp_path):
    assert tile_pair("camel", "frog", objects_dir, tmp_path) == "done"
    manifest = _check_pair(tmp_path / "camel_frog", "camel", "frog")
    for entry in manifest["images"]:
        x0, y0, x1, y1 = entry["target"]["box"]
        assert x1 - x0 == y1 - y0 == entry["size"]


def test_same_seed_same_bytes_other_seed_other_layout(objects_dir, tmp_path):
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        tile_pair("dog", "teapot", objects_dir, tmp_path / name, sizes=[124], seed=seed)
    files = sorted(p.name for p in (tmp_path / "a" / "dog_teapot").iterdir())
    for f in files:
        assert (tmp_path / "a" / "dog_teapot" / f).read_bytes() == (tmp_path / "b" / "dog_teapot" / f).read_bytes()
    ref = [json.loads((tmp_path / n / "dog_teapot" / "manifest.json").read_text())["images"] for n in ("a", "c")]
    assert [e["reference"]["cell"] for e in ref[0]] != [e["reference"]["cell"] for e in ref[1]]


def test_resume_and_refusing_another_configuration(objects_dir, tmp_path):
    assert tile_pair("cake", "log", objects_dir, tmp_path, sizes=[74]) == "done"
    folder = tmp_path / "cake_log"
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert tile_pair("cake", "log", objects_dir, tmp_path, sizes=[74]) == "skipped"
    (folder / "cake_log_2_3_74.png").unlink()
    assert tile_pair("cake", "log", objects_dir, tmp_path, sizes=[74]) == "done"
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    with pytest.raises(UserError, match="another configuration.*seed: 0 -> 5.*delete"):
        tile_pair("cake", "log", objects_dir, tmp_path, sizes=[74], seed=5)


def test_options_no_same_row_or_col_variation_and_backgrounds(objects_dir, tmp_path):
    tile_pair("robot", "person", objects_dir, tmp_path / "v", sizes=[174, 74], no_same_row_or_col=True, local_variation=True)
    manifest = _check_pair(tmp_path / "v" / "robot_person", "robot", "person", sizes=(174, 74))
    for e in manifest["images"]:
        assert e["reference"]["cell"][0] != e["target"]["cell"][0] and e["reference"]["cell"][1] != e["target"]["cell"][1]
    tile_pair("fan", "frog", objects_dir, tmp_path / "w", grid=3, cell_size=160, sizes=[150], background="white")
    _check_pair(tmp_path / "w" / "fan_frog", "fan", "frog", grid=3, cell=160, sizes=(150,), background=255)
    backgrounds = tmp_path / "bg"
    backgrounds.mkdir()
    Image.fromarray(np.full((300, 400, 3), (10, 200, 30), np.uint8)).save(backgrounds / "green.png")
    tile_pair("fan", "frog", objects_dir, tmp_path / "f", sizes=[124], background=str(backgrounds))
    image = np.asarray(Image.open(tmp_path / "f" / "fan_frog" / "fan_frog_0_0_124.png"))
    assert (image[-1, -1] == (10, 200, 30)).all()


def test_bad_inputs(objects_dir, tmp_path):
    with pytest.raises(UserError, match="object size 300 px does not fit a 224 px cell"):
        tile_pair("camel", "frog", objects_dir, tmp_path, sizes=[300])
    with pytest.raises(UserError, match="unknown object 'unicorn'.*stand-ins"):
        make_grid_data([("unicorn", "frog")], tmp_path, objects_dir=objects_dir)
    rgb = tmp_path / "objs"
    rgb.mkdir()
    white = np.full((64, 64, 3), 255, np.uint8)
    white[16:48, 16:48] = (200, 30, 30)
    Image.fromarray(white).save(rgb / "block.png")
    Image.open(objects_dir / "frog.png").save(rgb / "frog.png")
    with pytest.raises(UserError, match="block.png: render has no transparency.*--key-background"):
        tile_pair("block", "frog", rgb, tmp_path / "o")
    rgba = load_render(rgb / "block.png", key_background="white")
    assert rgba[..., 3].sum() == 32 * 32 * 255
    assert tile_pair("block", "frog", rgb, tmp_path / "o", sizes=[64], key_background="white") == "done"


def _bash(script, *args, cwd, **settings):
    env = dict(os.environ, PYTHON=sys.executable, **settings)      # the interpreter running the tests, venv or not
    return subprocess.run(["bash", str(ROOT / "dataengine" / script), *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=900, env=env)


def test_wrappers_from_another_directory_resume(tmp_path):
    proc = _bash("grid_data.sh", "small", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "grid data: 2 done, 0 skipped, 0 failed" in proc.stdout
    for pair in ("camel_frog", "dog_teapot"):
        a, b = pair.split("_")
        _check_pair(tmp_path / "small" / pair, a, b)
    proc = _bash("grid_data.sh", "small", cwd=tmp_path)
    assert "0 done, 2 skipped" in proc.stdout
    proc = _bash("extraction_data.sh", tmp_path / "large", cwd=tmp_path, CELL="40", SIZES="40 20")   # small, fast
    assert proc.returncode == 0, proc.stderr
    pairs = sorted(p.name for p in (tmp_path / "large").iterdir())
    assert len(pairs) == 90 and all(len(list((tmp_path / "large" / p).glob("*.png"))) == 32 for p in pairs)
    _check_pair(tmp_path / "large" / "fan_log", "fan", "log", cell=40, sizes=(40, 20))


def test_reference_balanced_layout(objects_dir, tmp_path):
    """--references all: every target cell and size, once per other reference cell, in ref_{ri}_{rj}/."""
    assert tile_pair("camel", "frog", objects_dir, tmp_path, grid=3, cell_size=40, sizes=[40, 20], references="all") == "done"
    folder = tmp_path / "camel_frog"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["references"] == "all" and len(manifest["images"]) == 9 * 8 * 2
    seen = set()
    for entry in manifest["images"]:
        ri, rj = entry["reference"]["cell"]
        i, j = entry["target"]["cell"]
        assert (ri, rj) != (i, j) and entry["file"] == f"ref_{ri}_{rj}/camel_frog_{i}_{j}_{entry['size']}.png"
        image = np.asarray(Image.open(folder / entry["file"]))
        x0, y0, x1, y1 = entry["reference"]["box"]
        assert image[y0:y1, x0:x1].any() and ri * 40 <= x0 and x1 <= (ri + 1) * 40
        seen.add((ri, rj, i, j, entry["size"]))
    assert len(seen) == 144 and sorted(p.name for p in folder.iterdir() if p.is_dir()) == sorted(
        f"ref_{i}_{j}" for j in range(3) for i in range(3))
    assert tile_pair("camel", "frog", objects_dir, tmp_path, grid=3, cell_size=40, sizes=[40, 20], references="all") == "skipped"
    with pytest.raises(UserError, match="references"):                 # the other design is another configuration
        tile_pair("camel", "frog", objects_dir, tmp_path, grid=3, cell_size=40, sizes=[40, 20])
