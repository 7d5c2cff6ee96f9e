"""Write synthetic RGB-D scenes with exactly known geometry (demo input and test fixture).

    python dataengine/make_scenes.py --output-dir data/synthetic_scenes --scenes 6 --seed 0

Writes images/, depth_maps/ (16-bit, scale factor 5000), K.txt, poses.txt,
masks/, annotations.json (stage 1.2 input) and expected.json (true layers and
relations per view). A rerun with the same settings leaves a complete dataset
as it is.
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from batchkit.cli import make_parser, positive_int, run_cli
from batchkit.errors import UserError
from dataengine.scenes import dataset_is_current, write_dataset


def build_parser():
    p = make_parser(__doc__, "Render synthetic RGB-D scenes of boxes on a 3x3 slot grid, with masks, "
                                            "an annotation file and the expected layers and relations.")
    p.add_argument("--output-dir", required=True, help="dataset folder to write")
    p.add_argument("--scenes", type=int, default=6, help="number of scenes (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed writes the same scenes (default %(default)s)")
    p.add_argument("--min-objects", type=positive_int, default=3, help="fewest objects per scene (default %(default)s)")
    p.add_argument("--max-objects", type=positive_int, default=6, help="most objects per scene, at most 9 (default %(default)s)")
    return p


def main(args):
    if not 1 <= args.min_objects <= args.max_objects <= 9:
        raise UserError("need 1 <= --min-objects <= --max-objects <= 9")
    settings = (args.output_dir, args.scenes, args.seed, args.min_objects, args.max_objects)
    if dataset_is_current(*settings):      # leave the files (and their times) alone, so later stages resume
        print(f"make_scenes: 0 scenes written, {args.scenes} skipped (already in {args.output_dir} with these settings)")
        return 0
    start = time.perf_counter()
    out = write_dataset(*settings)
    print(f"make_scenes: {args.scenes} scenes written to {out} in {time.perf_counter() - start:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, build_parser()))
