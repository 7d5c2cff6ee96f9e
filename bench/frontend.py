"""Benchmark metric depth estimation: our batched path against transformers' pipeline one image at a time.

    python bench/frontend.py --images 16 [--batch-size 8] [--device cuda]

Both sides run the same model (a random-weight Depth Anything V2 Small built at
its real size and input resolution, 518 px, since no hub is reachable here;
`--model DIR` takes a real snapshot instead) on the same 640 x 480 images in
one process, timed in alternation, each side's best of --rounds; each returns
depth in metres at the image's own resolution. Prints images per second and the
ratio. Not a test.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dataengine.depth import BATCH_SIZES, DepthEstimator, resolve_depth_model  # noqa: E402


def small_model(folder):
    """Depth Anything V2 Small's architecture and processor (random weights), metric head."""
    import torch
    import transformers as T
    torch.manual_seed(0)
    backbone = T.Dinov2Config(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536,
                              patch_size=14, image_size=518, out_indices=[3, 6, 9, 12], reshape_hidden_states=False,
                              apply_layernorm=True)
    config = T.DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=384, neck_hidden_sizes=[48, 96, 192, 384],
                                   fusion_hidden_size=64, head_hidden_size=32, reassemble_factors=[4, 2, 1, 0.5],
                                   depth_estimation_type="metric", max_depth=20)
    processor = T.DPTImageProcessor(size={"height": 518, "width": 518}, keep_aspect_ratio=True, ensure_multiple_of=14,
                                    do_pad=False, resample=3, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    T.DepthAnythingForDepthEstimation(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def main(args):
    import torch
    from transformers import pipeline
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (480, 640, 3), dtype=np.uint8) for _ in range(args.images)]
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.model or small_model(Path(tmp) / "da2-small")
        ours = DepthEstimator(resolve_depth_model(str(folder)), device=args.device)
        args.batch_size = args.batch_size or BATCH_SIZES.get(ours.device, 1)
        pipe = pipeline("depth-estimation", model=str(folder), device=ours.device)

        def run_ours():
            out = []
            for start in range(0, len(images), args.batch_size):
                out += ours.predict(images[start:start + args.batch_size])[0]
            return out

        def run_pipeline():
            return [pipe(Image.fromarray(im))["predicted_depth"].numpy() for im in images]

        def timed(fn):
            if ours.device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            result = fn()
            if ours.device == "cuda":
                torch.cuda.synchronize()
            return time.perf_counter() - start, result

        timed(run_ours), timed(run_pipeline)                       # warm-up
        best = {"ours": float("inf"), "pipeline": float("inf")}
        for k in range(args.rounds):
            for name, fn in ((("ours", run_ours), ("pipeline", run_pipeline)) if k % 2 == 0 else
                             (("pipeline", run_pipeline), ("ours", run_ours))):
                seconds, result = timed(fn)
                best[name] = min(best[name], seconds)
                if name == "ours":
                    ours_depth = result
                else:
                    pipe_depth = result
        worst = max(float(np.abs(a - b).max()) for a, b in zip(ours_depth, pipe_depth))
    n = len(images)
    print(f"depth bench: {n} images 640x480, Depth Anything V2 Small architecture at 518 px, {ours.device}, "
          f"best of {args.rounds} rounds (largest difference between the two sides: {worst:.2e} m)")
    print(f"  pipeline('depth-estimation'), one image at a time  {n / best['pipeline']:6.2f} images/s")
    print(f"  ours, batch {args.batch_size:<3d}                               {n / best['ours']:6.2f} images/s"
          f"   -> {best['pipeline'] / best['ours']:.2f}x (target >= 2x on the CPU)")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--images", type=int, default=16, help="images per round (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=None, help="our batch size (default: estimate_depth.py's, 1 on the CPU, 8 on a GPU)")
    p.add_argument("--rounds", type=int, default=3, help="rounds per side; each side's best counts (default %(default)s)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu", help="where both sides run (default %(default)s)")
    p.add_argument("--model", default=None, help="a real depth model folder instead of the random-weight stand-in")
    main(p.parse_args())
