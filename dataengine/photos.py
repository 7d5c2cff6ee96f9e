"""Photos made ready for training: EXIF orientation applied, 8-bit RGB, so that what LLaVA's loader reads is what a viewer shows.

Every stage reads photos as LLaVA's loader does (`Image.open(p).convert("RGB")`,
stored frame). A photo with an EXIF orientation other than 1 is shown rotated
by viewers but read unrotated by the loader; a 16-bit photo is clipped to
white; transparency is dropped. Normalising the photos once, before any box
or mask is drawn on them, removes all three: the orientation is applied to
the pixels (and the tag dropped), deep pixels are scaled to 8 bits, and
transparent pixels are composited on white.
"""

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from tqdm import tqdm

from batchkit.batch import Tally
from batchkit.errors import UserError
from batchkit.files import atomic_path, write_bytes
from spacesgg.d2p import IMAGE_EXTENSIONS, list_by_stem
from spacesgg.io import DEEP_MODES, photo_problems


def to_8bit_rgb(im):
    """An RGB image of 8-bit pixels: 16-bit values / 257, 32-bit and float values scaled by the image's maximum."""
    if im.mode in DEEP_MODES:
        values = np.asarray(im, dtype=np.float64)
        if im.mode.startswith("I;16"):
            values = values / 257.0
        else:
            top = float(np.nanmax(values)) if values.size else 0.0
            values = values * (255.0 / top) if top > 0 else values * 0
        return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8)).convert("RGB")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def normalise_photo(source, target):
    """Write `source` to `target` ready for training; returns the kinds of problem it had ([] = copied as is)."""
    with Image.open(source) as im:
        pixels = np.asarray(im) if im.mode in ("RGBA", "LA") else None
        problems = [kind for kind, _ in photo_problems(im, pixels)]
        if not problems:
            write_bytes(target, Path(source).read_bytes())
            return []
        fixed = to_8bit_rgb(ImageOps.exif_transpose(im))
        fmt = "JPEG" if Path(target).suffix.lower() in (".jpg", ".jpeg") else "PNG"
        with atomic_path(target) as tmp:
            fixed.save(tmp, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return problems


def normalise_folder(input_dir, output_dir, overwrite=False):
    """Every .png/.jpg of `input_dir` into `output_dir` under the same name; returns the exit code."""
    source, target = Path(input_dir), Path(output_dir)
    if not source.is_dir():
        raise UserError(f"--input-dir {source}: folder not found")
    if target.exists() and source.resolve() == target.resolve():
        raise UserError("--output-dir must differ from --input-dir (the originals are kept)")
    photos = list_by_stem(source, IMAGE_EXTENSIONS)
    if not photos:
        raise UserError(f"{source}: no .png or .jpg images")
    target.mkdir(parents=True, exist_ok=True)
    tally = Tally("normalise_photos")
    for path in tqdm(photos.values(), desc="photos", unit="img"):
        out = target / path.name
        if not overwrite and out.is_file() and out.stat().st_mtime >= path.stat().st_mtime:
            tally.skipped += 1
            continue
        try:
            for kind in normalise_photo(path, out):
                tally.counts[kind] += 1
            tally.done += 1
        except Exception as e:  # one unreadable photo costs that photo
            tally.fail_record(path, e)
    fixed = ", ".join(f"{n} {kind}" for kind, n in sorted(tally.counts.items())) or "none needed a change"
    tally.summary(f"fixed: {fixed}; photos in {target}")
    return tally.exit_code
