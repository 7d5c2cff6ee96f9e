"""The committed tiny spatial LLaVA (spatial_id/assets/tiny-spatial-llava): it answers held-out pairs, its IDs
move its answers where a random model's do not, and train_tiny.py makes such a model reproducibly."""

import json

import pytest
import torch

from conftest import ROOT, run_inprocess
from dataengine.grid import tile_pair
from spatial_id.extract import Extractor
from spatial_id.ids import compute_ids, load_pt, pair_folders, read_pair
from spatial_id.intervention import DIRECTIONS, Intervener, flip_experiment
from spatial_id.registry import ModelChoice
from spatial_id.tiny import build_tiny_model
from spatial_id.training import MIN_ACCURACY

ASSET = ROOT / "spatial_id" / "assets" / "tiny-spatial-llava"
RECORD = json.loads((ASSET / "training.json").read_text())


@pytest.fixture(scope="session")
def heldout_grid(tmp_path_factory, objects_dir):
    """Grid images (random design, the largest and smallest size) of held-out pairs with distinct targets, from fresh
    stand-in renders."""
    root = tmp_path_factory.mktemp("heldout")
    pairs, targets = [], set()
    for a, b in RECORD["heldout_pairs"]:
        if b not in targets and len(pairs) < 4:
            pairs.append((a, b))
            targets.add(b)
    for a, b in pairs:
        tile_pair(a, b, objects_dir, root / "grid", sizes=[max(RECORD["sizes"]), min(RECORD["sizes"])])
    return root / "grid"


@pytest.fixture(scope="session")
def trained():
    return Extractor(ModelChoice("llava-7b", str(ASSET), "llava"), device="cpu")


def test_committed_model_and_its_record():
    size = sum(p.stat().st_size for p in ASSET.iterdir())
    assert size <= 20 * 2 ** 20
    held = {tuple(p) for p in RECORD["heldout_pairs"]}
    trained_on = {tuple(p) for p in RECORD["training_pairs"]}
    assert len(held) >= 10 and not held & trained_on and all(a != b for a, b in held)
    assert len(held | trained_on) == 90                       # every ordered pair of the ten objects, once
    assert RECORD["query"] == DIRECTIONS["horizontal"]["query"] and RECORD["sizes"] == [224, 174, 124, 74]
    assert min(RECORD["accuracy"]["heldout"].values()) >= MIN_ACCURACY == 0.9
    assert (ROOT / RECORD["objects_dir"]).resolve().is_relative_to(ROOT)


def _answers(intervener, folder, direction):
    """(predicted, true) answer indices of every image of a pair folder whose objects differ on that axis."""
    ex = intervener.ex
    a, b, entries = read_pair(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    axis = DIRECTIONS[direction]["axis"]
    query = DIRECTIONS[direction]["query"].format(a=a, b=b)
    text = ex.prompt(query)
    target, answers = ex.target_position(text, query, b), intervener.answer_ids(text)
    from PIL import Image
    images, truth = [], []
    for (path, cell), image in zip(entries, manifest["images"]):
        ref = image["reference"]["cell"]
        if cell[axis] != ref[axis]:
            images.append(Image.open(path).convert("RGB"))
            truth.append(int(cell[axis] > ref[axis]))
    logits = intervener.logits(ex._inputs([text] * len(images), images), target, 0, None, answers)
    return logits.argmax(dim=1), torch.tensor(truth)


def test_trained_model_answers_heldout_pairs(trained, heldout_grid):
    for direction in DIRECTIONS:
        intervener = Intervener(trained, direction)
        got = [_answers(intervener, folder, direction) for folder in pair_folders(heldout_grid)]
        predicted, truth = torch.cat([g[0] for g in got]), torch.cat([g[1] for g in got])
        assert len(truth) >= 80
        assert (predicted == truth).float().mean() >= 0.9, direction


def _flip_rates(extractor, grid, tmp, layers):
    compute_ids(extractor, grid, tmp, layers=layers)
    ids = load_pt(tmp / f"{extractor.choice.name}.pt")
    results = flip_experiment(Intervener(extractor), pair_folders(grid), ids, layers, DIRECTIONS["horizontal"]["query"])
    return results


def test_swapping_ids_flips_the_trained_model_not_a_random_one(trained, heldout_grid, tmp_path):
    results = _flip_rates(trained, heldout_grid, tmp_path / "trained", [1, 2])
    margins = {k: r["crossing"] - r["control"] for k, r in results.items()}
    assert max(margins.values()) >= 0.3, results
    best = max(margins, key=margins.get)
    assert results[best]["crossing"] > results[best]["not_crossing"] + 0.3
    random_dir = build_tiny_model("llava", tmp_path / "random", layers=4, hidden=128, image_size=64, patch=16)
    rand = Extractor(ModelChoice("llava-7b", str(random_dir), "llava"), device="cpu")
    results = _flip_rates(rand, heldout_grid, tmp_path / "random_ids", [2])
    for r in results.values():
        assert abs(r["crossing"] - r["control"]) < 0.15, results


def test_train_tiny_short_schedule_saves_a_loadable_reproducible_model(tmp_path, objects_dir):
    args = ["--steps", "12", "--answer-steps", "3", "--pool", "64", "--eval-images", "48", "--workers", "1", "--objects-dir",
            objects_dir]
    first = run_inprocess("spatial_id/train_tiny.py", "--output-dir", tmp_path / "a", *args)
    assert first.returncode == 1, first.stderr          # 12 steps do not learn the task: said, and exit 1
    record = json.loads((tmp_path / "a" / "training.json").read_text())
    assert record["settings"]["steps"] == 12 and record["accuracy"]["heldout_images"] == 48
    stamp = (tmp_path / "a" / "model.safetensors").stat().st_mtime_ns
    again = run_inprocess("spatial_id/train_tiny.py", "--output-dir", tmp_path / "a", *args)
    assert again.returncode == 1                         # finished with these settings: not redone, still unlearned
    assert (tmp_path / "a" / "model.safetensors").stat().st_mtime_ns == stamp
    second = run_inprocess("spatial_id/train_tiny.py", "--output-dir", tmp_path / "b", *args[:-2], "--workers", "2",
                           "--objects-dir", objects_dir)
    assert second.returncode == 1
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()
    ex = Extractor(ModelChoice("llava-7b", str(tmp_path / "a"), "llava"), device="cpu")
    query = DIRECTIONS["horizontal"]["query"].format(a="camel", b="teapot")
    assert ex.target_position(ex.prompt(query), query, "teapot").subtokens == ["Ġteapot"]   # a token of its own
    other = run_inprocess("spatial_id/train_tiny.py", "--output-dir", tmp_path / "a", "--steps", "13", *args[2:])
    assert other.returncode == 2                         # a model of other settings is not overwritten
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "notes.txt").write_text("mine")
    assert run_inprocess("spatial_id/train_tiny.py", "--output-dir", tmp_path / "c", *args).returncode == 2
