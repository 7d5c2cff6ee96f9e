"""Stage 2 at the price of a real dataset: usage accounting, the dry-run estimate, and batch inference (OpenAI Batch
API, Batch-format files) against the loopback stub, killed at every point that matters."""

import json
import shutil

import pytest

from spacesgg.backends import LLMSettings, request_messages
from spacesgg.batches import BatchState, Ingest, split_lines
from spacesgg.llm_query import BatchSettings, Cache, query
from spacesgg.stub_server import StubServer
from spacesgg.usage import Prices

FN = "create_between_prompt"


@pytest.fixture
def stub(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "EMPTY")
    with StubServer() as server:
        yield server


def _settings(stub, **kw):
    return LLMSettings(model="stub", base_url=stub.url, backoff=0.01, max_wait=1, **kw)


def _run(mv_file, out, stub, backend, scenes_dir, **kw):
    return query(mv_file, FN, out, backend=backend, settings=_settings(stub), image_root=scenes_dir / "images", **kw)


def _until_done(mv_file, out, stub, scenes_dir, limit=40, **kw):
    for _ in range(limit):
        assert _run(mv_file, out, stub, "openai-batch", scenes_dir, **kw) in (0, 1)
        if out.is_file():
            return json.loads(out.read_text())
    raise AssertionError("the batches never finished")


def test_live_usage_is_the_servers_prompt_and_completion_tokens(mv_file, scenes_dir, tmp_path, stub):
    out = tmp_path / "live.json"
    assert _run(mv_file, out, stub, "openai", scenes_dir, prices=Prices(0.15, 0.6)) == 0
    usage = json.loads((tmp_path / "live.json.usage.json").read_text())["total"]
    reported = [e["usage"] for e in stub.log if e["usage"]]
    assert usage["prompt_tokens"] == sum(p for p, _ in reported) and usage["completion_tokens"] == sum(c for _, c in reported)
    assert usage["unknown_usage"] == 0 and usage["asked"] == len(reported) == usage["requests"]
    assert usage["cost_usd"] == pytest.approx(usage["prompt_tokens"] * 0.15e-6 + usage["completion_tokens"] * 0.6e-6, abs=1e-6)
    assert _run(mv_file, out, stub, "openai", scenes_dir) == 0                                 # all cached now
    again = json.loads((tmp_path / "live.json.usage.json").read_text())["total"]
    assert again["asked"] == 0 and again["cached"] == usage["requests"] and again["prompt_tokens"] == usage["prompt_tokens"]


def test_dry_run_sends_nothing_and_counts_exactly_with_a_tokenizer(mv_file, scenes_dir, tmp_path, stub):
    from transformers import PreTrainedTokenizerFast

    from spatial_id.tiny import _tokenizer
    tok = _tokenizer(["<s>", "</s>", "<pad>"], "<s>", "</s>", "<pad>")
    tok.chat_template = "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}assistant:"
    tok.save_pretrained(tmp_path / "tok")
    out = tmp_path / "dry.json"
    assert _run(mv_file, out, stub, "openai", scenes_dir, dry_run=True, tokenizer=tmp_path / "tok",
                prices=Prices(1.0, 2.0)) == 0
    assert stub.log == []                                                                      # nothing was sent
    found = json.loads((tmp_path / "dry.json.estimate.json").read_text())
    prompts = json.loads(out.read_text())
    counter = PreTrainedTokenizerFast.from_pretrained(tmp_path / "tok")
    exact = sum(len(counter.apply_chat_template([{"role": "system", "content": p["system"]},
                                                 {"role": "user", "content": p["user"]}], add_generation_prompt=True,
                                                tokenize=True, return_dict=False)) for p in prompts)
    assert found["requests"] == len(prompts) and found["prompt_tokens"] == exact
    assert found["completion_tokens"] == 1024 * len(prompts) and "upper bound" in found["completion_tokens_from"]
    # after a live run of part of it, the estimate learns from the cached answers and counts only what is left
    assert _run(mv_file, out.with_name("real.json"), stub, "openai", scenes_dir, limit=3) == 0
    assert _run(mv_file, out.with_name("real.json"), stub, "openai", scenes_dir, dry_run=True) == 0
    found = json.loads((tmp_path / "real.json.estimate.json").read_text())
    cached = [json.loads(line) for line in (tmp_path / "real.json.cache.jsonl").read_text().splitlines()]
    assert found["requests"] == len(prompts) - 3 and "3 cached answers" in found["prompt_tokens_from"]
    assert found["completion_tokens"] == round(sum(e["usage"]["completion_tokens"] for e in cached) / 3 * (len(prompts) - 3))


def test_batch_records_equal_the_live_records_and_usage_is_reported(mv_file, scenes_dir, tmp_path, stub):
    assert _run(mv_file, tmp_path / "live.json", stub, "openai", scenes_dir) == 0
    live = json.loads((tmp_path / "live.json").read_text())
    stub.batch_plans.append({"reversed": True, "server_error_lines": [1], "error_lines": [2]})
    records = _until_done(mv_file, tmp_path / "batch.json", stub, scenes_dir)
    assert records == live
    assert [len(b["keys"]) for b in json.loads((tmp_path / "batch.json.batches.json").read_text())["batches"]] == [len(live), 2]
    usage = json.loads((tmp_path / "batch.json.usage.json").read_text())["total"]
    assert usage["prompt_tokens"] == sum(p for p, _ in stub.batch_usage)
    assert usage["completion_tokens"] == sum(c for _, c in stub.batch_usage)
    lines = (tmp_path / "batch.json.batches" / "batch_input-r001-000.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    assert first["method"] == "POST" and first["url"] == "/v1/chat/completions" and first["body"]["max_tokens"] == 1024
    # every request of a prompt function starts with the same system prompt, byte for byte: a cacheable prefix
    assert len({json.dumps(json.loads(line)["body"]["messages"][0]) for line in lines}) == 1


@pytest.mark.parametrize("plan,resubmitted", [({"status": "expired", "answer": 2}, "rest"), ({"status": "failed"}, "all")])
def test_expired_and_failed_batches_resubmit_only_what_is_missing(plan, resubmitted, mv_file, scenes_dir, tmp_path, stub):
    stub.batch_plans.append(plan)
    records = _until_done(mv_file, tmp_path / "b.json", stub, scenes_dir)
    sizes = [len(b["keys"]) for b in json.loads((tmp_path / "b.json.batches.json").read_text())["batches"]]
    assert sizes == [len(records), len(records) - 2 if resubmitted == "rest" else len(records)]
    assert stub.batch_lines == len(records)                                     # each request answered once


def test_killed_between_upload_and_batch_and_during_ingest_loses_nothing_and_submits_nothing_twice(
        mv_file, scenes_dir, tmp_path, stub, monkeypatch):
    import openai.resources.batches as api
    real_create = api.Batches.create
    calls = []

    def dies_after_creating(self, **kw):                    # the server made the batch; we die before recording it
        batch = real_create(self, **kw)
        calls.append(batch.id)
        raise KeyboardInterrupt
    monkeypatch.setattr(api.Batches, "create", dies_after_creating)
    out = tmp_path / "b.json"
    with pytest.raises(KeyboardInterrupt):
        _run(mv_file, out, stub, "openai-batch", scenes_dir)
    state = json.loads((tmp_path / "b.json.batches.json").read_text())
    assert state["batches"][0]["file_id"] and state["batches"][0]["batch_id"] is None
    monkeypatch.setattr(api.Batches, "create", real_create)
    real_line = Ingest.line
    seen = []

    def dies_mid_ingest(self, row, where):
        if len(seen) == 2:
            raise KeyboardInterrupt
        seen.append(row["custom_id"])
        return real_line(self, row, where)
    monkeypatch.setattr(Ingest, "line", dies_mid_ingest)
    for _ in range(10):
        try:
            _run(mv_file, out, stub, "openai-batch", scenes_dir)
        except KeyboardInterrupt:
            break
    assert len(seen) == 2 and len(stub.batches) == 1                           # found again by input_file_id
    monkeypatch.setattr(Ingest, "line", real_line)
    records = _until_done(mv_file, out, stub, scenes_dir)
    assert len(stub.batches) == 1 and stub.batch_lines == len(records)         # one batch, each request once


def test_batch_files_for_any_server_and_bad_result_files(mv_file, scenes_dir, tmp_path, stub, capsys):
    out = tmp_path / "f.json"
    args = dict(batch=BatchSettings(batch_dir=str(tmp_path / "in")))
    assert _run(mv_file, out, stub, "batch-file", scenes_dir, **args) == 0 and not out.exists()
    inputs = sorted((tmp_path / "in").glob("*.jsonl"))
    requests = [json.loads(line) for f in inputs for line in f.read_text().splitlines()]
    # what vllm run-batch would write: answers in the Batch output format, here by the stub's own reply rule
    from spacesgg.stub_server import reply_for
    rows = [{"id": f"r{k}", "custom_id": r["custom_id"], "error": None, "response": {"status_code": 200, "body": {
        "choices": [{"message": {"role": "assistant", "content": reply_for(r["body"]["messages"][-1]["content"])}}]}}}
        for k, r in enumerate(requests)]
    text = [json.dumps(row) for row in rows[1:]] + ["not json at all",
                                                    json.dumps(dict(rows[0], custom_id="someone-else"))]
    (tmp_path / "out.jsonl").write_text("\n".join(text) + "\n")
    capsys.readouterr()
    code = _run(mv_file, out, stub, "batch-file", scenes_dir, batch=BatchSettings(str(tmp_path / "in"), (str(tmp_path / "out.jsonl"),)))
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 1 and len(errors) == 2 and not out.exists()                 # one request left: written again
    left = [json.loads(line) for line in sorted((tmp_path / "in").glob("batch_input-r002-*.jsonl"))[0].read_text().splitlines()]
    assert [r["custom_id"] for r in left] == [rows[0]["custom_id"]]
    (tmp_path / "last.jsonl").write_text(json.dumps(rows[0]) + "\n")
    assert _run(mv_file, out, stub, "batch-file", scenes_dir, batch=BatchSettings(str(tmp_path / "in"), (str(tmp_path / "last.jsonl"),))) == 0
    assert len(json.loads(out.read_text())) == len(requests) and stub.log == []   # no live request was ever sent


def test_a_batch_that_no_longer_exists_is_one_line_and_its_requests_go_again(mv_file, scenes_dir, tmp_path, stub, capsys):
    out = tmp_path / "b.json"
    assert _run(mv_file, out, stub, "openai-batch", scenes_dir) == 0
    state_file = tmp_path / "b.json.batches.json"
    state = json.loads(state_file.read_text())
    state["batches"][0]["batch_id"] = "batch_gone"
    state_file.write_text(json.dumps(state))
    capsys.readouterr()
    assert _run(mv_file, out, stub, "openai-batch", scenes_dir) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "batch_gone" in errors[0]
    assert len(_until_done(mv_file, out, stub, scenes_dir)) == len(state["batches"][0]["keys"])


def test_input_files_split_at_the_line_and_byte_limits():
    lines = [f"{k:04d}" + "x" * 95 + "\n" for k in range(25)]                  # 100 bytes each
    assert [len(f) for f in split_lines(lines, max_lines=10, max_bytes=10_000)] == [10, 10, 5]
    assert [len(f) for f in split_lines(lines, max_lines=1000, max_bytes=350)] == [3] * 8 + [1]
    assert "".join(sum(split_lines(lines, 7, 450), [])) == "".join(lines)
    with pytest.raises(Exception, match="more than a batch file"):
        split_lines(["y" * 500], 10, 100)


def test_request_messages_put_the_shared_prefix_first(mv_file):
    from spacesgg.annotations import load_annotations
    from spacesgg.llm_query import Stats, build_requests
    from spacesgg.prompt_functions import PROMPT_FUNCTIONS
    records = load_annotations(mv_file)
    for fn in PROMPT_FUNCTIONS:
        messages = [request_messages(r) for r in build_requests(records, fn, Stats())]
        assert len({json.dumps(m[0]) for m in messages}) == 1 and all(m[0]["role"] == "system" for m in messages)


def test_cache_and_state_survive_as_files(tmp_path):
    state = BatchState(tmp_path / "s.json")
    state.batches.append({"file_id": "file-1", "batch_id": None, "keys": ["a"], "ingested": False})
    state.rounds["a"] = 1
    state.save()
    again = BatchState(tmp_path / "s.json")
    assert again.pending_keys() == {"a"} and again.rounds == {"a": 1}
    (tmp_path / "s.json").write_text("{broken")
    with pytest.raises(Exception, match="not readable JSON"):
        BatchState(tmp_path / "s.json")
    cache = Cache(tmp_path / "c.jsonl")
    cache.add({"key": "k", "id": "x", "status": "ok"})
    cache.close()
    assert "k" in Cache(tmp_path / "c.jsonl").entries
    shutil.rmtree(tmp_path)
