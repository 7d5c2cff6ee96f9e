"""The registries of the real-image front end: depth, segmentation and detection models, by alias or local folder.

Each registry maps an alias to its hub id and family; a family names the
transformers class that loads it. A local folder (`--model DIR`) is read by
its config's `model_type`, which must be a family of that registry. Family
names are transformers' model types written with underscores (its
"grounding-dino" is our grounding_dino): one spelling everywhere. Models
are loaded with transformers' own classes and processors, as users load them.
"""

from dataclasses import dataclass
from pathlib import Path

from batchkit.errors import UserError
from batchkit.files import read_json
from batchkit.models import check_available, resolve_device

DEPTH_FAMILIES = {"depth_anything": "DepthAnythingForDepthEstimation", "depth_pro": "DepthProForDepthEstimation",
                  "zoedepth": "ZoeDepthForDepthEstimation"}
DEPTH_MODELS = {
    "depth-anything-v2-metric-indoor-small": ("depth-anything/Depth-Anything-V2-Metric-Indoor-Small-hf", "depth_anything"),
    "depth-anything-v2-metric-indoor-base": ("depth-anything/Depth-Anything-V2-Metric-Indoor-Base-hf", "depth_anything"),
    "depth-anything-v2-metric-indoor-large": ("depth-anything/Depth-Anything-V2-Metric-Indoor-Large-hf", "depth_anything"),
    "depth-anything-v2-metric-outdoor-small": ("depth-anything/Depth-Anything-V2-Metric-Outdoor-Small-hf", "depth_anything"),
    "depth-anything-v2-metric-outdoor-base": ("depth-anything/Depth-Anything-V2-Metric-Outdoor-Base-hf", "depth_anything"),
    "depth-anything-v2-metric-outdoor-large": ("depth-anything/Depth-Anything-V2-Metric-Outdoor-Large-hf", "depth_anything"),
    "depth-pro": ("apple/DepthPro-hf", "depth_pro"),
    "zoedepth-nyu-kitti": ("Intel/zoedepth-nyu-kitti", "zoedepth"),
}


@dataclass(frozen=True)
class Choice:
    name: str        # the alias, or the folder's name
    source: str      # hub id or resolved local folder
    family: str


def resolve(model, registry, families, what):
    """An alias of `registry`, or a local folder whose config's model_type is one of `families`."""
    if model in registry:
        hub_id, family = registry[model]
        return Choice(model, hub_id, family)
    path = Path(model).expanduser()
    if not path.is_dir():
        raise UserError(f"--model {model!r}: neither a known {what} alias ({', '.join(registry)}) nor a model folder")
    config = read_json(path / "config.json", "model config") if (path / "config.json").is_file() else None
    if not isinstance(config, dict):
        raise UserError(f"{path}: no model folder (config.json missing); save one with save_pretrained or use an alias")
    family = str(config.get("model_type")).replace("-", "_")
    if family not in families:
        raise UserError(f"{path}: a {family!r} model, which the {what} registry does not hold "
                        f"(families: {', '.join(sorted(families))}); pick a model of one of those")
    return Choice(path.name, str(path.resolve()), family)


def torch_dtype(dtype, device):
    """The dtype to load with: auto = float32 on the CPU, float16 on a GPU."""
    import torch
    name = ("float16" if device == "cuda" else "float32") if dtype == "auto" else dtype
    return name, getattr(torch, name)


def load(choice, families, device="auto", dtype="auto"):
    """(model, processor, device, dtype name) of a Choice, through transformers' own classes."""
    import transformers
    check_available(choice.source, choice.name, "--model DIR (a folder saved with save_pretrained)")
    device = resolve_device(device)
    dtype_name, torch_type = torch_dtype(dtype, device)
    model_class = getattr(transformers, families[choice.family])
    try:
        processor = transformers.AutoProcessor.from_pretrained(choice.source)
        model = model_class.from_pretrained(choice.source, dtype=torch_type, device_map=device)
    except OSError as e:
        raise UserError(f"cannot load {choice.name} from {choice.source} ({str(e).splitlines()[0]}); give a local "
                        "folder with --model DIR, or log in to the hub") from None
    return model.eval(), processor, device, dtype_name
