"""Make photos ready for training before any box, mask or depth is made from them.

    python dataengine/normalise_photos.py --input-dir ~/photos --output-dir data/my_photos/images

Applies an EXIF orientation to the pixels (LLaVA's loader and every stage
read the stored frame, which a viewer shows rotated), scales 16-bit and float
pixels to 8 bits (convert("RGB") would clip them to white) and composites
transparent pixels on white. Photos without such a problem are copied as they
are. Names are kept; a rerun skips photos already written.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from batchkit.cli import make_parser, run_cli  # noqa: E402
from dataengine.photos import normalise_folder  # noqa: E402


def build_parser():
    p = make_parser(__doc__, __doc__.split("\n\n", 2)[2])
    p.add_argument("--input-dir", required=True, help="folder of .png/.jpg photos (left unchanged)")
    p.add_argument("--output-dir", required=True, help="where the normalised photos go, under the same names")
    p.add_argument("--overwrite", action="store_true", help="redo photos already written")
    return p


def main(args):
    return normalise_folder(args.input_dir, args.output_dir, args.overwrite)


if __name__ == "__main__":
    sys.exit(run_cli(main, build_parser()))
