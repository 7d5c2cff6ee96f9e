"""Stage 1.1: depth maps to point clouds (binary PLY) and camera-frame point maps (.npy).

Resume: OUTPUT/.d2p_settings.json records the settings (scale, intrinsics,
max depth, frame, poses) and the time they took effect, and is written before
any output. An image is skipped only when its outputs are newer than its
inputs and than that time; a run with other settings records them anew, so
everything made with the old ones (even by a run killed mid-way) is redone.
"""

import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from batchkit.batch import DEBUG, Tally, describe, report, traceback_text
from batchkit.errors import RecordError, UserError
from batchkit.files import record_settings, write_npy
from batchkit.shards import in_shard, shard_path
from batchkit.workers import pool_map

from .camera import DEFAULT_FOV_DEG, INTRINSICS_SOURCES, DatasetCameras, Intrinsics, backproject, load_poses, transform_points
from .io import read_depth, read_photo, warn_photo
from .ply import write_ply

DEFAULT_SCALE_FACTOR = 5000.0
DEFAULT_MAX_DEPTH = 100.0
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class Job:
    stem: str
    image: Path
    depth: Path
    ply: Path | None         # None: not asked for (--outputs)
    npy: Path | None
    intr: Intrinsics | None  # from intrinsics.json or K.txt; None: from --fov and the image size
    fov: float
    scale_factor: float
    max_depth: float
    pose: np.ndarray | None  # camera-to-world 4x4, applied to the PLY only


def list_by_stem(folder, extensions):
    """{stem: path} of the files in `folder` with one of `extensions`; a stem twice is an error."""
    found = {}
    for path in sorted(Path(folder).iterdir()):
        if path.suffix.lower() in extensions and not path.name.startswith("."):
            if path.stem in found:
                raise UserError(f"{folder}: two files share the stem {path.stem!r} ({found[path.stem].name}, {path.name}); keep one")
            found[path.stem] = path
    return found


def convert_one(job):
    """Convert one image; returns (the number of valid points, the photo's problems for LLaVA's loader)."""
    depth = read_depth(job.depth, job.scale_factor)
    rgb, problems = read_photo(job.image)
    if rgb.shape[:2] != depth.shape:
        raise RecordError(
            f"{job.stem}: image {job.image.name} is {rgb.shape[1]}x{rgb.shape[0]} but depth {job.depth.name} is "
            f"{depth.shape[1]}x{depth.shape[0]}; depth must be aligned with the image pixels")
    intr = job.intr or Intrinsics.from_fov(depth.shape[1], depth.shape[0], job.fov)
    points = backproject(depth, intr, job.max_depth)
    valid = np.flatnonzero(~np.isnan(points[..., 2]))      # take() on flat indices beats boolean indexing here
    xyz = points.reshape(-1, 3).take(valid, axis=0)
    if job.pose is not None:
        xyz = transform_points(xyz, job.pose)
    if job.ply:
        write_ply(job.ply, xyz, rgb.reshape(-1, 3).take(valid, axis=0))
    if job.npy:
        write_npy(job.npy, points)
    return len(valid), problems


def _is_fresh(job, since):
    """Outputs exist and are newer than both inputs and than the recorded settings: a rerun skips this image."""
    try:
        out = min(path.stat().st_mtime for path in (job.ply, job.npy) if path)
    except FileNotFoundError:
        return False
    return out >= max(job.image.stat().st_mtime, job.depth.stat().st_mtime, since)


def _digest(path):
    return hashlib.sha1(path.read_bytes()).hexdigest() if path.is_file() else None


def _run(job):
    """(stem, points, photo problems, error line or None, traceback or None): any exception is this image's error."""
    try:
        return job.stem, *convert_one(job), None, None
    except Exception as e:  # one bad image costs one image
        trace = traceback_text(e) if DEBUG["on"] and not isinstance(e, RecordError) else None
        return job.stem, 0, [], describe(job.stem, e), trace


def check_settings(scale_factor, fov, max_depth):
    """The numbers that make no sense are refused before any work (the CLI checks them too)."""
    for flag, value, ok in (("--scale-factor", scale_factor, scale_factor > 0), ("--max-depth", max_depth, max_depth > 0),
                            ("--fov", fov, 0 < fov < 180)):
        if not (np.isfinite(value) and ok):
            raise UserError(f"{flag} {value} makes no sense; give a finite positive number"
                            + (" below 180 degrees" if flag == "--fov" else ""))


OUTPUTS = ("ply", "npy")


def parse_outputs(text):
    """--outputs "ply,npy" -> ("ply", "npy"): what d2p writes."""
    wanted = tuple(dict.fromkeys(part.strip() for part in str(text).split(",") if part.strip()))
    if not wanted or set(wanted) - set(OUTPUTS):
        raise UserError(f"--outputs {text!r}: give ply, npy or ply,npy")
    return wanted


def plan_jobs(tally, dataset_path, scale_factor=DEFAULT_SCALE_FACTOR, output_dir=None, fov=DEFAULT_FOV_DEG,
              max_depth=DEFAULT_MAX_DEPTH, world_coordinates=False, outputs=OUTPUTS, shard=None):
    """Pair images with depth maps by stem; report the unpaired ones on `tally`."""
    dataset = Path(dataset_path)
    images_dir, depth_dir = dataset / "images", dataset / "depth_maps"
    for folder in (dataset, images_dir, depth_dir):
        if not folder.is_dir():
            raise UserError(f"{folder}: folder not found; a dataset holds images/ and depth_maps/ (see README, stage 1.1)")
    check_settings(scale_factor, fov, max_depth)
    images = list_by_stem(images_dir, IMAGE_EXTENSIONS)
    depths = list_by_stem(depth_dir, (".png",))
    if not images:
        raise UserError(f"{images_dir}: no .png or .jpg images")
    cameras = DatasetCameras(dataset, fov)
    poses = None
    if world_coordinates:
        poses = dict(zip(sorted(images), load_poses(dataset / "poses.txt", len(images))))
    out = Path(output_dir) if output_dir else dataset / "point_clouds"
    if out.exists() and not out.is_dir():
        raise UserError(f"--output-dir {out} is a file; give a folder for the point clouds")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--output-dir {out}: cannot make the folder ({e.strerror})") from None
    jobs = []
    for stem in sorted(set(images) | set(depths)):
        if not in_shard(stem, shard):
            continue
        if stem not in depths:
            tally.fail(f"{images[stem]}: no depth map {stem}.png in {depth_dir}")
            continue
        if stem not in images:
            tally.fail(f"{depths[stem]}: no image {stem}.png/.jpg in {images_dir}")
            continue
        try:
            intr = cameras.fixed(stem)
        except RecordError as e:
            tally.fail(str(e))
            continue
        jobs.append(Job(stem, images[stem], depths[stem], out / f"{stem}.ply" if "ply" in outputs else None,
                        out / f"{stem}.npy" if "npy" in outputs else None, intr, fov,
                        scale_factor, max_depth, None if poses is None else poses[stem]))
    return jobs, out, cameras


def convert_dataset(dataset_path, scale_factor=DEFAULT_SCALE_FACTOR, output_dir=None, fov=DEFAULT_FOV_DEG,
                    max_depth=DEFAULT_MAX_DEPTH, world_coordinates=False, workers=1, overwrite=False, outputs=OUTPUTS,
                    shard=None):
    """Convert every image of a dataset; returns the exit code (1 if any image failed)."""
    tally = Tally("d2p")
    jobs, out, cameras = plan_jobs(tally, dataset_path, scale_factor, output_dir, fov, max_depth, world_coordinates,
                                   parse_outputs(",".join(outputs)), shard)
    settings = {"scale_factor": scale_factor, "max_depth": max_depth, "world_coordinates": world_coordinates,
                **cameras.settings(), "poses": _digest(Path(dataset_path) / "poses.txt") if world_coordinates else None}
    settings_file = shard_path(out / ".d2p_settings.json", shard)        # each shard records its own
    since = record_settings(settings_file, settings)
    todo = [j for j in jobs if overwrite or not _is_fresh(j, since)]
    tally.skipped = len(jobs) - len(todo)
    sources = Counter(cameras.source(j.stem) for j in jobs)
    print(f"d2p: {len(jobs)} image/depth pairs, intrinsics from "
          + ", ".join(f"{sources[s]} {s}{f' {fov:g} deg' if s == '--fov' else ''}" for s in INTRINSICS_SOURCES if sources[s])
          + f", {'world' if world_coordinates else 'camera'}-frame PLY, {tally.skipped} already done", flush=True)
    points = 0
    chunksize = max(1, len(todo) // (max(workers, 1) * 8))
    with tqdm(total=len(todo), desc="d2p", unit="img") as bar:
        for job, (_stem, n, problems, error, trace) in zip(todo, pool_map(_run, todo, workers, chunksize)):
            warn_photo(tally, job.image, problems)
            if error:
                if trace:
                    report(trace.rstrip())
                tally.fail(error)
            else:
                tally.done += 1
                points += n
            bar.update()
    tally.summary(f"{points} points, intrinsics per image: "
                  + ", ".join(f"{sources[s]} from {s}" for s in INTRINSICS_SOURCES if sources[s]) + f", outputs in {out}")
    return tally.exit_code

