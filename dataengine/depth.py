"""Metric monocular depth for a folder of photos: DATASET/images/* -> DATASET/depth_maps/{stem}.png.

Depth maps are 16-bit PNGs, metres x scale factor, 0 = invalid (not finite,
not positive, beyond --max-depth, or beyond what 16 bits hold at this scale:
65535 / scale metres); those pixels are counted in the summary. Every image is
estimated at the model's input size and brought back to its own resolution by
the processor's own post-processing (target sizes). Images are batched by
size, so a batch needs no padding and equals one-by-one runs.

Resume: every depth map records in its PNG what it was made from (the image
file's digest, the model, snapshot, scale factor, max depth and dtype, and the
focal length the model estimated); a rerun skips an image only when that record
equals today's, and puts an estimated focal length back into intrinsics.json
from it when the entry is missing or differs. DATASET/depth_maps/depth_settings.json
records the run's settings for the stages after (where the depth came from).
Depth Pro estimates the focal length: fx = fy = f, principal point at the
image centre, written to DATASET/intrinsics.json, which d2p and stage 1.3
prefer to K.txt and --fov. A model without it leaves that file as it is (it
may hold a real camera's intrinsics) and says so when it exists.
"""

import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from batchkit.batch import Tally, report
from batchkit.errors import UserError
from batchkit.files import file_digest, read_json, record_settings, write_json
from batchkit.shards import in_shard, shard_path
from spacesgg.d2p import DEFAULT_MAX_DEPTH, DEFAULT_SCALE_FACTOR, IMAGE_EXTENSIONS, list_by_stem
from spacesgg.io import image_header, png_provenance, read_photo, warn_photo, write_png

from .models import DEPTH_FAMILIES, DEPTH_MODELS, check_available, load, resolve

BATCH_SIZES = {"cpu": 1, "cuda": 8}          # --batch-size auto: on a CPU a larger batch is slower per image
FOCAL_FAMILIES = ("depth_pro",)              # models that estimate the focal length
INTRINSICS_FLUSH_SECONDS = 30.0              # intrinsics.json is rewritten at most this often during a run


def resolve_depth_model(model):
    """A Choice of the depth registry; relative-depth checkpoints are refused (stage 1 needs metres)."""
    choice = resolve(model, DEPTH_MODELS, DEPTH_FAMILIES, "metric depth")
    if Path(choice.source).is_dir():
        check_metric(choice, read_json(Path(choice.source) / "config.json", "model config"))
    return choice


def check_metric(choice, config):
    kind = config.get("depth_estimation_type", "metric") if isinstance(config, dict) else \
        getattr(config, "depth_estimation_type", "metric")
    if choice.family == "depth_anything" and kind != "metric":
        raise UserError(f"{choice.source}: a relative-depth checkpoint (depth_estimation_type {kind!r}); stage 1 needs "
                        "metres: use a Depth Anything V2 *Metric* checkpoint, Depth Pro or ZoeDepth")


class DepthEstimator:
    """A loaded metric depth model and its processor."""

    def __init__(self, choice, device="auto", dtype="auto"):
        import transformers
        check_available(choice.source, choice.name, "--model DIR (a folder saved with save_pretrained)")
        try:
            check_metric(choice, transformers.AutoConfig.from_pretrained(choice.source))
        except OSError as e:
            raise UserError(f"cannot load {choice.name} from {choice.source} ({str(e).splitlines()[0]})") from None
        self.choice = choice
        self.model, self.processor, self.device, self.dtype_name = load(choice, DEPTH_FAMILIES, device, dtype)
        self.focal = choice.family in FOCAL_FAMILIES

    def predict(self, images):
        """(depths, focals) for uint8 RGB images of one size: float32 H x W metres each, and f in pixels or None."""
        import torch
        height, width = images[0].shape[:2]
        inputs = self.processor(images=list(images), return_tensors="pt", input_data_format="channels_last")
        inputs = {k: v.to(self.device, self.model.dtype) if v.is_floating_point() else v.to(self.device)
                  for k, v in inputs.items()}
        with torch.inference_mode():
            outputs = self.model(**inputs)
        sizes = [(height, width)] * len(images)
        extra = {"source_sizes": sizes} if self.choice.family == "zoedepth" else {}
        results = self.processor.post_process_depth_estimation(outputs, target_sizes=sizes, **extra)
        depths = [r["predicted_depth"].float().cpu().numpy() for r in results]
        focals = [float(r["focal_length"]) if self.focal and r.get("focal_length") is not None else None for r in results]
        return depths, focals


def to_png_values(depth, scale_factor, max_depth):
    """uint16 depth (metres x scale, rounded) and the number of pixels made invalid (0)."""
    limit = min(max_depth, 65535 / scale_factor)
    valid = np.isfinite(depth) & (depth > 0) & (depth <= limit)
    values = np.zeros(depth.shape, np.uint16)
    values[valid] = np.rint(depth[valid] * scale_factor).astype(np.uint16)
    return values, int(depth.size - valid.sum())


MIN_SIDE = 2                  # pixels: a thinner image has no depth to speak of and breaks the processors' resizing


def _intrinsics_entry(focal, width, height):
    return [focal, focal, (width - 1) / 2.0, (height - 1) / 2.0]


def estimate_dataset(dataset_path, model, scale_factor=DEFAULT_SCALE_FACTOR, max_depth=DEFAULT_MAX_DEPTH,
                     batch_size=None, device="auto", dtype="auto", overwrite=False, shard=None):
    """Depth maps for every image of a dataset; returns the exit code (1 if any image failed)."""
    dataset = Path(dataset_path)
    images_dir, out = dataset / "images", dataset / "depth_maps"
    if not images_dir.is_dir():
        raise UserError(f"{images_dir}: folder not found; a dataset holds images/ (see README, real images)")
    for flag, value in (("--scale-factor", scale_factor), ("--max-depth", max_depth), ("--batch-size", batch_size or 1)):
        if not (np.isfinite(value) and value > 0):
            raise UserError(f"{flag} must be a finite positive number, got {value}")
    images = {stem: path for stem, path in list_by_stem(images_dir, IMAGE_EXTENSIONS).items() if in_shard(stem, shard)}
    if not images:
        raise UserError(f"{images_dir}: no .png or .jpg images" + (" in this shard" if shard else ""))
    choice = resolve_depth_model(model)
    estimator = DepthEstimator(choice, device, dtype)
    batch_size = batch_size or BATCH_SIZES.get(estimator.device, 1)
    settings = {"model": choice.name, "snapshot": choice.source, "scale_factor": scale_factor, "max_depth": max_depth,
                "dtype": estimator.dtype_name}
    out.mkdir(parents=True, exist_ok=True)
    record_settings(shard_path(out / "depth_settings.json", shard), settings)
    intrinsics_file = shard_path(dataset / "intrinsics.json", shard)   # d2p reads intrinsics.json and its shards
    intrinsics = read_json(intrinsics_file, "intrinsics file") if intrinsics_file.is_file() else {}
    if not isinstance(intrinsics, dict):
        raise UserError(f"{intrinsics_file}: expected {{stem: [fx, fy, cx, cy]}}")

    tally = Tally("estimate_depth")
    todo, groups, changed = {}, defaultdict(list), False
    for stem, path in images.items():
        try:
            (width, height), problems = image_header(path)
            made_from = dict(settings, image=file_digest(path))
        except Exception as e:  # one unreadable image costs one image
            tally.fail_record(path, e)
            continue
        stored = png_provenance(out / f"{stem}.png")
        if not overwrite and isinstance(stored, dict) and stored.get("made_from") == made_from:
            if estimator.focal:                     # the entry is what the model estimated, put back from its record
                focal = stored.get("focal")
                entry = _intrinsics_entry(focal, width, height) if isinstance(focal, (int, float)) else None
                if intrinsics.get(stem) != entry:
                    if entry is None:
                        intrinsics.pop(stem, None)
                    else:
                        intrinsics[stem] = entry
                    changed = True
            tally.skipped += 1
            continue
        if min(width, height) < MIN_SIDE:
            tally.fail(f"{path}: {width}x{height} pixels is too small for depth estimation (at least {MIN_SIDE} on each side)")
            continue
        tally.counts["redone"] += stored is not None and not overwrite
        todo[stem] = made_from
        groups[(width, height)].append(stem)
    print(f"estimate_depth: {len(images)} images, {choice.name} ({choice.source}) on {estimator.device} "
          f"{estimator.dtype_name}, batch {batch_size}, {tally.skipped} already done"
          + (f", {tally.counts['redone']} made from another image file or settings: redone" if tally.counts["redone"] else ""),
          flush=True)
    invalid, last_flush = 0, time.monotonic()
    try:
        with tqdm(total=len(todo), desc="depth", unit="img") as bar:
            for stems in groups.values():
                for start in range(0, len(stems), batch_size):
                    batch = []
                    for stem in stems[start:start + batch_size]:
                        try:
                            rgb, problems = read_photo(images[stem])
                            warn_photo(tally, images[stem], problems)
                            batch.append((stem, rgb))
                        except Exception as e:  # an unreadable image costs that image
                            tally.fail_record(images[stem], e)
                            bar.update()
                    if not batch:
                        continue
                    try:
                        depths, focals = estimator.predict([rgb for _, rgb in batch])
                    except Exception as e:  # a failed batch costs its images
                        for stem, rgb in batch:
                            tally.fail(f"{images[stem]}: the depth model failed on this {rgb.shape[1]}x{rgb.shape[0]} "
                                       f"image ({type(e).__name__}: {' '.join(str(e).split())[:200]})", e)
                        bar.update(len(batch))
                        continue
                    for (stem, rgb), depth, focal in zip(batch, depths, focals):
                        values, bad = to_png_values(depth, scale_factor, max_depth)
                        h, w = rgb.shape[:2]
                        focal = focal if focal is not None and np.isfinite(focal) and focal > 0 else None
                        write_png(out / f"{stem}.png", values, provenance={"made_from": todo[stem], "focal": focal})
                        invalid += bad
                        if focal is not None:
                            intrinsics[stem] = _intrinsics_entry(focal, w, h)
                            changed = True
                        elif estimator.focal and intrinsics.pop(stem, None) is not None:
                            changed = True                       # no usable estimate: no stale entry either
                        tally.done += 1
                        bar.update()
                    if changed and time.monotonic() - last_flush > INTRINSICS_FLUSH_SECONDS:
                        _write_intrinsics(intrinsics_file, intrinsics)
                        changed, last_flush = False, time.monotonic()
    finally:
        if changed:
            _write_intrinsics(intrinsics_file, intrinsics)
    if estimator.focal:
        report(f"estimate_depth: focal lengths of {sum(s in intrinsics for s in images)} images in {intrinsics_file}")
    elif intrinsics:
        report(f"note: {intrinsics_file} holds intrinsics of {len(intrinsics)} images, which d2p prefers to K.txt and "
               f"--fov; delete it if another depth model wrote it")
    tally.summary(f"{invalid} pixels set to 0 (invalid, beyond --max-depth {max_depth:g} m or 16 bits at scale "
                  f"{scale_factor:g}), depth maps in {out}")
    return tally.exit_code


def _write_intrinsics(path, intrinsics):
    write_json(path, dict(sorted(intrinsics.items())))
