"""Spatial-ID extraction on tiny random-weight models of all six families, loaded as users load real ones."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from batchkit.errors import UserError
from conftest import ROOT, run_inprocess, run_script
from dataengine.grid import tile_pair
from spatial_id.extract import QUERY, Extractor
from spatial_id.ids import ALL_LAYERS, axes, extract_pair, made_with, read_pair
from spatial_id.registry import FAMILIES, ModelChoice, resolve_dtype, resolve_model
from spatial_id.tiny import build_tiny_model

SIZES = [224, 74]


@pytest.fixture(scope="session")
def objects_for_grid(objects_dir):
    return objects_dir


@pytest.fixture(scope="session")
def grid_dir(tmp_path_factory, objects_for_grid):
    """Two pairs, 16 cells x 2 sizes each."""
    root = tmp_path_factory.mktemp("grid")
    objects = objects_for_grid
    for a, b in (("camel", "frog"), ("dog", "teapot")):
        tile_pair(a, b, objects, root / "grid", sizes=SIZES)
    return root / "grid"


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {family: build_tiny_model(family, root / family) for family in FAMILIES}


def _images(folder, n):
    _, _, entries = read_pair(folder)
    return [Image.open(p).convert("RGB") for p, _ in entries[:n]]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_hooks_equal_output_hidden_states_batched_and_text_only(family, tiny_models, grid_dir):
    ex = Extractor(ModelChoice(family, str(tiny_models[family]), family), device="cpu")
    query = QUERY.format(a="camel", b="frog")
    text = ex.prompt(query, with_image=True)
    target = ex.target_position(text, query, "frog")
    assert len(target.subtokens) > 1 and target.subtokens[-1].endswith("g")     # "frog" splits; the last piece is read
    images = _images(grid_dir / "camel_frog", 3)
    layers = ex.resolve_layers(None)
    assert layers == list(range(ex.model.config.get_text_config().num_hidden_layers + 1))
    batched = ex.hidden([text] * 3, images, target, layers)
    for r, image in enumerate(images):
        single = ex.hidden([text], [image], target, layers)[:, 0]
        torch.testing.assert_close(batched[:, r], single, atol=1e-4, rtol=0)
        inputs = ex._inputs([text], [image])
        with torch.no_grad():
            reference = ex.model(**inputs, output_hidden_states=True).hidden_states
        position = inputs["input_ids"].shape[1] - target.tail
        assert len(reference) == len(layers)
        for k in layers:
            torch.testing.assert_close(single[k], reference[k][0, position].float(), atol=1e-4, rtol=0)
    partial = ex.hidden([text], images[:1], target, [1, 2])              # a subset of layers stops early
    torch.testing.assert_close(partial, batched[1:3, :1], atol=1e-4, rtol=0)
    plain = ex.prompt(query, with_image=False)
    for word in ("left", "right"):
        t = ex.target_position(plain, query, word)
        text_layers = ex.resolve_layers(None, with_image=False)
        got = ex.hidden([plain], None, t, text_layers)[:, 0]
        inputs = ex._inputs([plain], None)
        with torch.no_grad():
            reference = ex.model(**inputs, output_hidden_states=True).hidden_states
        assert len(reference) == len(text_layers)
        for k in text_layers:
            torch.testing.assert_close(got[k], reference[k][0, inputs["input_ids"].shape[1] - t.tail].float(),
                                       atol=1e-4, rtol=0)


def test_rows_of_different_lengths_batched_equal_unbatched(tiny_models, grid_dir):
    """Qwen2-VL gives each image as many tokens as its size asks: a batch of rows of different lengths."""
    ex = Extractor(ModelChoice("qwen2-2b", str(tiny_models["qwen2_vl"]), "qwen2_vl"), device="cpu")
    processor = ex.processor.image_processor
    processor.size = {"shortest_edge": 28 * 28, "longest_edge": 84 * 84}     # the image size picks the token count
    query = QUERY.format(a="camel", b="frog")
    text = ex.prompt(query, with_image=True)
    target = ex.target_position(text, query, "frog")
    big = _images(grid_dir / "camel_frog", 1)[0]
    images = [big, big.resize((448, 224)), big.resize((224, 224))]
    lengths = ex._inputs([text] * 3, images)["attention_mask"].sum(dim=1).tolist()
    assert len(set(lengths)) > 1, lengths
    layers = ex.resolve_layers(None)
    batched = ex.hidden([text] * 3, images, target, layers)
    for r, image in enumerate(images):
        torch.testing.assert_close(batched[:, r], ex.hidden([text], [image], target, layers)[:, 0], atol=1e-4, rtol=0)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_end_to_end_through_the_cli(family, tiny_models, grid_dir, tmp_path):
    run = run_script if family == "llava" else run_inprocess           # one family as a real command line
    proc = run("spatial_id/compute_id.py", "--model", f"{_alias(family)}={tiny_models[family]}", "--image-dir",
                      grid_dir, "--output-dir", tmp_path, "--batch-size", "8", "--with-text", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    name = _alias(family)
    data = torch.load(tmp_path / f"{name}.pt", weights_only=True)
    assert set(data["ids"]) == {"frog", "teapot", "universal"}
    n_layers = len(data["layers"])
    assert data["ids"]["frog"].shape[:2] == (n_layers, 32) and data["ids"]["frog"].dtype == torch.float32
    text = torch.load(tmp_path / f"{name}_text.pt", weights_only=True)
    assert set(text["embeds"]) == {"left", "right"}


def _alias(family):
    return {"llava": "llava-7b", "qwen2_vl": "qwen2-2b", "qwen2_5_vl": "qwen-3b", "gemma3": "gemma-4b",
            "internvl": "internvl-1b", "mllama": "llama-11b"}[family]


def test_id_files_centring_universal_axes(tiny_models, grid_dir, tmp_path):
    model = f"llava-7b={tiny_models['llava']}"
    single, per_pair = tmp_path / "single", tmp_path / "per_pair"
    assert run_inprocess("spatial_id/compute_id.py", "--model", model, "--image-dir", grid_dir, "--output-dir", single,
                      "--batch-size", "5").returncode == 0
    proc = run_inprocess("spatial_id/compute_id.py", "--model", model, "--image-dir", grid_dir, "--output-dir", per_pair,
                      "--per-pair", "--batch-size", "16")
    assert proc.returncode == 0 and "2 done" in proc.stdout
    assert run_inprocess("spatial_id/average_id.py", "--input-dir", per_pair, "--model", "llava-7b",
                      "--image-dir", grid_dir).returncode == 0
    for f in (single / "llava-7b.pt", per_pair / "llava-7b.pt"):
        assert run_inprocess("spatial_id/compute_axes.py", "--id-file", f).returncode == 0
    data = torch.load(single / "llava-7b.pt", weights_only=True)
    meta = data["meta"]
    assert meta["model"] == "llava-7b" and meta["pairs"] == ["camel_frog", "dog_teapot"] and meta["dtype"] == "float32"
    assert meta["query"]["frog"] == "Is frog to the left or right of camel?" and meta["subtokens"]["frog"][-1] == "g"
    assert data["cells"][:2] == [[0, 0, 224], [1, 0, 224]] and len(data["cells"]) == 32
    for word in ("frog", "teapot"):
        assert data["ids"][word].mean(dim=1).abs().max() < 1e-5                       # mean-centred per pair
    torch.testing.assert_close(data["ids"]["universal"], (data["ids"]["frog"] + data["ids"]["teapot"]) / 2)
    pair = torch.load(per_pair / "camel_frog" / "llava-7b.pt", weights_only=True)
    torch.testing.assert_close(pair["ids"]["frog"], data["ids"]["frog"], atol=1e-4, rtol=0)   # batch 16 vs 5: same
    universal = torch.load(per_pair / "llava-7b.pt", weights_only=True)
    torch.testing.assert_close(universal["ids"]["universal"], data["ids"]["universal"], atol=1e-4, rtol=0)
    # the axes, recomputed from their definition with plain loops
    ids, cells = data["ids"]["universal"], data["cells"]
    at = {(i, j): k for k, (i, j, s) in enumerate(cells) if s == 224}
    x = sum(ids[:, at[(x2, j)]] - ids[:, at[(x1, j)]] for j in range(4) for x1 in range(4) for x2 in range(x1 + 1, 4)) / 24
    y = sum(ids[:, at[(i, y2)]] - ids[:, at[(i, y1)]] for i in range(4) for y1 in range(4) for y2 in range(y1 + 1, 4)) / 24
    xf = torch.load(single / "llava-7b_x.pt", weights_only=True)
    yf = torch.load(single / "llava-7b_y.pt", weights_only=True)
    torch.testing.assert_close(xf["axis"]["universal"], x, atol=1e-6, rtol=0)
    torch.testing.assert_close(yf["axis"]["universal"], y, atol=1e-6, rtol=0)
    assert set(xf["axis"]) == {"frog", "teapot", "universal"} and xf["layers"] == data["layers"]
    ax, ay = axes(ids, cells)
    torch.testing.assert_close(ax, x, atol=1e-6, rtol=0)


def test_fig5_cli(tiny_models, grid_dir, tmp_path):
    model = f"llava-7b={tiny_models['llava']}"
    assert run_inprocess("spatial_id/compute_id.py", "--model", model, "--image-dir", grid_dir, "--output-dir", tmp_path,
                         "--with-text").returncode == 0
    proc = run_inprocess("spatial_id/fig5.py", "--id-file", tmp_path / "llava-7b.pt", "--text-file", tmp_path / "llava-7b_text.pt",
                         "--layer", "2", "--output", tmp_path / "fig5.png", "--sweep-output", tmp_path / "sweep.png")
    assert proc.returncode == 0, proc.stderr
    for png in ("fig5.png", "sweep.png"):
        data = (tmp_path / png).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 5000
        assert Image.open(tmp_path / png).size[0] > 400


def test_wrappers_resume_from_another_directory(tiny_models, grid_dir, tmp_path):
    env_models = f"llava-7b={tiny_models['llava']}"

    def bash(script, *args, layers="all"):
        return subprocess.run(["bash", str(ROOT / "spatial_id" / script), *map(str, args)], capture_output=True,
                              text=True, cwd=tmp_path, timeout=600,
                              env={"MODELS": env_models, "PATH": "/usr/bin:/bin", "PYTHON": sys.executable,
                                   "DEVICE": "cpu", "HOME": str(tmp_path), "LAYERS": layers})
    proc = bash("small_id_grid.sh", grid_dir, "small")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "small").iterdir()) == ["llava-7b.pt", "llava-7b_text.pt", "llava-7b_x.pt", "llava-7b_y.pt"]
    first = run_inprocess("spatial_id/compute_id.py", "--model", env_models, "--image-dir", grid_dir, "--output-dir",
                          tmp_path / "large", "--per-pair", "--device", "cpu", "--layers", "0,2")
    assert first.returncode == 0 and run_inprocess("spatial_id/average_id.py", "--input-dir", tmp_path / "large", "--model",
                                                   "llava-7b", "--image-dir", grid_dir).returncode == 0
    for f in (tmp_path / "large" / "camel_frog" / "llava-7b.pt", tmp_path / "large" / "llava-7b.pt"):
        assert torch.load(f, weights_only=True)["layers"] == [0, 2]
    stamp = (tmp_path / "large" / "camel_frog" / "llava-7b.pt").stat().st_mtime_ns
    again = run_inprocess("spatial_id/compute_id.py", "--model", env_models, "--image-dir", grid_dir, "--output-dir",
                          tmp_path / "large", "--per-pair", "--device", "cpu", "--layers", "0,2")
    assert again.returncode == 0 and (tmp_path / "large" / "camel_frog" / "llava-7b.pt").stat().st_mtime_ns == stamp
    # what a rerun trusts: only a file made from the same snapshot, dtype, query, layers and images
    done = tmp_path / "large" / "camel_frog" / "llava-7b.pt"
    folder = grid_dir / "camel_frog"
    source = str(Path(tiny_models["llava"]).resolve())
    assert made_with(done, source, "float32", [0, 2], [folder])
    assert not made_with(done, source, "float32", ALL_LAYERS, [folder])         # layers 0, 2 are not "all"
    assert not made_with(done, source, "float32", [0, 1, 2], [folder])
    assert not made_with(done, source + "_copy", "float32", [0, 2], [folder])   # another snapshot
    assert not made_with(done, source, "bfloat16", [0, 2], [folder])
    assert not made_with(done, source, "float32", [0, 2], [grid_dir / "dog_teapot"])
    other = Path(shutil.copytree(folder, tmp_path / "other" / "camel_frog"))
    (other / "manifest.json").write_text((other / "manifest.json").read_text() + " ")   # other images
    assert not made_with(done, source, "float32", [0, 2], [other])
    assert not made_with(done, source, "float32", [0, 2], [folder], queries={"frog": "Is the frog left of the camel?"})


def test_bad_inputs(tiny_models, grid_dir, tmp_path):
    def one_line(proc, *needles):
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        line = proc.stderr.strip().splitlines()[-1]
        assert line.startswith("error:") and all(n in line for n in needles), line
    one_line(run_inprocess("spatial_id/compute_id.py", "--model", "llava-70b", "--image-dir", grid_dir, "--output-dir", tmp_path),
             "unknown model alias 'llava-70b'", "llava-7b")
    one_line(run_inprocess("spatial_id/compute_id.py", "--model", "qwen-3b", "--model-path", tmp_path / "nowhere", "--image-dir",
                        grid_dir, "--output-dir", tmp_path), "nowhere", "config.json missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    one_line(run_inprocess("spatial_id/compute_id.py", "--model", f"llava-7b={tiny_models['llava']}", "--image-dir", empty,
                        "--output-dir", tmp_path), "no pair folder")
    mixed = tmp_path / "mixed"
    shutil.copytree(grid_dir / "camel_frog", mixed / "camel_frog")
    Image.new("RGB", (896, 896)).save(mixed / "camel_frog" / "camel_frog_0_0_999.png")
    one_line(run_inprocess("spatial_id/compute_id.py", "--model", f"llava-7b={tiny_models['llava']}", "--image-dir", mixed,
                        "--output-dir", tmp_path), "not in its manifest", "camel_frog_0_0_999.png")
    if not torch.cuda.is_available():
        one_line(run_inprocess("spatial_id/compute_id.py", "--model", f"llava-7b={tiny_models['llava']}", "--image-dir", grid_dir,
                            "--output-dir", tmp_path, "--device", "cuda"), "--device cuda", "no GPU")
    with pytest.raises(UserError, match="float16 overflows"):
        resolve_dtype("qwen2_vl", "float16", "cuda")
    assert resolve_dtype("gemma3", "auto", "cuda") == "bfloat16" and resolve_dtype("llava", "auto", "cpu") == "float32"
    assert resolve_dtype("llava", "auto", "cuda") == "float16" and resolve_dtype("mllama", "auto", "cuda") == "float16"
    ex = Extractor(resolve_model("llava-7b", tiny_models["llava"]), device="cpu")
    query = QUERY.format(a="camel", b="frog")
    with pytest.raises(UserError, match="target word 'unicorn' is not in the query"):
        ex.target_position(ex.prompt(query), query, "unicorn")
    with pytest.raises(UserError, match="out of range"):
        ex.resolve_layers([0, 99])
    vectors, cells, layers, meta = extract_pair(ex, grid_dir / "dog_teapot", layers=[-1], batch_size=32)
    assert layers == [4] and vectors.shape[:2] == (1, 32) and meta["target"] == "teapot"
    assert np.isfinite(vectors.numpy()).all()


def test_balanced_centring_by_hand():
    """Centre within each reference position, then average over the positions, per (i, j, size)."""
    from spatial_id.ids import pair_ids
    g = torch.Generator().manual_seed(0)
    cells = [[0, 0, 9], [1, 0, 9], [1, 0, 9], [0, 0, 9], [2, 0, 9], [2, 0, 9]]
    refs = [(2, 0), (2, 0), (0, 0), (1, 0), (0, 0), (1, 0)]
    vectors = torch.randn(2, 6, 3, generator=g)
    ids, out_cells = pair_ids(vectors, cells, refs)
    assert out_cells == [[0, 0, 9], [1, 0, 9], [2, 0, 9]]
    folder_mean = {r: torch.stack([vectors[:, k] for k in range(6) if refs[k] == r]).mean(dim=0) for r in set(refs)}
    for c, cell in enumerate(out_cells):
        rows = [k for k in range(6) if cells[k] == cell]
        want = sum(vectors[:, k] - folder_mean[refs[k]] for k in rows) / len(rows)
        torch.testing.assert_close(ids[:, c], want)
    random_ids, random_cells = pair_ids(vectors, cells, [None] * 6)
    torch.testing.assert_close(random_ids, vectors - vectors.mean(dim=1, keepdim=True))
    assert random_cells == cells


def test_query_template_and_reference_balanced_extraction(tiny_models, objects_for_grid, tmp_path):
    """--query with articles: the target is still b's last sub-token; a reference-balanced pair gives 16 x sizes IDs."""
    from dataengine.grid import tile_pair
    tile_pair("camel", "frog", objects_for_grid, tmp_path / "grid", sizes=[74], references="all")
    template = "Is the {b} to the left or right of the {a}?"
    proc = run_inprocess("spatial_id/compute_id.py", "--model", f"llava-7b={tiny_models['llava']}", "--image-dir",
                         tmp_path / "grid", "--output-dir", tmp_path / "out", "--query", template, "--batch-size", "16",
                         "--layers", "0,2", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    data = torch.load(tmp_path / "out" / "llava-7b.pt", weights_only=True)
    assert data["meta"]["query"]["frog"] == "Is the frog to the left or right of the camel?"
    assert data["meta"]["subtokens"]["frog"][-1].endswith("g") and data["meta"]["design"] == "references=all"
    assert len(data["cells"]) == 16 and data["ids"]["frog"].shape[:2] == (2, 16)
    for bad in ("Is {b} left?", "Where is {c}?", "{a} {a} {b}"):
        proc = run_inprocess("spatial_id/compute_id.py", "--model", f"llava-7b={tiny_models['llava']}", "--image-dir",
                             tmp_path / "grid", "--output-dir", tmp_path / "out", "--query", bad)
        assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("error: --query"), proc.stderr


def test_probes_on_hand_made_features_and_the_cli(tiny_models, grid_dir, tmp_path):
    from spatial_id.probes import bootstrap_ci, run_probes
    g = torch.Generator().manual_seed(0)
    cells = [[i, j, 224] for j in range(4) for i in range(4)]
    direction = torch.randn(2, 8, generator=g)

    def pair(noise_seed):                       # features = column x d0 + row x d1 + small noise: linearly decodable
        n = torch.Generator().manual_seed(noise_seed)
        x = torch.stack([c[0] * direction[0] + c[1] * direction[1] for c in cells]) + 0.01 * torch.randn(16, 8, generator=n)
        return torch.stack([torch.randn(16, 8, generator=n), x]), cells   # layer 0: noise only
    results = run_probes({"a_b": pair(1), "c_d": pair(2), "e_f": pair(3)}, [0, 1], 4, heldout=["e_f"])
    assert results["train_pairs"] == ["a_b", "c_d"] and results["heldout_pairs"] == ["e_f"]
    assert results["layers"]["1"]["column"]["accuracy"] == 1.0 and results["layers"]["1"]["row"]["ci"] == [1.0, 1.0]
    assert results["layers"]["1"]["column"]["control"] < 0.6 and results["layers"]["0"]["column"]["accuracy"] < 0.6
    lo, hi = bootstrap_ci([1, 0] * 50)
    assert lo < 0.5 < hi and hi - lo < 0.25
    proc = run_inprocess("spatial_id/probe.py", "--model", f"llava-7b={tiny_models['llava']}", "--image-dir", grid_dir,
                         "--output-dir", tmp_path / "probe", "--device", "cpu", "--layers", "0,2,4")
    assert proc.returncode == 0, proc.stderr
    data = json.loads((tmp_path / "probe" / "probes.json").read_text())
    assert sorted(data["layers"]) == ["0", "2", "4"] and len(data["heldout_pairs"]) == 1
    assert (tmp_path / "probe" / "probes.png").read_bytes().startswith(b"\x89PNG")
    one = run_inprocess("spatial_id/probe.py", "--model", f"llava-7b={tiny_models['llava']}", "--image-dir",
                        grid_dir / "camel_frog", "--output-dir", tmp_path / "p2")
    assert one.returncode == 2 and "at least two pairs" in one.stderr


def test_intervention_hook_changes_only_the_target_row_at_its_layer(tiny_models, grid_dir):
    from spatial_id.intervention import Intervener
    ex = Extractor(ModelChoice("llava-7b", str(tiny_models["llava"]), "llava"), device="cpu")
    query = QUERY.format(a="camel", b="frog")
    text = ex.prompt(query, with_image=True)
    target = ex.target_position(text, query, "frog")
    inputs = ex._inputs([text], _images(grid_dir / "camel_frog", 1))
    position = inputs["input_ids"].shape[1] - target.tail
    delta = torch.randn(1, ex.model.config.text_config.hidden_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        plain = ex.model(**inputs, output_hidden_states=True).hidden_states
    intervener = Intervener(ex)
    final = len(plain) - 1
    rows, where = torch.tensor([0]), torch.tensor([position])
    for layer in (0, 2, final):
        base = ex.run(inputs, target, list(range(final + 1)))
        with torch.no_grad(), intervener.shifted(rows, where, layer, delta):
            got = ex.run(inputs, target, list(range(final + 1)))            # the extraction's hooks read after the shift
            moved = ex.model(**inputs, output_hidden_states=True).hidden_states
        torch.testing.assert_close(got[:layer], base[:layer])                   # before the swap: untouched
        torch.testing.assert_close(got[layer, 0], base[layer, 0] + delta[0], atol=1e-5, rtol=0)   # shifted by delta
        nxt = min(layer + 1, final)
        torch.testing.assert_close(moved[nxt][0, :position], plain[nxt][0, :position])   # earlier positions: untouched
        if layer < final:
            assert not torch.equal(moved[nxt][0, position], plain[nxt][0, position])     # the target: moved downstream


def test_flip_rates_by_hand_and_the_cli(tiny_models, grid_dir, tmp_path):
    from spatial_id.intervention import classify, rates
    reference = (2, 1)
    assert classify((0, 0), (3, 0), reference) == "crossing" and classify((0, 0), (1, 3), reference) == "not_crossing"
    assert classify((0, 0), (2, 2), reference) is None and classify((2, 0), (3, 0), reference) is None
    r = rates({"crossing": [1, 1, 0, 1], "not_crossing": [0, 0, 0, 1], "control": [0, 0, 0, 0]})
    assert (r["crossing"], r["not_crossing"], r["control"]) == (0.75, 0.25, 0.0) and r["ci"]["control"] == [0.0, 0.0]
    model = f"llava-7b={tiny_models['llava']}"
    assert run_inprocess("spatial_id/compute_id.py", "--model", model, "--image-dir", grid_dir, "--output-dir",
                         tmp_path / "ids", "--device", "cpu").returncode == 0
    proc = run_inprocess("spatial_id/intervene.py", "--model", model, "--ids", tmp_path / "ids" / "llava-7b.pt",
                         "--image-dir", grid_dir, "--layers", "1,3", "--cells-from", "0,0", "--output-dir", tmp_path / "iv",
                         "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    data = json.loads((tmp_path / "iv" / "interventions.json").read_text())
    assert sorted(data["layers"]) == ["1", "3"]
    for layer in data["layers"].values():
        assert layer["n"]["crossing"] > 0 and 0 <= layer["crossing"] <= 1 and 0 <= layer["control"] <= 1
    assert (tmp_path / "iv" / "interventions.png").read_bytes().startswith(b"\x89PNG")
    for extra, needle in ((("--cells-from", "9,9"), "no such cell"), (("--layers", "40"), "out of range")):
        bad = run_inprocess("spatial_id/intervene.py", "--model", model, "--ids", tmp_path / "ids" / "llava-7b.pt",
                            "--image-dir", grid_dir, "--output-dir", tmp_path / "iv2", "--device", "cpu", *extra)
        assert bad.returncode == 2 and needle in bad.stderr.strip().splitlines()[-1], bad.stderr
    other = shutil.copytree(tiny_models["llava"], tmp_path / "other_llava")
    bad = run_inprocess("spatial_id/intervene.py", "--model", f"llava-7b={other}", "--ids", tmp_path / "ids" / "llava-7b.pt",
                        "--image-dir", grid_dir, "--output-dir", tmp_path / "iv3", "--device", "cpu")
    assert bad.returncode == 2 and "not of the loaded" in bad.stderr


@pytest.mark.parametrize("family", list(FAMILIES))
def test_repeated_inputs_equal_processing_copies(family, tiny_models, grid_dir):
    from spatial_id.intervention import repeat_inputs
    ex = Extractor(ModelChoice(family, str(tiny_models[family]), family), device="cpu")
    text = ex.prompt(QUERY.format(a="camel", b="frog"))
    image = _images(grid_dir / "camel_frog", 1)
    once, copies = repeat_inputs(ex._inputs([text], image), 3), ex._inputs([text] * 3, image * 3)
    assert sorted(once) == sorted(copies)
    for key, value in copies.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(once[key], value), key
