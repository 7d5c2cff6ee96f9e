"""Benchmark the spatial-ID extractor against the published pattern on a tiny-but-not-trivial LLaVA.

    python bench/extract.py

Model: random-weight LLaVA, 8 decoder layers, hidden 256, 224-px vision input
(patch 14: 256 image tokens), LLaVA-1.5's vocabulary size (32064) for the
embedding and lm head. Ours: batch 8, hooks keep the target position
of every layer, no logits. Published pattern: batch 1, full
output_hidden_states (every layer, every token) kept per image, logits
computed. Each runs in its own process; images per second (best of
--repeats passes, model loading excluded) and peak resident memory above
the loaded model. Not a test.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _reset_peak():
    Path("/proc/self/clear_refs").write_text("5")      # Linux: reset VmHWM to the current RSS


def _peak_mb():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _rss_mb():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run(mode, model_dir, pair_dir, repeats):
    import torch
    from PIL import Image

    from spatial_id.extract import QUERY, Extractor
    from spatial_id.ids import extract_pair, read_pair
    from spatial_id.registry import resolve_model
    torch.set_num_threads(2)
    ex = Extractor(resolve_model("llava-7b", model_dir), device="cpu")
    a, b, entries = read_pair(pair_dir)
    query = QUERY.format(a=a, b=b)
    text = ex.prompt(query)
    target = ex.target_position(text, query, b)
    layers = ex.resolve_layers(None)
    warm = [Image.open(p).convert("RGB") for p, _ in entries[:8]]
    if mode == "ours":                        # warm-up at each side's own shapes (allocator, kernels)
        ex.hidden([text] * 8, warm, target, layers)
    else:
        with torch.inference_mode():
            ex.model(**ex._inputs([text], warm[:1]), output_hidden_states=True)
    base = _rss_mb()
    _reset_peak()
    best = float("inf")
    for _ in range(repeats):                  # best of several passes: the machine's noise is one-sided
        start = time.perf_counter()
        if mode == "ours":                    # the real path: read the pair folder, batch 8, hooks
            vectors, *_ = extract_pair(ex, pair_dir, batch_size=8)
        else:                                 # one image at a time, everything kept
            kept = []
            with torch.inference_mode():
                for path, _ in entries:
                    inputs = ex._inputs([text], [Image.open(path).convert("RGB")])
                    out = ex.model(**inputs, output_hidden_states=True)
                    kept.append(torch.stack(out.hidden_states).half())     # every layer, every token, fp16
            position = kept[0].shape[2] - target.tail
            vectors = torch.stack([h[:, 0, position] for h in kept], dim=1).float()
            del kept
        best = min(best, time.perf_counter() - start)
    return {"images_per_s": len(entries) / best, "peak_mb": _peak_mb() - base, "shape": list(vectors.shape)}


def main(args):
    if args.mode:
        print(json.dumps(run(args.mode, args.model_dir, args.pair_dir, args.repeats)))
        return
    from dataengine.grid import make_objects, tile_pair
    from spatial_id.tiny import build_tiny_model
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = build_tiny_model("llava", tmp / "llava", layers=8, hidden=256, image_size=224, patch=14,
                                 vocab_size=args.vocab_size)
        make_objects(["camel", "frog"], tmp / "objects")
        tile_pair("camel", "frog", tmp / "objects", tmp / "grid")      # 64 images
        results = {}
        for mode in ("ours", "published"):
            proc = subprocess.run([sys.executable, __file__, "--mode", mode, "--model-dir", str(model), "--pair-dir",
                                   str(tmp / "grid" / "camel_frog"), "--repeats", str(args.repeats)],
                                  capture_output=True, text=True, check=True)
            results[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    ours, pub = results["ours"], results["published"]
    print(f"extract bench: tiny LLaVA (8 layers, hidden 256, 224 px, 256 image tokens, vocabulary {args.vocab_size}), "
          "one pair folder (64 images, read from disk), CPU")
    print(f"  ours (batch 8, hooks)                {ours['images_per_s']:6.1f} images/s, peak +{ours['peak_mb']:7.1f} MB")
    print(f"  published (batch 1, all hidden)      {pub['images_per_s']:6.1f} images/s, peak +{pub['peak_mb']:7.1f} MB")
    print(f"  -> {ours['images_per_s'] / pub['images_per_s']:.1f}x the images per second (target >= 3x), "
          f"{pub['peak_mb'] / max(ours['peak_mb'], 1e-9):.1f}x less peak memory")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--vocab-size", type=int, default=32064, help="embedding/lm-head rows, LLaVA-1.5's by default (default %(default)s)")
    p.add_argument("--repeats", type=int, default=3, help="passes over the pair per side; the best counts (default %(default)s)")
    p.add_argument("--mode", choices=["ours", "published"], default=None, help="internal: run one side in this process")
    p.add_argument("--model-dir", default=None, help="internal: the tiny model folder")
    p.add_argument("--pair-dir", default=None, help="internal: the pair folder")
    main(p.parse_args())
