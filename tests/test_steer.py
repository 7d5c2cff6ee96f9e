"""Steering with universal spatial IDs: the trained tiny LLaVA's answer follows the steered side and a same-norm
random direction does not; a random model follows nothing; only the target's state at layer L moves."""

import json

import pytest
import torch

from conftest import ROOT, run_inprocess
from spatial_id.ids import save_pt

TRAINED = ROOT / "spatial_id" / "assets" / "tiny-spatial-llava"


@pytest.fixture(scope="module")
def grids(objects_dir, tmp_path_factory):
    """Grid images (size 224) of four training pairs, for universal IDs, and of two held-out pairs, to steer."""
    from dataengine.grid import tile_pair
    record = json.loads((TRAINED / "training.json").read_text())
    root = tmp_path_factory.mktemp("steer_grids")
    for a, b in record["training_pairs"][:4]:
        tile_pair(a, b, objects_dir, root / "train", sizes=(224,))
    for a, b in record["heldout_pairs"][:2]:
        tile_pair(a, b, objects_dir, root / "held", sizes=(224,))
    return root


@pytest.fixture(scope="module")
def random_model(tmp_path_factory):
    from spatial_id.tiny import build_tiny_model
    s = json.loads((TRAINED / "training.json").read_text())["settings"]
    return build_tiny_model("llava", tmp_path_factory.mktemp("random") / "m", layers=s["layers"], hidden=s["hidden"],
                            image_size=s["image_size"])


def _universal(model, grids, out):
    m = f"llava-7b={model}"
    assert run_inprocess("spatial_id/compute_id.py", "--model", m, "--image-dir", grids / "train", "--output-dir", out,
                         "--per-pair", "--device", "cpu").returncode == 0
    assert run_inprocess("spatial_id/average_id.py", "--input-dir", out, "--model", "llava-7b", "--image-dir",
                         grids / "train").returncode == 0
    return out / "llava-7b.pt"


def _steer(model, ids, grids, out, *extra):
    return run_inprocess("spatial_id/steer.py", "--model", f"llava-7b={model}", "--ids", ids, "--image-dir", grids / "held",
                         "--output-dir", out, "--device", "cpu", *extra)


def test_trained_model_follows_the_steering_and_the_control_does_not(grids, tmp_path):
    ids = _universal(TRAINED, grids, tmp_path / "ids")
    proc = _steer(TRAINED, ids, grids, tmp_path / "s", "--layers", "2,3", "--scales", 0, 0.5, 1, 2, "--norm", "absolute")
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "s" / "steering.json").read_text())
    best = max(result["layers"].values(), key=lambda by: by["1"]["follow"])
    assert best["1"]["follow"] >= 0.9 and best["1"]["control_follow"] <= 0.1 and best["1"]["n"] >= 10
    follows = [best[s]["follow"] for s in ("0", "0.5", "1", "2")]
    assert follows[0] <= 0.1 and follows == sorted(follows)                    # a dose-response from about 0
    assert best["1"]["margin_shift"] > 0 and best["1"]["margin_shift"] > abs(best["1"]["control_margin_shift"])
    assert (tmp_path / "s" / "steering.png").stat().st_size > 5000
    # a rerun with the same everything reuses the result; other scales or another IDs file do not
    stamp = (tmp_path / "s" / "steering.json").stat().st_mtime_ns
    assert _steer(TRAINED, ids, grids, tmp_path / "s", "--layers", "2,3", "--scales", 0, 0.5, 1, 2, "--norm",
                  "absolute").returncode == 0
    assert (tmp_path / "s" / "steering.json").stat().st_mtime_ns == stamp
    assert _steer(TRAINED, ids, grids, tmp_path / "s", "--layers", "2,3", "--scales", 0, 1, "--norm", "absolute").returncode == 0
    assert list(json.loads((tmp_path / "s" / "steering.json").read_text())["layers"]["2"]) == ["0", "1"]
    data = torch.load(ids, weights_only=True)
    data["ids"]["universal"] = data["ids"]["universal"] * 1.5
    save_pt(ids, data)
    stamp = (tmp_path / "s" / "steering.json").stat().st_mtime_ns
    assert _steer(TRAINED, ids, grids, tmp_path / "s", "--layers", "2,3", "--scales", 0, 1, "--norm", "absolute").returncode == 0
    assert (tmp_path / "s" / "steering.json").stat().st_mtime_ns != stamp


def test_in_between_map_and_a_random_model_follows_nothing(grids, random_model, tmp_path):
    ids = _universal(TRAINED, grids, tmp_path / "ids")
    assert _steer(TRAINED, ids, grids, tmp_path / "all", "--layers", "2", "--scales", 0, 1, "--norm", "absolute",
                  "--targets", "all").returncode == 0
    cells = json.loads((tmp_path / "all" / "steering.json").read_text())["cells"]["2"]["1"]
    by_column = [sum(v for c, v in cells.items() if c.startswith(f"{i},")) / 4 for i in range(4)]
    assert by_column == sorted(by_column) and by_column[3] - by_column[0] > 0.3   # further right, more "right"
    assert (tmp_path / "all" / "in_between.png").is_file()
    random_ids = _universal(random_model, grids, tmp_path / "rids")
    assert _steer(random_model, random_ids, grids, tmp_path / "r", "--layers", "1-3", "--scales", 0, 1, 5,
                  "--norm", "absolute").returncode == 0
    for by in json.loads((tmp_path / "r" / "steering.json").read_text())["layers"].values():
        for v in by.values():
            assert abs(v["follow"] - by["0"]["follow"]) <= 0.15 and abs(v["follow"] - v["control_follow"]) <= 0.15


def test_only_the_target_words_state_at_layer_l_moves(grids):
    from PIL import Image

    from spatial_id.extract import Extractor
    from spatial_id.intervention import Intervener
    from spatial_id.registry import resolve_model
    ex = Extractor(resolve_model(f"llava-7b={TRAINED}"), "cpu")
    folder = sorted((grids / "held").iterdir())[0]
    a, b = folder.name.split("_")
    query = f"Is {b} to the left or right of {a}?"
    text = ex.prompt(query)
    target = ex.target_position(text, query, b)
    image = Image.open(sorted(folder.glob("*.png"))[0]).convert("RGB")
    inputs = ex._inputs([text], [image])
    n = int(inputs["attention_mask"].sum())
    position = n - target.tail
    delta = torch.randn(1, ex.model.config.get_text_config().hidden_size)
    layer = 2

    def states(shift):
        """The state entering each decoder layer and the final norm (= hidden-state index 0, 1, ...)."""
        seen = []
        hooks = [m.register_forward_pre_hook(lambda mod, args, kwargs: seen.append(
            (args[0] if args else kwargs["hidden_states"]).detach().clone()), with_kwargs=True)
            for m in [*ex.decoder.layers, ex.decoder.norm]]
        try:
            with torch.no_grad():
                if shift:
                    with Intervener(ex).shifted(torch.tensor([0]), torch.tensor([position]), layer, delta, relative=True):
                        ex.model(**inputs)
                else:
                    ex.model(**inputs)
        finally:
            for h in hooks:
                h.remove()
        return seen
    plain, moved = states(False), states(True)
    for k in range(layer):
        assert torch.equal(plain[k], moved[k])
    diff = (moved[layer] - plain[layer]).abs().sum(dim=-1)[0]
    assert diff[position] > 0 and diff.nonzero().flatten().tolist() == [position]
    assert torch.allclose((moved[layer] - plain[layer])[0, position].norm(), delta.norm() * plain[layer][0, position].norm(),
                          rtol=1e-4)
    for k in range(layer + 1, len(plain)):
        assert torch.equal(plain[k][0, :position], moved[k][0, :position])     # causal: nothing before the word moves


@pytest.mark.parametrize("case", ["another model", "another hidden size", "layer out of range", "scale NaN", "scale negative"])
def test_bad_steering_input_is_one_line(case, grids, random_model, tmp_path):
    ids = _universal(TRAINED, grids, tmp_path / "ids")
    args = ["--layers", "2", "--scales", "0", "1"]
    model = TRAINED
    if case == "another model":
        model = random_model
    elif case == "another hidden size":
        data = torch.load(ids, weights_only=True)
        data["ids"] = {k: v[..., :7] for k, v in data["ids"].items()}
        save_pt(ids, data)
    elif case == "layer out of range":
        args[1] = "9"
    elif case == "scale NaN":
        args[4] = "nan"
    else:
        args[4] = "-1"
    proc = _steer(model, ids, grids, tmp_path / "s", *args)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "s" / "steering.json").exists()
