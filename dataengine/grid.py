"""Two-object grid images for spatial-ID extraction.

For one ordered pair (a = reference, b = target) and every cell (i, j) =
(column, row) of a grid x grid canvas and every size, b is pasted centred in
cell (i, j) and a elsewhere. Two designs (--references):
  random  a in a seeded random other cell: OUTPUT/{a}_{b}/{a}_{b}_{i}_{j}_{size}.png
  all     a in every other cell r, one image each (the published study's
          reference-balanced design): OUTPUT/{a}_{b}/ref_{ri}_{rj}/{a}_{b}_{i}_{j}_{size}.png
plus manifest.json (written last) with every image's cells and pixel boxes
(x1/y1 exclusive, the pasted render's extent).
"""

import hashlib
import time
import zlib
from itertools import permutations
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from batchkit.batch import DEBUG, Tally, describe, report, traceback_text
from batchkit.cli import number, positive_int
from batchkit.errors import UserError
from batchkit.files import check_name, contained, read_json, write_json
from batchkit.workers import pool_map
from spacesgg.io import write_png

from .objects import OBJECT_NAMES, render_object

GRID = 4
CELL = 224
SIZES = (224, 174, 124, 74)
SEED = 0
BACKGROUNDS = ("black", "white")
KEY_TOLERANCE = 30              # max channel distance to the key colour that counts as background
VARIATION_SCALE = (0.85, 1.0)   # --local-variation: random scale ...
VARIATION_DEGREES = 15.0        # ... and rotation within +-this many degrees
REFERENCE_DESIGNS = ("random", "all")


def add_tiling_args(p):
    """The flags that define a grid dataset's configuration (shared by the tiling CLIs)."""
    p.add_argument("--objects-dir", default=None, help="folder of RGBA renders {name}.png (default: data/objects in the repository)")
    p.add_argument("--grid", type=number(int, 2), default=GRID, help="cells per side (default %(default)s)")
    p.add_argument("--cell-size", type=positive_int, default=CELL, help="cell size in pixels (default %(default)s)")
    p.add_argument("--sizes", type=positive_int, nargs="+", default=list(SIZES), help="object sizes in pixels, at most the cell size (default %(default)s)")
    p.add_argument("--seed", type=int, default=SEED, help="seed of the reference placement (and variation); same seed, same bytes (default %(default)s)")
    p.add_argument("--background", default="black", help="black (as the published data), white, or a folder of background images")
    p.add_argument("--no-same-row-or-col", action="store_true", help="put the reference in a different row and column from the target")
    p.add_argument("--local-variation", action="store_true", help=f"random scale {VARIATION_SCALE} and rotation +-{VARIATION_DEGREES:g} deg per pasted object")
    p.add_argument("--key-background", choices=BACKGROUNDS, default=None, help="treat renders without alpha as having this flat background colour")
    p.add_argument("--references", choices=REFERENCE_DESIGNS, default="random",
                   help="random: the reference in one seeded random other cell (64 images per pair); all: one image per "
                        "other reference cell, in ref_{ri}_{rj}/ (960 per pair), so extraction can remove the reference's "
                        "effect (default %(default)s)")


def default_objects_dir():
    return Path(__file__).resolve().parents[1] / "data" / "objects"


def ensure_objects(names, objects_dir, make_missing=True):
    """Check every name has a render; make the offline stand-ins of missing stand-in names."""
    objects_dir = Path(objects_dir)
    names = [check_name(n, "object name") for n in names]
    missing = [n for n in names if not (objects_dir / f"{n}.png").is_file()]
    unknown = [n for n in missing if n not in OBJECT_NAMES]
    if unknown:
        raise UserError(f"unknown object {', '.join(map(repr, unknown))}: no render {objects_dir}/{unknown[0]}.png and no stand-in "
                        f"of that name (stand-ins: {' '.join(OBJECT_NAMES)}); add the RGBA render or pick another name")
    if missing and not make_missing:
        raise UserError(f"{objects_dir}: no render for {' '.join(missing)}; run python dataengine/make_objects.py --output-dir {objects_dir}")
    if missing:
        make_objects(missing, objects_dir)
    return missing


def make_objects(names, objects_dir, size=256, overwrite=False):
    """Write the stand-in renders {name}.png (RGBA); existing files (e.g. real renders) are kept unless overwrite."""
    objects_dir = Path(objects_dir)
    written = []
    for name in tqdm(names, desc="stand-in objects", unit="obj"):
        path = objects_dir / f"{name}.png"
        if path.exists() and not overwrite:
            continue
        write_png(path, render_object(name, size))
        written.append(path)
    return written


def load_render(path, key_background=None):
    """RGBA uint8 array of an object render; a render without alpha needs key_background."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            has_alpha = im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info)
            rgba = np.asarray(im.convert("RGBA")).copy()
    except FileNotFoundError:
        raise UserError(f"{path}: object render not found") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read object render ({e})") from None
    if not has_alpha or (rgba[..., 3] == 255).all():
        if key_background is None:
            raise UserError(f"{path}: render has no transparency ({'mode ' + im.mode if not has_alpha else 'alpha all opaque'}); "
                            "export RGBA with a transparent background, or pass --key-background white|black")
        key = 255 if key_background == "white" else 0
        rgba[..., 3] = np.where((np.abs(rgba[..., :3].astype(int) - key) <= KEY_TOLERANCE).all(-1), 0, 255)
    if not rgba[..., 3].any():
        raise UserError(f"{path}: render is fully transparent")
    return letterbox(rgba)


def letterbox(rgba):
    """A render that is not square, centred on a transparent square (resizing it to a size never squashes it)."""
    h, w = rgba.shape[:2]
    if h == w:
        return rgba
    side = max(h, w)
    out = np.zeros((side, side, 4), np.uint8)
    y0, x0 = (side - h) // 2, (side - w) // 2
    out[y0:y0 + h, x0:x0 + w] = rgba
    return out


def _file_digest(path):
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()[:16]


def pair_config(a, b, objects_dir, grid=GRID, cell_size=CELL, sizes=SIZES, seed=SEED, background="black",
                no_same_row_or_col=False, local_variation=False, key_background=None, references="random"):
    """The manifest fields that define a pair folder; a folder with other values is never mixed in."""
    check_name(a, "object name")
    check_name(b, "object name")
    if grid < 2:
        raise UserError(f"--grid must be at least 2, got {grid}")
    if cell_size < 1:
        raise UserError(f"--cell-size must be at least 1 pixel, got {cell_size}")
    if not sizes:
        raise UserError("--sizes needs at least one size")
    for s in sizes:
        if not 0 < s <= cell_size:
            raise UserError(f"object size {s} px does not fit a {cell_size} px cell; use sizes up to --cell-size")
    if background not in BACKGROUNDS and not Path(background).is_dir():
        raise UserError(f"--background {background!r}: expected black, white or a folder of images")
    if references not in REFERENCE_DESIGNS:
        raise UserError(f"--references {references!r}: choose one of {', '.join(REFERENCE_DESIGNS)}")
    objects_dir = Path(objects_dir)
    config = {"pair": [a, b], "grid": grid, "cell": cell_size, "sizes": list(sizes), "seed": seed,
              "background": background if background in BACKGROUNDS else str(Path(background).resolve()),
              "no_same_row_or_col": no_same_row_or_col, "local_variation": local_variation, "key_background": key_background,
              "renders": {n: _file_digest(objects_dir / f"{n}.png") for n in (a, b) if (objects_dir / f"{n}.png").is_file()}}
    if references != "random":
        config["references"] = references            # absent in the random design, as in every earlier manifest
    return config


def decodes(path):
    """The file exists and is a whole PNG: every chunk present with its checksum (a truncated file is not).

    PIL's verify() reads the chunks without inflating the pixels, so checking a finished dataset stays cheap.
    """
    try:
        with Image.open(path) as im:
            im.verify()
        return True
    except Exception:  # any failure means: make it again
        return False


def pair_complete(folder, manifest, names):
    """A pair folder is complete when its manifest (written last) lists every image and each one decodes."""
    listed = [e.get("file") for e in manifest.get("images", []) if isinstance(e, dict)]
    return sorted(listed) == sorted(names) and all(decodes(folder / n) for n in names)


def image_name(a, b, i, j, size, reference=None):
    """The image's path inside its pair folder; in the reference-balanced design, inside ref_{ri}_{rj}/."""
    name = f"{a}_{b}_{i}_{j}_{size}.png"
    return name if reference is None else f"ref_{reference[0]}_{reference[1]}/{name}"


def layout(grid, sizes, references="random", no_same_row_or_col=False):
    """[(target cell, size, reference cell or None)] in file order: None = drawn at random when rendering."""
    cells = [(i, j) for j in range(grid) for i in range(grid)]
    if references == "random":
        return [((i, j), s, None) for s in sizes for (i, j) in cells]
    return [(t, s, r) for r in cells for s in sizes for t in cells
            if t != r and (not no_same_row_or_col or (t[0] != r[0] and t[1] != r[1]))]


def _backgrounds(background, canvas):
    if background in BACKGROUNDS:
        return None
    files = sorted(p for p in Path(background).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if not files:
        raise UserError(f"--background {background}: no .png/.jpg images in the folder")
    return files


def _background_canvas(background, files, rng, canvas):
    if files is None:
        return np.full((canvas, canvas, 3), 255 if background == "white" else 0, np.uint8)
    path = files[rng.integers(len(files))]
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
    except Exception as e:  # a corrupt file in the user's folder: name it
        raise UserError(f"--background: {path} cannot be read ({e}); remove or replace it") from None
    side = min(im.size)
    left, top = (im.width - side) // 2, (im.height - side) // 2
    return np.asarray(im.crop((left, top, left + side, top + side)).resize((canvas, canvas), Image.BILINEAR)).copy()


def _vary(render, rng, cell):
    """Random scale and rotation of a resized render, cropped to its opaque pixels, never larger than the cell."""
    im = Image.fromarray(render)
    scale = rng.uniform(*VARIATION_SCALE)
    im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.LANCZOS)
    im = im.rotate(rng.uniform(-VARIATION_DEGREES, VARIATION_DEGREES), resample=Image.BICUBIC, expand=True)
    im = im.crop(im.getbbox())
    if max(im.size) > cell:
        f = cell / max(im.size)
        im = im.resize((max(1, int(im.width * f)), max(1, int(im.height * f))), Image.LANCZOS)
    return np.asarray(im)


def paste(canvas, render, cell_ij, cell):
    """Alpha-blend `render` centred in cell (i, j); returns its pixel box [x0, y0, x1, y1]."""
    h, w = render.shape[:2]
    i, j = cell_ij
    x0, y0 = i * cell + (cell - w) // 2, j * cell + (cell - h) // 2
    region = canvas[y0:y0 + h, x0:x0 + w]
    alpha = render[..., 3:].astype(np.float32) / 255.0
    region[:] = (render[..., :3] * alpha + region * (1.0 - alpha) + 0.5).astype(np.uint8)
    return [int(x0), int(y0), int(x0 + w), int(y0 + h)]


def tile_pair(a, b, objects_dir, output_dir, grid=GRID, cell_size=CELL, sizes=SIZES, seed=SEED, background="black",
              no_same_row_or_col=False, local_variation=False, key_background=None, references="random"):
    """Write one pair folder (its images + manifest.json, written last); returns "done" or "skipped"."""
    if a == b:
        raise UserError(f"pair {a}_{b}: the reference and the target must be different objects")
    objects_dir = Path(objects_dir)
    config = pair_config(a, b, objects_dir, grid, cell_size, sizes, seed, background, no_same_row_or_col,
                         local_variation, key_background, references)
    renders = {n: load_render(objects_dir / f"{n}.png", key_background) for n in (a, b)}
    folder = contained(output_dir, Path(output_dir) / f"{a}_{b}")
    plan = layout(grid, sizes, references, no_same_row_or_col)
    names = [image_name(a, b, *target, s, ref) for target, s, ref in plan]
    manifest_path = folder / "manifest.json"
    if manifest_path.is_file():
        try:
            old = read_json(manifest_path, "manifest")
            old_config = {k: old.get(k) for k in config}
        except (UserError, AttributeError):
            old, old_config = None, config                    # unreadable manifest: the pair is redone
        old_config.update({k: old.get(k) for k in ("references",) if old is not None and k in old})
        if old_config != config:
            diff = ", ".join(f"{k}: {old_config.get(k)!r} -> {config.get(k)!r}" for k in sorted(set(config) | set(old_config))
                             if old_config.get(k) != config.get(k))
            raise UserError(f"{folder}: holds a grid dataset of another configuration ({diff}); write to another "
                            f"output folder, or delete {folder} to start over")
        if old is not None and pair_complete(folder, old, names):
            return "skipped"
        manifest_path.unlink()                                # written last again, once every image checks out
    elif folder.is_dir():
        stray = sorted(str(p.relative_to(folder)) for p in [*folder.glob("*.png"), *folder.glob("ref_*/*.png")]
                       if str(p.relative_to(folder)) not in set(names))
        if stray:
            raise UserError(f"{folder}: holds images of another configuration (e.g. {stray[0]}) and no manifest; "
                            f"delete {folder} to start over")
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, zlib.crc32(f"{a}_{b}".encode())])
    files = _backgrounds(background, grid * cell_size)
    cells = [(i, j) for j in range(grid) for i in range(grid)]
    resized = {(n, s): np.asarray(Image.fromarray(renders[n]).resize((s, s), Image.LANCZOS)) for n in (a, b) for s in sizes}
    images = []
    for (i, j), s, ref in plan:
        if ref is None:
            others = [c for c in cells if c != (i, j) and (not no_same_row_or_col or (c[0] != i and c[1] != j))]
            ref_cell = others[rng.integers(len(others))]
        else:
            ref_cell = ref
        canvas = _background_canvas(background, files, rng, grid * cell_size)
        target_render, ref_render = resized[(b, s)], resized[(a, s)]
        if local_variation:
            target_render, ref_render = _vary(target_render, rng, cell_size), _vary(ref_render, rng, cell_size)
        ref_box = paste(canvas, ref_render, ref_cell, cell_size)
        target_box = paste(canvas, target_render, (i, j), cell_size)
        name = image_name(a, b, i, j, s, ref)
        write_png(folder / name, canvas)
        images.append({"file": name, "size": s,
                       "target": {"name": b, "cell": [i, j], "box": target_box},
                       "reference": {"name": a, "cell": list(ref_cell), "box": ref_box}})
    write_json(manifest_path, {**config, "images": images})
    return "done"


def parse_pairs(pairs, objects):
    """Ordered pairs from "a_b" strings, or all ordered pairs of `objects`."""
    if pairs:
        out = []
        for p in pairs:
            parts = p.split("_")
            if len(parts) != 2 or not all(parts):
                raise UserError(f"pair {p!r}: write pairs as reference_target, e.g. camel_frog (object names without '_')")
            out.append(tuple(check_name(n, f"pair {p!r}: object name") for n in parts))
        return out
    if not objects or len(objects) < 2:
        raise UserError("give --pairs a_b ... or at least two --objects")
    return list(permutations([check_name(n, "object name") for n in objects], 2))


def _tile_job(args):
    """(a, b, status, error line, traceback under --debug): any exception fails this pair only."""
    a, b, kwargs = args
    try:
        return a, b, tile_pair(a, b, **kwargs), None, None
    except Exception as e:  # one bad pair costs one pair
        trace = traceback_text(e) if DEBUG["on"] and not isinstance(e, UserError) else None
        return a, b, "failed", describe(f"pair {a}_{b}", e), trace


def make_grid_data(pairs, output_dir, objects_dir=None, workers=1, **config):
    """Tile many pairs in parallel processes (one process per worker, not per image); returns the exit code."""
    objects_dir = Path(objects_dir or default_objects_dir())
    names = sorted({check_name(n, "object name") for p in pairs for n in p})
    made = ensure_objects(names, objects_dir)
    if made:
        print(f"made offline stand-in renders for {' '.join(made)} in {objects_dir}")
    tally = Tally("grid data")
    start = time.perf_counter()
    jobs = [(a, b, dict(objects_dir=objects_dir, output_dir=output_dir, **config)) for a, b in pairs]
    with tqdm(total=len(jobs), desc="pairs", unit="pair") as bar:
        for _a, _b, status, error, trace in pool_map(_tile_job, jobs, workers):
            if trace:
                report(trace.rstrip())
            if error:
                tally.fail(error)
            elif status == "skipped":
                tally.skipped += 1
            else:
                tally.done += 1
            bar.update()
    per_pair = len(layout(config.get("grid", GRID), config.get("sizes", SIZES), config.get("references", "random"),
                          config.get("no_same_row_or_col", False)))
    seconds = time.perf_counter() - start
    tally.summary(f"{tally.done * per_pair} images ({tally.done * per_pair / max(seconds, 1e-9):.0f}/s) in {output_dir}")
    return tally.exit_code
