"""Model plumbing that the front end (dataengine) and the spatial-ID tools share: devices, dtypes, hub checks.

A hub id that is neither in the local Hugging Face cache nor reachable fails
at once with one line that names the model and the offline form, instead of
transformers retrying the hub for minutes.
"""

import os
import urllib.error
import urllib.request
from pathlib import Path

from .errors import UserError

DTYPES = ("auto", "float32", "bfloat16", "float16")
DEVICES = ("auto", "cpu", "cuda")
HUB_PROBE_SECONDS = 8.0           # how long the hub may take to answer before it counts as unreachable


def resolve_device(device):
    """'auto' = cuda where torch sees a GPU, else cpu; 'cuda' without one is refused."""
    import torch
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but torch sees no GPU here; use --device cpu (or auto), "
                        "or install a CUDA build of torch on a GPU machine")
    return device


def add_device_args(p, dtype_help="auto = float32 on the CPU, float16 on a GPU"):
    """--device and --dtype of the CLIs that load models."""
    p.add_argument("--device", choices=DEVICES, default="auto", help="auto = cuda if torch sees a GPU, else cpu (default %(default)s)")
    p.add_argument("--dtype", choices=DTYPES, default="auto", help=f"{dtype_help} (default %(default)s)")


def hub_unreachable(endpoint=None, timeout=HUB_PROBE_SECONDS):
    """None if the hub answers HTTP at all (an error status included), else why it cannot be reached."""
    endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
    try:
        with urllib.request.urlopen(f"{endpoint}/api/models?limit=1", timeout=timeout):
            return None
    except urllib.error.HTTPError:
        return None                                     # it answered: gated or rate limited models are its to explain
    except (urllib.error.URLError, OSError, ValueError) as e:
        return f"{endpoint}: {getattr(e, 'reason', e)}"


def check_available(source, name, offline_form):
    """Fail at once, in one line, when the hub id `source` cannot be loaded: not cached and the hub out of reach.

    A local folder always passes (its own loading reports what is wrong with it). `offline_form` tells the user how
    to give a local snapshot instead (the flag or variable of the calling command).
    """
    if Path(source).expanduser().is_dir():
        return
    from huggingface_hub import try_to_load_from_cache
    cached = try_to_load_from_cache(source, "config.json")
    if isinstance(cached, str):
        return
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    why = "HF_HUB_OFFLINE is set" if offline else hub_unreachable()
    if why:
        raise UserError(f"{name} ({source}) is not in the local model cache and the hub cannot be reached ({why}); "
                        f"offline, load a downloaded snapshot: {offline_form}, and set HF_HUB_OFFLINE=1")
