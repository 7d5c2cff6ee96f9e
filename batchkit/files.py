"""Atomic writes, strict JSON, and paths that stay where they belong.

Every output goes through `atomic_path`: a temporary file beside the target,
renamed over it only when the write succeeded. The temporary file is created
with mode 0666 minus the process umask (as a plain open() would), and is
registered so that a worker killed by SIGTERM removes it before exiting.
"""

import hashlib
import json
import math
import os
import re
import secrets
from contextlib import contextmanager
from pathlib import Path, PurePath

import numpy as np

from .errors import RecordError, UserError

PENDING = set()            # temporary files of writes in progress in this process
SAFE_NAME_RE = re.compile(r"^[A-Za-z0-9-]+$")


@contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; rename it over `path` only if the block succeeds."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a folder; give a file name to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    PENDING.add(str(tmp))                  # registered before it exists: a SIGTERM in between still removes it
    try:
        os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))     # the umask applies, as for open()
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        PENDING.discard(str(tmp))


def remove_pending():
    """Delete the temporary files of writes in progress (called on SIGTERM in a worker)."""
    for name in list(PENDING):
        try:
            os.unlink(name)
        except OSError:
            pass


def file_digest(path):
    """A digest of a file's bytes: what a reused output was made from must be this file, byte for byte."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_bytes(path, data):
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def dumps(obj, indent=None):
    """Strict JSON text: NaN, infinity and text that is not valid Unicode are refused (ValueError)."""
    try:
        text = json.dumps(obj, indent=indent, ensure_ascii=False, allow_nan=False)
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("holds text that is not valid Unicode (a lone surrogate)") from None
    except ValueError as e:
        raise ValueError(f"holds NaN or infinity ({e})") from None
    return text


def json_problem(obj):
    """None if `obj` can be written as strict JSON, else why not."""
    try:
        dumps(obj)
    except (TypeError, ValueError) as e:
        return str(e)
    return None


def write_json(path, obj, indent=1):
    text = dumps(obj, indent) + "\n"
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_jsonl(path, rows):
    """Strict JSON, one object a line, written atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text("".join(dumps(r) + "\n" for r in rows), encoding="utf-8")


def record_settings(path, settings):
    """Record the settings a stage's outputs are made with, before any output; returns the time since they hold.

    The file is left alone when it already holds these settings. The time is its modification time, from the
    same clock as the outputs' times: an output older than it was made with other settings and is redone.
    """
    path = Path(path)
    try:
        same = json.loads(path.read_text(encoding="utf-8")) == json.loads(dumps(settings))
    except (OSError, ValueError):
        same = False
    if not same:
        write_json(path, settings)
    return path.stat().st_mtime


def write_npy(path, array):
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array)


def read_json(path, what="JSON file"):
    """A JSON file that must exist, be UTF-8 and parse; else one UserError line naming it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: {what} not found; check the path")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: {what} is not UTF-8 text (byte {e.start}); save it as UTF-8 JSON") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: malformed JSON at line {e.lineno} column {e.colno} ({e.msg}); fix or regenerate the file") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read {what} ({e.strerror})") from None


def inside(folder, name, what, error=RecordError):
    """`folder / name` for a file name taken from an input file; absolute paths and `..` are refused."""
    if not isinstance(name, str) or not name.strip() or "\0" in name:
        raise error(f"{what} {name!r} is not a file name")
    pure = PurePath(name)
    if pure.is_absolute() or ".." in pure.parts or name.startswith("~"):
        raise error(f"{what} {name!r} must be a file name inside {folder} (no absolute path, no '..')")
    return Path(folder) / pure


def contained(folder, path):
    """`path`, after checking that it lies inside `folder` (both resolved)."""
    root, target = Path(folder).resolve(), Path(path).resolve()
    if target != root and root not in target.parents:
        raise UserError(f"{path}: would be written outside {folder}; refusing")
    return Path(path)


def check_name(name, what="name"):
    """Letters, digits and '-' only: safe as a file-name part, and free of the '_' our file names use."""
    if not isinstance(name, str) or not SAFE_NAME_RE.match(name):
        raise UserError(f"{what} {name!r}: use letters, digits and '-' only (no '/', '..', '_' or spaces)")
    return name


def check_input_dir(path, flag):
    """An input folder that must exist: a fatal input (one line, exit 2) before any record is touched."""
    if path is not None and not Path(path).is_dir():
        raise UserError(f"{flag} {path}: folder not found" + ("; it is a file" if Path(path).exists() else ""))
    return path


def check_output_file(path, flag="--output-file"):
    """An output file argument that is a folder is refused before any work is done."""
    if Path(path).is_dir():
        raise UserError(f"{flag} {path} is a folder; give the path of a file to write")
    return Path(path)


def finite(values):
    """True if every number in a (nested) sequence is finite."""
    try:
        return all(math.isfinite(float(v)) for v in np.ravel(np.asarray(values, dtype=np.float64)))
    except (TypeError, ValueError):
        return False
