"""Benchmark d2p per image (steady state) against the published algorithm and an I/O floor.

    python bench/d2p.py --images 8 --reference-images 2

(a) reference: a per-pixel Python loop that back-projects and writes an ASCII PLY
    line by line, as the published script does;
(b) I/O floor: read the same two PNGs and write the same number of bytes with
    numpy, no computation.
Prints seconds per image for each and the two ratios. Not a test.
"""

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from batchkit.batch import Tally
from dataengine.scenes import write_dataset
from spacesgg.camera import load_intrinsics
from spacesgg.d2p import convert_one, plan_jobs


def reference_convert(image_path, depth_path, ply_path, K, scale_factor):
    """The published pattern: Python loop over pixels, ASCII PLY written point by point."""
    rgb = np.array(Image.open(image_path).convert("RGB"))
    depth = np.array(Image.open(depth_path))
    fx, fy, cx, cy = K.fx, K.fy, K.cx, K.cy
    points = []
    for v in range(depth.shape[0]):
        for u in range(depth.shape[1]):
            z = depth[v, u] / scale_factor
            if z == 0:
                continue
            x = (u - cx) * z / fx
            y = (v - cy) * z / fy
            points.append((x, y, z, *rgb[v, u]))
    with open(ply_path, "w") as f:
        f.write("ply\nformat ascii 1.0\n")
        f.write(f"element vertex {len(points)}\n")
        f.write("property float x\nproperty float y\nproperty float z\n")
        f.write("property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n")
        for p in points:
            f.write(f"{p[0]} {p[1]} {p[2]} {p[3]} {p[4]} {p[5]}\n")


def io_floor(job, sizes):
    """Read both PNGs, write two new files of the sizes d2p writes, nothing else."""
    rgb = np.asarray(Image.open(job.image))
    depth = np.asarray(Image.open(job.depth))
    for path, nbytes in zip((job.ply, job.npy), sizes):
        np.zeros(nbytes, np.uint8).tofile(path)
    return rgb.shape, depth.shape


def per_image(fns, items, repeats, fresh_dir):
    """Median seconds per item for each fn, interleaved image by image so that disk
    write-back and cache state weigh on all alike; each pass writes into new folders."""
    times = [[] for _ in fns]
    for r in range(repeats):
        for item in items:
            for k, fn in enumerate(fns):
                out = fresh_dir / f"fn{k}_pass{r}"
                out.mkdir(parents=True, exist_ok=True)
                job = replace(item, ply=out / item.ply.name, npy=out / item.npy.name)
                t = time.perf_counter()
                fn(job)
                times[k].append(time.perf_counter() - t)
    return [statistics.median(t) for t in times]


def main(args):
    with tempfile.TemporaryDirectory() as tmp:
        dataset = write_dataset(Path(tmp) / "scenes", n_scenes=args.images, seed=1)
        jobs, _, _cameras = plan_jobs(Tally("bench"), dataset)
        for job in jobs:                                       # warm-up: imports, allocator, page cache
            convert_one(job)
        sizes = (jobs[0].ply.stat().st_size, jobs[0].npy.stat().st_size)
        ours, floor = per_image([convert_one, lambda j: io_floor(j, sizes)], jobs, args.repeats, Path(tmp) / "fast")
        K = load_intrinsics(dataset / "K.txt")
        ref_items = jobs[: args.reference_images]
        (ref,) = per_image([lambda j: reference_convert(j.image, j.depth, j.ply, K, 5000.0)], ref_items, 1, Path(tmp) / "ref")
    print(f"d2p bench, 640x480, {args.images} images x {args.repeats} repeats (reference on {len(ref_items)}), "
          f"median seconds per image:")
    print(f"  ours      {ours * 1000:8.1f} ms")
    print(f"  reference {ref * 1000:8.1f} ms   -> ours is {ref / ours:.1f}x faster than the reference (target >= 20x)")
    print(f"  I/O floor {floor * 1000:8.1f} ms   -> ours takes {ours / floor:.2f}x the I/O floor (target <= 3x)")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--images", type=int, default=8, help="synthetic 640x480 images to convert (default %(default)s)")
    p.add_argument("--repeats", type=int, default=3, help="passes over the images for ours and the floor (default %(default)s)")
    p.add_argument("--reference-images", type=int, default=2, help="images for the slow reference (default %(default)s)")
    main(p.parse_args())
