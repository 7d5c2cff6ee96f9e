"""Stage 2: template answers against the stage-1 geometry; the openai backend against a loopback stub server."""

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter

import numpy as np
import pytest

from batchkit.errors import UserError
from conftest import ROOT, run_script
from spacesgg.llm_query import query
from spacesgg.prompt_functions.between import parse_qa
from spacesgg.stub_server import StubServer
from spacesgg.tags import check_tags, normalise_box

KEY = "sk-test-SECRET-4f9a"
FUNCTIONS = ("create_layer_prompt", "create_between_prompt", "create_rotation_prompt")
WORDS = {"to the left of": (0, -1), "to the right of": (0, 1), "above": (1, -1), "below": (1, 1),
         "in front of": (2, -1), "behind": (2, 1)}
TAG = r"<ref>[^<>]+</ref><box>\[\[[\d, ]+\]\]</box>"


def _load(path):
    return json.loads(path.read_text())


def _tag_ids(record):
    """{tag text: object id} of a stage-1 record, boxes as stage 2 writes them (padded to a square)."""
    w, h = record["image_size"]
    out = {}
    for oid, obj in record["objects"].items():
        x1, y1, x2, y2 = normalise_box(obj["box"], w, h)
        out[f"<ref>{obj['label']}</ref><box>[[{x1}, {y1}, {x2}, {y2}]]</box>"] = oid
    return out


def test_box_normalisation():
    assert normalise_box([0, 0, 640, 480], 640, 480, "pad") == (0, 125, 999, 874)
    assert normalise_box([0, 0, 640, 480], 640, 480, "stretch") == (0, 0, 999, 999)
    assert normalise_box([320, 240, 320, 240], 640, 480, "pad") == (500, 500, 500, 500)


def test_tag_checks():
    ok = "<ref>cup</ref><box>[[1, 2, 3, 4]]</box> is left of <pred>left of</pred><box>[[1, 2, 3, 4]]</box><box>[[5, 6, 7, 8]]</box>"
    assert check_tags(ok, [(1, 2, 3, 4), (5, 6, 7, 8)]) is None
    assert "not one the prompt gave" in check_tags(ok, [(1, 2, 3, 4)])
    assert "malformed tag" in check_tags("<ref>cup<box>[[1, 2, 3, 4]]</box>", [(1, 2, 3, 4)])
    assert "malformed tag" in check_tags("<ref>cup</ref> alone", [])
    assert parse_qa("Q: a?\nA: b.\n2) Question: c?\nAnswer: d") == [("a?", "b."), ("c?", "d")]
    assert parse_qa("Q: a?\nQ: b?") is None


def test_template_records_agree_with_geometry(mv_file, tmp_path):
    mv = _load(mv_file)
    by_stem = {k.rsplit("/", 1)[1][:-4]: r for k, r in mv.items()}
    checked = {"layer": 0, "between": 0, "rotation": 0}
    for fn in FUNCTIONS:
        out = tmp_path / f"{fn}.json"
        assert query(mv_file, fn, out, seed=3) == 0
        records = _load(out)
        assert records and len({r["id"] for r in records}) == len(records)
        for rec in records:
            conv = rec["conversations"]
            assert conv[0]["from"] == "human" and conv[0]["value"].startswith("<image>\n")
            assert [t["from"] for t in conv] == ["human", "gpt"] * (len(conv) // 2)
            assert sum("<image>" in t["value"] for t in conv) == 1
            stem = rec["id"].split("_")[0] + "_" + rec["id"].split("_")[1]
            source = by_stem[stem]
            assert rec["image"] in mv
            ids = _tag_ids(source)
            for turn in conv:
                assert check_tags(turn["value"].replace("<image>\n", ""), [tuple(map(int, b)) for b in
                                  re.findall(r"\[\[(\d+), (\d+), (\d+), (\d+)\]\]", "".join(ids))]) is None
            if fn == "create_layer_prompt":
                tags = re.findall(TAG, conv[1]["value"])
                assert [ids[t] for t in tags] == [o for level in source["views"]["front"]["levels"] for o in level]
                checked["layer"] += 1
            elif fn == "create_between_prompt":
                rel = source["views"]["front"]["relations"]
                box_ids = {re.search(r"<box>.*", t).group(0): o for t, o in ids.items()}
                for question, answer in zip(conv[0::2], conv[1::2]):
                    q, a, facts = question["value"], answer["value"], []
                    for x, word, y in re.findall(rf"({TAG}) is ({'|'.join(WORDS)}) ({TAG})", a):
                        facts.append((ids[x], ids[y], *WORDS[word]))
                    for word, bx, by in re.findall(r"<pred>([^<]+)</pred>(<box>[^<]+</box>)(<box>[^<]+</box>)", a):
                        facts.append((box_ids[bx], box_ids[by], *WORDS[{"left of": "to the left of",
                                                                         "right of": "to the right of"}.get(word, word)]))
                    m = re.match(rf"({TAG}) is (higher|lower|closer to|farther from)( the camera)? than ({TAG})\.", a)
                    if m:
                        facts.append((ids[m.group(1)], ids[m.group(4)], 1 if m.group(2) in ("higher", "lower") else 2,
                                      -1 if m.group(2) in ("higher", "closer to") else 1))
                    assert facts, (rec["id"], q, a)                      # every answer states a checkable relation
                    for x, y, axis, sign in facts:
                        assert rel[f"{x}>{y}"][axis] == sign, (rec["id"], q, a)
                        checked["between"] += 1
            else:
                view, a, b = rec["id"].split("_")[3:6]
                rel = source["views"][view]["relations"][f"{a}>{b}"]
                answer = re.sub(TAG, "X", conv[1]["value"])
                answer = re.sub(r"(left|right) side|from behind", "", answer)
                for axis, (neg, pos) in enumerate((("left", "right"), ("above", "below"), ("in front", "behind"))):
                    assert (neg in answer) == (rel[axis] == -1), (rec["id"], answer, rel)
                    assert (pos in answer) == (rel[axis] == 1), (rec["id"], answer, rel)
                checked["rotation"] += 1
    assert checked["layer"] == 6 and checked["between"] >= 6 and checked["rotation"] >= 24


def test_seed_alias_dry_run_limit(mv_file, tmp_path):
    query(mv_file, "create_between_prompt", tmp_path / "a.json", seed=1)
    query(mv_file, "create_comparative_prompt", tmp_path / "b.json", seed=1)
    query(mv_file, "create_between_prompt", tmp_path / "c.json", seed=2)
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    assert (tmp_path / "a.json").read_bytes() != (tmp_path / "c.json").read_bytes()
    proc = run_script("llm_based_query.py", "--anno-file", mv_file, "--prompt-function", "create_rotation_prompt",
                      "--output-file", tmp_path / "d.json", "--dry-run", "--limit", "5")
    assert proc.returncode == 0
    prompts = _load(tmp_path / "d.json")
    assert len(prompts) == 5 and all("Measured relation from this viewpoint" in p["user"] for p in prompts)
    assert prompts[0]["system"].startswith("You are an assistant")
    proc = run_script("llm_based_query.py", "--anno-file", mv_file, "--prompt-function", "create_nothing",
                      "--output-file", tmp_path / "e.json")
    assert proc.returncode == 2 and "invalid choice: 'create_nothing'" in proc.stderr
    with pytest.raises(UserError, match="unknown prompt function"):
        query(mv_file, "create_nothing", tmp_path / "e.json")


def test_record_without_views_is_reported(mv_file, tmp_path):
    mv = _load(mv_file)
    first = next(iter(mv))
    del mv[first]["views"]
    (tmp_path / "mv.json").write_text(json.dumps(mv))
    proc = run_script("llm_based_query.py", "--anno-file", tmp_path / "mv.json", "--prompt-function",
                      "create_layer_prompt", "--output-file", tmp_path / "o.json")
    assert proc.returncode == 1 and f"{first}: no \"views\"; run multiview_layers.py" in proc.stderr
    assert len(_load(tmp_path / "o.json")) == 5


# ---- openai backend against a loopback server

def _run_openai(mv_file, out, url, *extra, key=KEY, fn="create_between_prompt"):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    if key:
        env["OPENAI_API_KEY"] = key
    cmd = [sys.executable, str(ROOT / "llm_based_query.py"), "--anno-file", str(mv_file), "--prompt-function", fn,
           "--output-file", str(out), "--backend", "openai", "--base-url", url, "--backoff", "0.05", *map(str, extra)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def _no_key_anywhere(tmp_path, *procs):
    for p in procs:
        assert KEY not in p.stdout and KEY not in p.stderr
    for f in tmp_path.rglob("*"):
        if f.is_file():
            assert KEY not in f.read_text(errors="replace"), f


def test_openai_faults_are_retried_and_bad_replies_rejected(mv_file, tmp_path):
    with StubServer(latency=0.02, api_key=KEY, retry_after=1, hang=1.0) as stub:
        stub.inject("429", "500", "timeout", "malformed", "badtag", "badbox", "badbox")
        proc = _run_openai(mv_file, tmp_path / "o.json", stub.url, "--concurrency", "1", "--timeout", "0.5")
        assert proc.returncode == 0, proc.stderr
        time.sleep(1.2)                                              # the hung handler logs when it gives up
        outcomes = Counter(e["outcome"] for e in stub.log)
        assert outcomes == Counter({"ok": 5, "badbox": 2, "429": 1, "500": 1, "timeout": 1, "malformed": 1, "badtag": 1})
        first_429, first_500 = stub.log[0], stub.log[1]
        assert first_429["outcome"] == "429" and first_500["outcome"] == "500"      # in order, each retried once
        records, rejects = _load(tmp_path / "o.json"), _load(tmp_path / "o.json.rejects.json")
        assert len(records) == 5 and len(rejects) == 1
        assert "box [[1, 2, 3, 4]] is not one the prompt gave" in rejects[0]["reason"]
        assert "1 rejected" in proc.stdout and "5 answered" in proc.stdout and "0 failed" in proc.stdout
        for rec in records:
            assert "ghost" not in json.dumps(rec) and rec["conversations"][0]["value"].startswith("<image>\nWhere is")
        before = len(stub.log)
        again = _run_openai(mv_file, tmp_path / "o.json", stub.url)
        assert again.returncode == 0 and len(stub.log) == before   # all answered (or rejected) before: nothing asked
        assert "0 asked, 6 cached" in again.stdout
    _no_key_anywhere(tmp_path, proc, again)


def test_openai_exhausted_retries_fail_the_request_and_exit_nonzero(mv_file, tmp_path):
    with StubServer(api_key=KEY) as stub:
        stub.inject(*["500"] * 3)
        proc = _run_openai(mv_file, tmp_path / "o.json", stub.url, "--concurrency", "1", "--max-retries", "2")
        assert proc.returncode == 1
        assert re.search(r"error: scene_\d+_between: server error 500 after 3 attempts", proc.stderr)
        assert len(_load(tmp_path / "o.json")) == 5
        proc = _run_openai(mv_file, tmp_path / "o.json", stub.url)      # the rerun asks only the failed one
        assert proc.returncode == 0 and "1 asked, 5 cached, 1 answered" in proc.stdout
        assert len(_load(tmp_path / "o.json")) == 6


def test_openai_missing_key_wrong_key_unreachable(mv_file, tmp_path):
    with StubServer(api_key=KEY) as stub:
        proc = _run_openai(mv_file, tmp_path / "o.json", stub.url, key=None)
        assert proc.returncode == 2 and proc.stderr.strip().startswith("error: OPENAI_API_KEY is not set")
        assert "Traceback" not in proc.stderr
        proc = _run_openai(mv_file, tmp_path / "o.json", stub.url, key="sk-wrong")
        assert proc.returncode == 1 and "server answered 401" in proc.stderr and "check OPENAI_API_KEY" in proc.stderr
        assert "sk-wrong" not in proc.stderr + proc.stdout
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]                                # closed again: nothing listens there
    proc = _run_openai(mv_file, tmp_path / "u.json", f"http://127.0.0.1:{port}/v1", "--max-retries", "1")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"error: cannot reach http://127.0.0.1:{port}/v1" in proc.stderr and "Rerun to resume" in proc.stderr


def test_killed_run_resumes_without_asking_twice(mv_file, tmp_path):
    dry = tmp_path / "prompts.json"
    assert query(mv_file, "create_rotation_prompt", dry, dry_run=True) == 0
    prompt_of = {p["id"]: hashlib.sha256(p["user"].encode()).hexdigest()[:16] for p in _load(dry)}
    out = tmp_path / "rot.json"
    cache = tmp_path / "rot.json.cache.jsonl"
    with StubServer(latency=0.15, api_key=KEY, hang=3.0) as stub:
        stub.inject(*["ok"] * 9, *["timeout"] * 3)     # nine answers, then three that hang: the kill comes first
        env = dict(os.environ, OPENAI_API_KEY=KEY)
        cmd = [sys.executable, str(ROOT / "llm_based_query.py"), "--anno-file", str(mv_file), "--prompt-function",
               "create_rotation_prompt", "--output-file", str(out), "--backend", "openai", "--base-url", stub.url,
               "--concurrency", "3"]
        child = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while time.time() < deadline and (not cache.exists() or len(cache.read_text().splitlines()) < 9):
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
        child.wait()
        assert not out.exists()
        cached_first = {json.loads(line)["id"] for line in cache.read_text().splitlines() if line.strip().endswith("}")}
        assert 9 <= len(cached_first) < len(prompt_of)
        while stub.in_flight and time.time() < deadline:       # the dead client's requests finish server-side
            time.sleep(0.02)
        first_run = len(stub.log)
        proc = _run_openai(mv_file, out, stub.url, "--concurrency", "3", fn="create_rotation_prompt")
        assert proc.returncode == 0, proc.stderr
        second = [e["prompt"] for e in stub.log[first_run:] if e["outcome"] == "ok"]
        assert not set(second) & {prompt_of[i] for i in cached_first}       # nothing answered before is asked again
        assert len(second) == len(set(second)) == len(prompt_of) - len(cached_first)   # each remaining one once
        assert stub.max_in_flight <= 3
    records = _load(out)
    assert sorted(r["id"] for r in records) == sorted(prompt_of)
    _no_key_anywhere(tmp_path, proc)


def test_backoff_honours_retry_after_up_to_the_cap(monkeypatch):
    from types import SimpleNamespace

    from spacesgg.backends import LLMSettings, OpenAIBackend
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    backend = OpenAIBackend(LLMSettings(base_url="http://127.0.0.1:9/v1", backoff=0.01, max_wait=5))
    asks = lambda value: SimpleNamespace(response=SimpleNamespace(headers={"retry-after": value}))  # noqa: E731
    assert all(backend.delay(0, asks("2")) == 2 for _ in range(20))          # the server's wait wins over jitter
    assert all(backend.delay(0, asks("3600")) == 5 for _ in range(20))       # ... up to --max-wait
    assert all(0 <= backend.delay(3, None) <= 0.08 for _ in range(50))       # else full jitter, 0.01 x 2^3
    assert len({backend.delay(6, asks("junk")) for _ in range(20)}) > 1     # jitter from the OS: no two runs in lockstep


def test_distance_qa_against_the_exact_geometry(mv_file, scenes_dir, tmp_path):
    from dataengine.scenes import Box, intrinsics, render
    from spacesgg.prompt_functions import PROMPT_FUNCTIONS, check_reply
    out = tmp_path / "distance.json"
    assert query(mv_file, "create_distance_prompt", out, seed=1) == 0
    records = _load(out)
    mv = _load(mv_file)
    expected = json.loads((scenes_dir / "expected.json").read_text())["scenes"]
    checked = 0
    for rec in records:
        key = next(k for k in mv if k.endswith(rec["id"].rsplit("_", 1)[0] + ".png"))
        assert rec["depth_source"] == "sensor" and rec["facts"]
        exp = expected[rec["id"].rsplit("_", 1)[0]]
        boxes = [Box(b["oid"], b["label"], tuple(b["slot"]), tuple(b["center"]), tuple(b["size"])) for b in exp["boxes"]]
        depth, index, _ = render(boxes, intrinsics())
        K = intrinsics()
        v, u = np.mgrid[0:depth.shape[0], 0:depth.shape[1]]
        exact = np.stack([(u - K.cx) / K.fx * depth, (v - K.cy) / K.fy * depth, depth], axis=-1)
        centre = {b.oid: np.median(exact[index == k], axis=0) for k, b in enumerate(boxes)}
        lo_hi = {b.oid: np.percentile(exact[index == k], [5, 95], axis=0) for k, b in enumerate(boxes)}
        for oid, c in centre.items():
            np.testing.assert_allclose(mv[key]["objects"][oid]["centre"], c, atol=2e-3)
        for f in rec["facts"]:
            if f["quantity"] == "distance":
                want = np.linalg.norm(centre[f["a"]] - centre[f["b"]])
            elif f["quantity"] == "camera_distance":
                want = np.linalg.norm(centre[f["a"]])
            else:
                axis = ("width", "height", "depth").index(f["quantity"])
                want = lo_hi[f["a"]][1][axis] - lo_hi[f["a"]][0][axis]
            step = 0.1 if "distance" in f["quantity"] else 0.01
            assert abs(f["metres"] - want) <= step / 2 + 2e-3, (f, want)
            checked += 1
        numbers = re.findall(r"(\d+\.\d+) m\b", rec["conversations"][1]["value"] + " ".join(t["value"] for t in rec["conversations"]))
        assert {float(n) for n in numbers} <= {round(f["metres"], 2) for f in rec["facts"]}
    assert checked >= 12
    request = PROMPT_FUNCTIONS["create_distance_prompt"].build(next(iter(mv.items()))[0], next(iter(mv.values())))[0]
    f = request.facts["facts"][0]
    tag = request.facts["tags"][f["a"]]
    good = f"Q: Size?\nA: {tag} measures {f['metres']:.2f} m."
    assert check_reply(request, good)[0] is None
    assert "not among the measured facts" in check_reply(request, f"Q: Size?\nA: {tag} is {f['metres'] + 0.37:.2f} m.")[0]
    near = sorted(request.facts["camera"].items(), key=lambda kv: kv[1])
    if near[0][1] < near[-1][1]:
        wrong = f"Q: Which is closer?\nA: {near[-1][0]} is closer to the camera than {near[0][0]}."
        assert "contradicts" in check_reply(request, wrong)[0]


def test_a_swallowed_cancellation_still_stops_a_request():
    import asyncio

    from spacesgg.backends import _stop_if_cancelled

    async def swallowing():
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            pass                                  # what asyncio.wait_for can do on Python 3.11
        _stop_if_cancelled()
        return "went on"

    async def main():
        task = asyncio.create_task(swallowing())
        await asyncio.sleep(0)
        task.cancel()
        return await asyncio.gather(task, return_exceptions=True)

    assert isinstance(asyncio.run(main())[0], asyncio.CancelledError)
