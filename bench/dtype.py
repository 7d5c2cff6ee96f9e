"""How far float16 and bfloat16 spatial IDs lie from float32 ones, on a tiny model (the README's figures).

    python bench/dtype.py

Extracts one pair's IDs (64 images) with a tiny random-weight LLaVA in each
dtype on this machine's device and prints, per dtype, the largest deviation
from float32 relative to the float32 IDs' root-mean-square, over all layers,
and the cosine between the float32 and the low-precision IDs. Not a test.
"""

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dataengine.grid import ensure_objects, tile_pair  # noqa: E402
from spatial_id.extract import Extractor  # noqa: E402
from spatial_id.ids import extract_pair  # noqa: E402
from spatial_id.registry import ModelChoice  # noqa: E402
from spatial_id.tiny import build_tiny_model  # noqa: E402


def main(args):
    import torch
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        objects = tmp / "objects"
        ensure_objects(["camel", "frog"], objects)
        tile_pair("camel", "frog", objects, tmp / "grid")
        model = build_tiny_model("llava", tmp / "llava")
        ids = {}
        for dtype in ("float32", "float16", "bfloat16"):
            ex = Extractor(ModelChoice("llava-7b", str(model), "llava"), device=args.device, dtype=dtype)
            ids[dtype] = extract_pair(ex, tmp / "grid" / "camel_frog", batch_size=16)[0]
    ref = ids["float32"]
    rms = ref.pow(2).mean(dim=(1, 2), keepdim=True).sqrt()
    live = rms.flatten() > 1e-6                 # layer 0: the word's embedding, the same in every image, has no ID
    ref, rms = ref[live], rms[live]
    ids = {k: v[live] for k, v in ids.items()}
    print(f"dtype deviation from float32, tiny LLaVA ({ref.shape[0]} hidden states with IDs, {ref.shape[1]} cells), {args.device}:")
    for dtype in ("float16", "bfloat16"):
        rel = ((ids[dtype] - ref).abs() / rms).amax().item()
        cos = torch.nn.functional.cosine_similarity(ids[dtype].flatten(1), ref.flatten(1), dim=1).min().item()
        print(f"  {dtype:9s} largest |ID - ID_float32| / RMS(ID_float32): {rel:.2e}   lowest per-layer cosine: {cos:.6f}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to run (default %(default)s)")
    main(p.parse_args())
