"""Shards: N tasks, each with --shard I/N, merged, give what one run gives."""

import json
import subprocess
import sys

from batchkit.shards import in_shard, shard_path
from conftest import ROOT, run_inprocess


def test_split_is_stable_and_complete():
    names = [f"scene_{k:03d}" for k in range(200)]
    parts = [[n for n in names if in_shard(n, (i, 3))] for i in range(3)]
    assert sorted(sum(parts, [])) == names and all(parts)               # every name in exactly one shard
    assert parts == [[n for n in names if in_shard(n, (i, 3))] for i in range(3)]
    assert in_shard("anything", None) and shard_path("a/x.json", (1, 4)).name == "x.shard-1-of-4.json"


def test_sharded_pipeline_equals_one_run(scenes_dir, tmp_path):
    # d2p: two shards as two processes at once, into one folder: the same bytes as the single run of the fixture
    procs = [subprocess.Popen([sys.executable, str(ROOT / "d2p.py"), "--dataset-path", scenes_dir, "--workers", "1",
                               "--output-dir", tmp_path / "pc", "--shard", f"{i}/2"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE) for i in range(2)]
    assert all(p.wait(timeout=300) == 0 for p in procs)
    for f in (scenes_dir / "point_clouds").glob("scene_*"):
        assert (tmp_path / "pc" / f.name).read_bytes() == f.read_bytes(), f.name
    # stages 1.2, 1.3 and 2 in three shards, merged
    n = 3
    steps = [("layers_aggregation.py", "layers.json", ["--input-file", scenes_dir / "annotations.json", "--depth-dir",
                                                       scenes_dir / "depth_maps", "--mask-dir", scenes_dir / "masks"]),
             ("multiview_layers.py", "mv.json", ["--input-file", tmp_path / "one" / "layers.json", "--depth-dir",
                                                 scenes_dir / "depth_maps", "--mask-dir", scenes_dir / "masks"]),
             ("llm_based_query.py", "between.json", ["--anno-file", tmp_path / "one" / "mv.json", "--prompt-function",
                                                     "create_between_prompt"])]
    for script, name, args in steps:
        assert run_inprocess(script, *args, "--output-file", tmp_path / "one" / name).returncode == 0
        sharded_args = [tmp_path / "sharded" / "layers.json" if a == tmp_path / "one" / "layers.json" else
                        tmp_path / "sharded" / "mv.json" if a == tmp_path / "one" / "mv.json" else a for a in args]
        for i in range(n):
            proc = run_inprocess(script, *sharded_args, "--output-file", tmp_path / "shards" / name, "--shard", f"{i}/{n}")
            assert proc.returncode == 0, proc.stderr
        parts = sorted((tmp_path / "shards").glob(name.replace(".json", ".shard-*-of-3.json")))
        assert len(parts) == n
        merged = run_inprocess("spacesgg/merge.py", "--output", tmp_path / "sharded" / name, *parts)
        assert merged.returncode == 0, merged.stderr
        one = json.loads((tmp_path / "one" / name).read_text())
        joined = json.loads((tmp_path / "sharded" / name).read_text())
        if isinstance(one, list):
            one, joined = sorted(one, key=lambda r: r["id"]), sorted(joined, key=lambda r: r["id"])
        assert joined == one, script                                        # record for record
    parts = sorted((tmp_path / "shards").glob("layers.shard-*-of-3.json"))
    missing = run_inprocess("spacesgg/merge.py", "--output", tmp_path / "x.json", *parts[:2])
    twice = run_inprocess("spacesgg/merge.py", "--output", tmp_path / "x.json", *parts, parts[0])
    assert missing.returncode == 2 and "missing" in missing.stderr
    assert twice.returncode == 2 and "twice" in twice.stderr and not (tmp_path / "x.json").exists()
