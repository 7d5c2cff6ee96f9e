"""Exporters: every format reads back to the records it was made from."""

import base64
import json

import pyarrow.parquet as pq

from conftest import run_inprocess
from spacesgg.llm_query import query


def _records(mv_file, scenes_dir, tmp_path):
    files = []
    for fn in ("create_layer_prompt", "create_between_prompt"):
        out = tmp_path / f"{fn}.json"
        assert query(mv_file, fn, out, image_root=scenes_dir / "images") == 0
        files.append(out)
    return files, [r for f in files for r in json.loads(f.read_text())]


def test_every_format_round_trips(mv_file, scenes_dir, tmp_path):
    files, records = _records(mv_file, scenes_dir, tmp_path)
    root = scenes_dir / "images"
    for fmt in ("llava", "sharegpt", "openai-jsonl", "parquet"):
        proc = run_inprocess("spacesgg/export.py", "--records", *files, "--format", fmt, "--output", tmp_path / f"out.{fmt}",
                             "--image-root", root)
        assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "out.llava").read_text()) == records
    for row, record in zip(json.loads((tmp_path / "out.sharegpt").read_text()), records, strict=True):
        assert row["conversations"] == record["conversations"] and row["images"] == [str(root / record["image"])]
    lines = (tmp_path / "out.openai-jsonl").read_text().splitlines()
    assert len(lines) == len(records)
    for line, record in zip(lines, records, strict=True):
        messages = json.loads(line)["messages"]
        assert [m["role"] for m in messages] == ["user", "assistant"] * (len(record["conversations"]) // 2)
        first = messages[0]["content"]
        url = first[0]["image_url"]["url"]
        assert url.startswith("data:image/png;base64,")
        assert base64.b64decode(url.split(",", 1)[1]) == (root / record["image"]).read_bytes()
        assert first[1]["text"] == record["conversations"][0]["value"].replace("<image>", "").strip()
        assert messages[1]["content"] == record["conversations"][1]["value"]
    table = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert [(r["id"], r["image"], r["conversations"]) for r in table] == [
        (r["id"], r["image"], r["conversations"]) for r in records]
    from datasets import load_dataset  # as a trainer reads it
    loaded = load_dataset("parquet", data_files=str(tmp_path / "out.parquet"), split="train",
                          cache_dir=str(tmp_path / "hf_cache"))
    assert [(r["id"], r["conversations"]) for r in loaded] == [(r["id"], r["conversations"]) for r in records]


def test_export_bad_input(mv_file, scenes_dir, tmp_path):
    files, records = _records(mv_file, scenes_dir, tmp_path)
    missing = tmp_path / "images"
    missing.mkdir()
    (missing / records[0]["image"]).write_bytes((scenes_dir / "images" / records[0]["image"]).read_bytes())
    proc = run_inprocess("spacesgg/export.py", "--records", files[0], "--format", "openai-jsonl", "--output",
                         tmp_path / "o.jsonl", "--image-root", missing)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    n = len(json.loads(files[0].read_text()))
    assert proc.returncode == 1 and len(errors) == n - 1 and all("not found" in e for e in errors)
    assert len((tmp_path / "o.jsonl").read_text().splitlines()) == 1
    (tmp_path / "bad.json").write_text('{"not": "a list"}')
    proc = run_inprocess("spacesgg/export.py", "--records", tmp_path / "bad.json", "--format", "llava", "--output",
                         tmp_path / "o.json")
    assert proc.returncode == 2 and "JSON list of LLaVA records" in proc.stderr


def test_records_point_at_real_files_without_image_root(mv_file, scenes_dir, tmp_path):
    """An annotation file that sits in its dataset folder: records' images are relative to the dataset's images/."""
    dataset = tmp_path / "ds"
    dataset.mkdir()
    (dataset / "images").symlink_to(scenes_dir / "images")
    (dataset / "multiview.json").write_text(mv_file.read_text())
    assert query(dataset / "multiview.json", "create_layer_prompt", tmp_path / "layer.json") == 0
    records = json.loads((tmp_path / "layer.json").read_text())
    assert records and all((dataset / "images" / r["image"]).is_file() and "/" not in r["image"] for r in records)
    # elsewhere, relative keys stay relative to the dataset folder: LLaVA's --image_folder is the dataset
    assert query(mv_file, "create_layer_prompt", tmp_path / "keys.json") == 0
    assert all((scenes_dir / r["image"]).is_file() for r in json.loads((tmp_path / "keys.json").read_text()))


def test_demo_table_lists_only_what_exists(tmp_path):
    from spacesgg.demo import outputs_table
    data, out = tmp_path / "data", tmp_path / "out"
    (out / "spacesgg").mkdir(parents=True)
    (out / "spacesgg" / "layer.json").write_text(json.dumps([{"id": 1}, {"id": 2}]))
    (out / "spacesgg" / "between.json").write_text("{torn")
    rows = dict(outputs_table(data, out))
    assert list(rows) == [out / "spacesgg" / "layer.json", out / "spacesgg" / "between.json"]
    assert rows[out / "spacesgg" / "layer.json"].startswith("2 records") and "unreadable" in rows[out / "spacesgg" / "between.json"]
