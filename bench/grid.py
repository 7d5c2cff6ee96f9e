"""Benchmark grid-image throughput: extraction_data.sh against the published pattern and a PNG floor.

    python bench/grid.py --baseline-pairs 8

(a) published pattern: one Python process per pair and size, each loading the
    renders and saving its 16 images with PIL's default PNG settings, run
    with the same number of parallel workers;
(b) floor: only encoding and saving ready canvases as PNG (our PNG writer), same workers.
All in one run; prints images per second and the two ratios. Not a test.
"""

import argparse
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from itertools import permutations
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dataengine.grid import default_objects_dir, ensure_objects  # noqa: E402
from dataengine.objects import OBJECT_NAMES  # noqa: E402
from spacesgg.io import write_png  # noqa: E402

PUBLISHED = r'''
import os, random, sys
import numpy as np
from PIL import Image
a, b, size, out, objects = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
A = Image.open(os.path.join(objects, a + ".png")).convert("RGBA").resize((size, size))
B = Image.open(os.path.join(objects, b + ".png")).convert("RGBA").resize((size, size))
os.makedirs(out, exist_ok=True)
for j in range(4):
    for i in range(4):
        canvas = Image.new("RGB", (896, 896), (0, 0, 0))
        cells = [(x, y) for y in range(4) for x in range(4) if (x, y) != (i, j)]
        x, y = random.choice(cells)
        canvas.paste(A, (x * 224 + (224 - size) // 2, y * 224 + (224 - size) // 2), A)
        canvas.paste(B, (i * 224 + (224 - size) // 2, j * 224 + (224 - size) // 2), B)
        canvas.save(os.path.join(out, f"{a}_{b}_{i}_{j}_{size}.png"))
'''


_SAMPLE = []


def _load_sample(folder):
    _SAMPLE.extend(np.asarray(Image.open(p).convert("RGB")) for p in sorted(Path(folder).glob("*.png")))


def _save(job):
    k, out = job
    write_png(Path(out) / f"{k}.png", _SAMPLE[k % len(_SAMPLE)])


def main(args):
    objects_dir = default_objects_dir()
    ensure_objects(OBJECT_NAMES, objects_dir)
    sizes = (224, 174, 124, 74)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        subprocess.run(["bash", str(ROOT / "dataengine" / "extraction_data.sh"), str(tmp / "ours")], check=True,
                       env={"WORKERS": str(args.workers), "PATH": "/usr/bin:/bin", "PYTHON": sys.executable},
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ours_n = len(list((tmp / "ours").glob("*/*.png")))
        ours = ours_n / (time.perf_counter() - t)

        script = tmp / "published.py"
        script.write_text(PUBLISHED)
        pairs = list(permutations(OBJECT_NAMES, 2))[: args.baseline_pairs]
        calls = [[sys.executable, str(script), a, b, str(s), str(tmp / "published" / f"{a}_{b}"), str(objects_dir)]
                 for a, b in pairs for s in sizes]
        t = time.perf_counter()
        with ThreadPoolExecutor(args.workers) as pool:
            list(pool.map(lambda c: subprocess.run(c, check=True), calls))
        pub_n = len(list((tmp / "published").glob("*/*.png")))
        published = pub_n / (time.perf_counter() - t)

        (tmp / "floor").mkdir()
        jobs = [(k, str(tmp / "floor")) for k in range(args.floor_images)]
        with ProcessPoolExecutor(args.workers, initializer=_load_sample, initargs=(tmp / "ours" / "camel_frog",)) as pool:
            list(pool.map(_save, jobs[: args.workers * 4]))        # warm-up: workers load the sample canvases
            t = time.perf_counter()
            list(pool.map(_save, jobs, chunksize=16))
            floor = len(jobs) / (time.perf_counter() - t)
    print(f"grid bench, {args.workers} workers, images per second:")
    print(f"  extraction_data.sh  {ours:7.1f}  ({ours_n} images, 90 pairs)")
    print(f"  published pattern   {published:7.1f}  ({pub_n} images, {len(calls)} processes)  -> ours {ours / published:.1f}x (target >= 3x)")
    print(f"  PNG-save floor      {floor:7.1f}  ({len(jobs)} canvases)  -> ours reaches {ours / floor:.2f} of the floor")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--baseline-pairs", type=int, default=8, help="pairs for the slow published pattern (default %(default)s)")
    p.add_argument("--floor-images", type=int, default=1024, help="canvases for the PNG floor (default %(default)s)")
    p.add_argument("--workers", type=int, default=2, help="parallel workers for all three (default %(default)s)")
    main(p.parse_args())
