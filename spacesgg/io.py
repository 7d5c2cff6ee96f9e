"""Checked readers of images, depth maps and masks, and a fast PNG writer (every output goes through batchkit.files).

Photos are read as LLaVA's loader reads them, `Image.open(p).convert("RGB")`:
the stored pixel frame, with no EXIF transpose. What that loader would show
differently from a photo viewer (an EXIF orientation other than 1) or get
wrong (16-bit or float pixels clipped to 8 bits, transparency dropped) is
returned as a problem, so every stage can warn about it once per image.
"""

import json
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from batchkit.errors import RecordError
from batchkit.files import write_bytes

PNG_COLOR_TYPES = {1: 0, 3: 2, 4: 6}     # channels -> PNG colour type (grey, RGB, RGBA)
EXIF_ORIENTATION = 0x0112
DEEP_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")     # more than 8 bits: convert("RGB") clips them
NORMALISE_HINT = "normalise such photos first: python dataengine/normalise_photos.py --input-dir DIR --output-dir NEW_DIR"
PROVENANCE_KEY = "spacesgg:provenance"     # PNG text chunk that records what a mask or depth map was made from


def encode_png(array, level=1, text=None):
    """PNG bytes of an H x W (x 1/3/4) uint8 or uint16 array, rows unfiltered, zlib `level`, with `text` ({key: value}) as tEXt chunks.

    About twice as fast as PIL's encoder at level 1 on our mostly flat canvases,
    because it skips PIL's per-row adaptive filter search.
    """
    array = np.asarray(array)
    if array.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"PNG needs uint8 or uint16 pixels, got {array.dtype}")
    h, w = array.shape[:2]
    channels = 1 if array.ndim == 2 else array.shape[2]
    rows = array.reshape(h, -1)
    if array.dtype == np.uint16:
        rows = rows.astype(">u2").view(np.uint8)           # PNG stores 16-bit samples big-endian
    raw = np.zeros((h, rows.shape[1] + 1), np.uint8)     # a 0 byte (filter: none) starts each row
    raw[:, 1:] = rows

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", w, h, array.itemsize * 8, PNG_COLOR_TYPES[channels], 0, 0, 0)
    texts = b"".join(chunk(b"tEXt", k.encode("latin-1") + b"\0" + v.encode("latin-1")) for k, v in (text or {}).items())
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + texts + chunk(b"IDAT", zlib.compress(raw, level))
            + chunk(b"IEND", b""))


def write_png(path, array, level=1, provenance=None):
    """Write a PNG atomically; `provenance` (a JSON-able dict) goes into a text chunk that png_provenance reads back."""
    text = {PROVENANCE_KEY: json.dumps(provenance, sort_keys=True, ensure_ascii=True)} if provenance is not None else None
    write_bytes(path, encode_png(array, level, text))


def png_provenance(path):
    """The provenance dict written with a PNG by write_png, or None (no file, unreadable, none recorded).

    Only the chunks before the pixels are read, not the pixels.
    """
    try:
        with Image.open(path) as im:
            return json.loads(im.info[PROVENANCE_KEY])
    except (OSError, KeyError, ValueError, SyntaxError):
        return None


def _open_problem(path, error):
    if isinstance(error, FileNotFoundError):
        return RecordError(f"{path}: image not found")
    if isinstance(error, IsADirectoryError):
        return RecordError(f"{path}: is a folder, not an image")
    if isinstance(error, Image.DecompressionBombError):
        return RecordError(f"{path}: {error}; too many pixels for a training image, downscale it")
    return RecordError(f"{path}: cannot read image ({error}); re-export it as PNG or JPEG")


def photo_problems(im, pixels=None):
    """[(kind, text)] of what LLaVA's loader would show differently from a viewer or get wrong, for an open image.

    `pixels` (the decoded image, when the caller has it) lets transparency be checked too.
    """
    out = []
    orientation = im.getexif().get(EXIF_ORIENTATION)
    if orientation not in (None, 1):
        out.append(("EXIF-rotated", f"EXIF orientation {orientation}: viewers show it rotated or mirrored, but LLaVA's "
                                    "loader and every stage here use the stored pixel frame (boxes, masks and depth are "
                                    "in that frame)"))
    if im.mode in DEEP_MODES:
        out.append(("16-bit or float", f"{im.mode} pixels: convert('RGB') clips them to 0..255 (a 16-bit photo turns "
                                       "almost white), as LLaVA's loader would"))
    elif pixels is not None and im.mode in ("RGBA", "LA", "PA") and np.asarray(pixels)[..., -1].min() < 255:
        out.append(("transparent", "transparent pixels: convert('RGB') drops the alpha and shows their hidden colour"))
    return out


def image_header(path):
    """((width, height), problems) of an image without decoding its pixels; a bad file is a RecordError."""
    try:
        with Image.open(path) as im:
            return im.size, photo_problems(im)
    except Exception as e:  # any unreadable file costs that image
        raise _open_problem(path, e) from None


def read_photo(path):
    """(H x W x 3 uint8 RGB as LLaVA's loader reads it, problems); a bad file is a RecordError."""
    try:
        with Image.open(path) as im:
            pixels = np.asarray(im) if im.mode in ("RGBA", "LA") else None
            problems = photo_problems(im, pixels)
            return np.asarray(im.convert("RGB")), problems
    except Exception as e:  # 0 bytes, truncated, a folder or a text file named like an image, too many pixels
        raise _open_problem(path, e) from None


def stored_frame_png(path):
    """PNG bytes of the stored pixel frame of a photo with an EXIF orientation other than 1, else None.

    Servers and browsers apply the orientation; LLaVA's loader does not. A copy without the tag shows them what
    the trainer sees.
    """
    with Image.open(path) as im:
        if im.getexif().get(EXIF_ORIENTATION) in (None, 1):
            return None
        return encode_png(np.asarray(im.convert("RGB")), level=6)


def read_rgb(path):
    """H x W x 3 uint8 RGB image, as LLaVA's loader reads it (stored frame)."""
    return read_photo(path)[0]


def warn_photo(tally, path, problems):
    """One warning line per problem of one photo, counted on the stage's tally."""
    for kind, text in problems:
        tally.warn(kind, f"{path}: {text}; {NORMALISE_HINT}")


def read_depth(path, scale_factor):
    """Depth in metres (float32, 0 = no depth) from a 16-bit PNG (value / scale_factor) or a float .npy in metres."""
    path = Path(path)
    if not path.is_file():
        raise RecordError(f"{path}: depth map not found")
    if path.suffix == ".npy":
        depth = np.load(path, allow_pickle=False)
        if depth.ndim != 2 or depth.dtype.kind != "f":
            raise RecordError(f"{path}: a .npy depth map must be a 2-D float array in metres, got {depth.dtype} {depth.shape}")
        depth = np.nan_to_num(depth.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        depth[depth < 0] = 0
        return depth
    try:
        with Image.open(path) as im:
            mode = im.mode
            raw = np.asarray(im)
    except OSError as e:
        raise RecordError(f"{path}: cannot read depth map ({e})") from None
    if mode not in ("I;16", "I;16B", "I;16L", "I") or raw.ndim != 2:
        raise RecordError(
            f"{path}: depth map is {mode} ({raw.dtype}), expected a single-channel 16-bit PNG; "
            "8-bit depth has lost its precision, re-export it as 16-bit (metres x scale factor)")
    return raw.astype(np.float32) / np.float32(scale_factor)


def read_mask(path, shape):
    """Boolean mask (non-zero inside) of the given H x W shape."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            mask = np.asarray(im)
    except FileNotFoundError:
        raise RecordError(f"{path}: mask not found") from None
    except OSError as e:
        raise RecordError(f"{path}: cannot read mask ({e})") from None
    if mask.ndim == 3:
        mask = mask.any(axis=2)
    if mask.shape != tuple(shape):
        raise RecordError(f"{path}: mask is {mask.shape[1]}x{mask.shape[0]} but the depth map is {shape[1]}x{shape[0]}; masks must match the image size")
    mask = mask != 0
    if not mask.any():
        raise RecordError(f"{path}: mask is empty (no non-zero pixel)")
    return mask
