"""The held-out benchmark, the asker and the scorer: hand-computed scores, the split kept out of training, a VLM
stand-in with a known error rate, and the committed trained tiny LLaVA answering in words."""

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, run_inprocess
from spacesgg.benchmark import image_items, in_val, make_benchmark, split_keys
from spacesgg.llm_query import query
from spacesgg.score import parse_choice, parse_metres, score_items
from spacesgg.stub_server import StubServer
from spacesgg.tags import box_text, normalise_box, ref_tag


def _q(n, answer, choices=("left", "right"), kind="left_right", image="a.png", labels=("cup", "dog")):
    return {"id": f"q{n}", "type": kind, "image": image, "image_size": [640, 480], "question": "?", "choices": list(choices),
            "answer": answer, "objects": {"A": {"label": labels[0], "box": [0, 0, 1, 1]}, "B": {"label": labels[1], "box": [0, 0, 1, 1]}}}


def test_qualitative_parsing_and_accuracy():
    assert parse_choice("Left.", ["left", "right"]) == "left"
    assert parse_choice("It is to the RIGHT of the dog!", ["left", "right"]) == "right"
    assert parse_choice("left or right, hard to say", ["left", "right"]) is None          # both: unparsed
    assert parse_choice("I cannot tell.", ["left", "right"]) is None                      # neither
    assert parse_choice("The cup is closer to the camera.", ["in front", "behind"]) == "in front"   # a synonym
    assert parse_choice("It sits underneath.", ["above", "below"]) == "below"
    assert parse_choice("The right shoe is to the left of the cup.", ["left", "right"], ["right shoe", "cup"]) == "left"
    items = [_q(0, "left"), _q(1, "right"), _q(2, "left"), _q(3, "right", image="b.png"), _q(4, "left", image="b.png")]
    predictions = {"q0": "left", "q1": "left", "q2": "left and right", "q3": "To the right."}     # q4 missing
    t = score_items(items, predictions)["types"]["left_right"]
    assert t["n"] == 5 and t["accuracy"] == pytest.approx(2 / 5) and t["unparsed"] == 1 and t["missing"] == 1
    lo, hi = t["ci"]["accuracy"]
    assert 0 <= lo <= 0.4 <= hi <= 1


@pytest.mark.parametrize("text,metres", [
    ("1.5 m", 1.5), ("about 150 cm", 1.5), ("2000mm", 2.0), ("0.002 km", 2.0), ("two metres", 2.0), ("twenty meters", 20.0),
    ("6.5 ft", 6.5 * 0.3048), ("3 feet", 0.9144), ("78 inches", 78 * 0.0254), ("10 in", 0.254), ("2 yd", 1.8288),
    ("It is 1 m, or 100 cm", 1.0), ("roughly 3", None), ("far away", None)])
def test_numbers_with_units(text, metres):
    value = parse_metres(text)
    assert (value is None) if metres is None else value == pytest.approx(metres)


def test_quantitative_success_at_the_edges():
    truth = 2.0
    answers = {"1.5 m": (1, 1), "2.5 m": (1, 1), "1.49 m": (0, 1), "2.51 m": (0, 1), "1.0 m": (0, 0), "1.01 m": (0, 1),
               "3.99 m": (0, 1), "4 m": (0, 0), "no idea": (0, 0)}
    items = [{"id": f"d{k}", "type": "distance", "image": f"i{k}.png", "image_size": [640, 480], "question": "?",
              "answer": truth, "objects": {}} for k in range(len(answers))]
    t = score_items(items, {f"d{k}": text for k, text in enumerate(answers)})["types"]["distance"]
    assert t["success_25"] == pytest.approx(np.mean([s for s, _ in answers.values()]), abs=1e-4)
    assert t["success_2x"] == pytest.approx(np.mean([s for _, s in answers.values()]), abs=1e-4)
    parsed = [parse_metres(text) for text in answers if parse_metres(text) is not None]
    assert t["abs_rel"] == pytest.approx(np.mean([abs(v - truth) / truth for v in parsed]), abs=1e-4)
    assert t["unparsed"] == 1 and t["missing"] == 0


def _sentence(s_label, s_box, predicate, o_label, o_box, width, height):
    a, b = normalise_box(s_box, width, height), normalise_box(o_box, width, height)
    return f"{ref_tag(s_label, a)} <pred>{predicate}</pred>{box_text(a)}{box_text(b)} {ref_tag(o_label, b)}."


def test_scene_graph_recall_by_asmv2s_rule():
    width, height = 640, 480                                     # not square: the padding must be undone
    chair1, chair2, cup, dog = [40, 100, 140, 300], [400, 100, 500, 300], [200, 320, 260, 380], [520, 360, 620, 470]
    triplets = [{"subject": {"label": "chair", "box": chair1}, "predicate": "left of", "object": {"label": "cup", "box": cup}},
                {"subject": {"label": "cup", "box": cup}, "predicate": "below", "object": {"label": "chair", "box": chair2}},
                {"subject": {"label": "dog", "box": dog}, "predicate": "behind", "object": {"label": "cup", "box": cup}},
                {"subject": {"label": "chair", "box": chair2}, "predicate": "left of", "object": {"label": "dog", "box": dog}}]
    item = {"id": "g", "type": "scene_graph", "image": "g.png", "image_size": [width, height], "question": "?",
            "triplets": triplets, "objects": {}}
    wide = [cup[0] - 12, cup[1] - 12, cup[2] + 12, cup[3] + 12]  # IoU with cup 3600 / 7056 = 0.51: still the cup
    wider = [cup[0] - 15, cup[1] - 15, cup[2] + 15, cup[3] + 15]  # IoU 3600 / 8100 = 0.44: not the cup
    prediction = " ".join([
        _sentence("chair", chair1, "to the left of", "cup", wide, width, height),          # synonym, IoU 0.51: recalled
        _sentence("chair", chair2, "above", "cup", cup, width, height),                    # the inverse of triplet 2: recalled
        _sentence("dog", dog, "farther", "cup", wider, width, height),                     # IoU 0.44: not recalled
        _sentence("chair", chair1, "left of", "dog", dog, width, height)])                 # the other chair: not recalled
    t = score_items([item], {"g": prediction})["types"]["scene_graph"]
    assert t["recall"] == pytest.approx(2 / 4) and t["per_image_mean_recall"] == pytest.approx(0.5)
    # per predicate (a relation and its inverse are one): left of 1/2, above/below 1/1, in front/behind 0/1
    assert t["recall_by_predicate"] == {"above": 1.0, "in front of": 0.0, "left of": 0.5}
    assert t["mean_recall"] == pytest.approx((1.0 + 0.0 + 0.5) / 3, abs=1e-4) and t["unparsed"] == 0
    assert score_items([item], {"g": "no tags at all"})["types"]["scene_graph"]["unparsed"] == 1


def test_split_is_stable_and_keeps_the_benchmark_out_of_training(mv_file, scenes_dir, tmp_path):
    keys = list(json.loads(mv_file.read_text()))
    split = split_keys(keys, 0.5, seed=3)
    assert sorted(split["val"]) == sorted(split_keys(list(reversed(keys)), 0.5, seed=3)["val"])     # by key, not order
    assert all(in_val(k, 0.5, 3) == (k in split["val"]) for k in keys) and split["val"] and split["train"]
    out = tmp_path / "bench"
    assert make_benchmark(out, anno_file=mv_file, image_root=scenes_dir / "images", val_fraction=0.5, seed=3) == 0
    assert json.loads((out / "split.json").read_text()) == split
    val_names = {k.rsplit("/", 1)[1] for k in split["val"]}
    for fn in ("create_layer_prompt", "create_rotation_prompt"):
        assert query(mv_file, fn, tmp_path / f"{fn}.json", image_root=scenes_dir / "images",
                     split=set(split["train"])) == 0
        records = json.loads((tmp_path / f"{fn}.json").read_text())
        assert records and not {r["image"] for r in records} & val_names
    everything = tmp_path / "all.json"
    assert query(mv_file, "create_layer_prompt", everything, image_root=scenes_dir / "images") == 0
    proc = run_inprocess("spacesgg/export.py", "--records", everything, "--format", "sharegpt", "--output",
                         tmp_path / "train.json", "--image-root", scenes_dir / "images", "--split", f"{out / 'split.json'}:train")
    exported = json.loads((tmp_path / "train.json").read_text())
    assert proc.returncode == 0 and exported and not {r["images"][0].rsplit("/", 1)[1] for r in exported} & val_names


def test_benchmark_answers_are_the_true_geometry_and_the_template_scores_perfect(mv_file, scenes_dir, tmp_path):
    expected = json.loads((scenes_dir / "expected.json").read_text())["scenes"]
    records = json.loads(mv_file.read_text())
    for key, record in records.items():
        stem = key.rsplit("/", 1)[1][:-4]
        truth = expected[stem]["views"]["front"]["relations"]
        boxes = {o["oid"]: o for o in expected[stem]["boxes"]}
        by_box = {tuple(float(v) for v in obj["box"]): oid for oid, obj in record["objects"].items()}
        for item in image_items(key, record, "x.png", max_per_type=50):
            if item["type"] in ("left_right", "above_below", "front_behind"):
                a, b = (by_box[tuple(item["objects"][t]["box"])] for t in ("A", "B"))
                axis = {"left_right": 0, "above_below": 1, "front_behind": 2}[item["type"]]
                assert truth[f"{a}>{b}"][axis] == (-1 if item["answer"] == item["choices"][0] else 1)
            elif item["type"] == "width":
                oid = by_box[tuple(item["objects"]["A"]["box"])]
                assert item["answer"] == pytest.approx(boxes[oid]["size"][0], rel=0.15)
    out = tmp_path / "bench"
    assert make_benchmark(out, anno_file=mv_file, image_root=scenes_dir / "images", val_fraction=0.5, seed=3) == 0
    proc = run_inprocess("spacesgg/ask.py", "--benchmark", out / "benchmark.jsonl", "--image-root", scenes_dir / "images",
                         "--output", out / "template.jsonl", "--anno-file", mv_file)
    assert proc.returncode == 0, proc.stderr
    proc = run_inprocess("spacesgg/score.py", "--benchmark", out / "benchmark.jsonl", "--predictions", out / "template.jsonl",
                         "--output", out / "s.json", "--by-depth-source")
    scores = json.loads((out / "s.json").read_text())
    assert proc.returncode == 0 and scores["qualitative_accuracy"] == 1.0 and len(scores["types"]) == 8
    for kind, t in scores["types"].items():
        assert t["unparsed"] == 0 and t["missing"] == 0
        assert t.get("accuracy", t.get("success_25", t.get("recall"))) == 1.0, kind
    assert list(scores["by_depth_source"]) == ["sensor"]


def test_openai_asker_scores_exactly_the_injected_error_rate_and_resumes(mv_file, scenes_dir, tmp_path, monkeypatch):
    out = tmp_path / "bench"
    assert make_benchmark(out, anno_file=mv_file, image_root=scenes_dir / "images", val_fraction=0.5, seed=3,
                          types=("left_right", "above_below")) == 0
    items = [json.loads(line) for line in (out / "benchmark.jsonl").read_text().splitlines()]
    answers = {i["question"]: (f"It is {i['answer']}.", f"It is {[c for c in i['choices'] if c != i['answer']][0]}.")
               for i in items}
    assert len(answers) == len(items)                      # every question is its own: the stand-in knows each answer
    monkeypatch.setenv("OPENAI_API_KEY", "EMPTY")
    wrong = 3
    with StubServer(answers=answers) as stub:
        stub.inject(*(["ok"] * 2 + ["wrong"] * wrong + ["500"]))
        args = ["--benchmark", out / "benchmark.jsonl", "--image-root", scenes_dir / "images", "--output",
                out / "vlm.jsonl", "--backend", "openai", "--model", "stub-vlm", "--base-url", stub.url, "--concurrency", 1]
        assert run_inprocess("spacesgg/ask.py", *args).returncode == 0
        assert all(e["images"] == 1 for e in stub.log)     # every request carried its image as a data URI
        asked = len(stub.log)
        assert run_inprocess("spacesgg/ask.py", *args).returncode == 0 and len(stub.log) == asked   # resumed: none again
    proc = run_inprocess("spacesgg/score.py", "--benchmark", out / "benchmark.jsonl", "--predictions", out / "vlm.jsonl")
    assert proc.returncode == 0
    scores = score_items(items, {json.loads(line)["id"]: json.loads(line)["prediction"]
                                 for line in (out / "vlm.jsonl").read_text().splitlines()})
    right = sum(t["accuracy"] * t["n"] for t in scores["types"].values())
    assert round(right) == len(items) - wrong


def test_killed_asker_resumes_without_asking_twice(mv_file, scenes_dir, tmp_path):
    out = tmp_path / "bench"
    assert make_benchmark(out, anno_file=mv_file, image_root=scenes_dir / "images", val_fraction=0.5, seed=3) == 0
    n = len((out / "benchmark.jsonl").read_text().splitlines())
    with StubServer(hang=600) as stub:
        stub.inject(*(["ok"] * 5 + ["timeout"] * 200))
        argv = [sys.executable, "-m", "spacesgg.ask", "--benchmark", str(out / "benchmark.jsonl"), "--image-root",
                str(scenes_dir / "images"), "--output", str(out / "p.jsonl"), "--backend", "openai", "--model", "stub",
                "--base-url", stub.url, "--concurrency", "1"]
        env = {"PATH": "/usr/bin:/bin", "OPENAI_API_KEY": "EMPTY", "HOME": str(tmp_path)}
        child = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        cache = out / "p.jsonl.cache.jsonl"
        import time
        while not (cache.exists() and len(cache.read_text().splitlines()) >= 5):
            assert child.poll() is None
            time.sleep(0.05)
        child.kill()
        child.wait(timeout=60)
        stub.faults.clear()
        first = list(stub.answered())
        assert subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, timeout=300).returncode == 0
    again = stub.answered()[len(first):]
    assert len(first) == 5 and len(again) == n - 5 and not set(again) & set(first)
    assert len((out / "p.jsonl").read_text().splitlines()) == n


def test_bad_benchmark_and_prediction_lines_cost_one_line_each(tmp_path, capsys):
    good = [_q(0, "left"), _q(1, "right")]
    lines = [json.dumps(i) for i in good]
    lines += [json.dumps(dict(_q(2, "left"), image="")), json.dumps(dict(_q(3, "left"), type="color")),
              json.dumps(_q(1, "left")), "{not json"]
    (tmp_path / "b.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "p.jsonl").write_text("\n".join([json.dumps({"id": "q0", "prediction": "left"}), "oops",
                                                 json.dumps({"id": "q0", "prediction": "right"}),
                                                 json.dumps({"id": "q9", "prediction": "left"}),
                                                 json.dumps({"id": "q1", "prediction": 3})]) + "\n")
    proc = run_inprocess("spacesgg/score.py", "--benchmark", tmp_path / "b.jsonl", "--predictions", tmp_path / "p.jsonl",
                         "--output", tmp_path / "s.json")
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 1 and len(errors) == 8 and "Traceback" not in proc.stderr
    scores = json.loads((tmp_path / "s.json").read_text())["types"]["left_right"]
    assert scores["n"] == 2 and scores["accuracy"] == 0.5 and scores["missing"] == 1


@pytest.fixture(scope="module")
def heldout_grid(objects_dir, tmp_path_factory):
    from dataengine.grid import tile_pair
    record = json.loads((ROOT / "spatial_id" / "assets" / "tiny-spatial-llava" / "training.json").read_text())
    out = tmp_path_factory.mktemp("heldout_grid")
    for a, b in record["heldout_pairs"][:3]:
        tile_pair(a, b, objects_dir, out, sizes=(224,))
    return out


@pytest.mark.parametrize("which", ["trained", "random"])
def test_local_asker_on_the_trained_tiny_llava_and_a_random_one(which, heldout_grid, tmp_path):
    model = ROOT / "spatial_id" / "assets" / "tiny-spatial-llava"
    if which == "random":
        from spatial_id.tiny import build_tiny_model
        record = json.loads((model / "training.json").read_text())["settings"]
        model = build_tiny_model("llava", tmp_path / "random", layers=record["layers"], hidden=record["hidden"],
                                 image_size=record["image_size"])
    out = tmp_path / "bench"
    assert make_benchmark(out, grid_dir=heldout_grid) == 0
    proc = run_inprocess("spacesgg/ask.py", "--benchmark", out / "benchmark.jsonl", "--image-root", heldout_grid, "--output",
                         out / "p.jsonl", "--backend", "local", "--model", f"llava-7b={model}", "--device", "cpu",
                         "--batch-size", 64, "--max-new-tokens", 4)
    assert proc.returncode == 0, proc.stderr
    proc = run_inprocess("spacesgg/score.py", "--benchmark", out / "benchmark.jsonl", "--predictions", out / "p.jsonl",
                         "--output", out / "s.json")
    scores = json.loads((out / "s.json").read_text())
    if which == "trained":
        assert scores["types"]["left_right"]["accuracy"] >= 0.9 and scores["types"]["above_below"]["accuracy"] >= 0.9
        assert scores["types"]["left_right"]["unparsed"] <= 0.05 * scores["types"]["left_right"]["n"]   # it says words
    else:
        assert scores["qualitative_accuracy"] <= 0.6
