"""The one registry of VLMs for spatial-ID extraction: aliases, hub ids, families, classes and dtypes.

A family says which transformers class loads the model, which dtype it wants
and whether fp16 is safe. Layer counts are never listed here: they come from
the loaded config. Chat handling is the same for every family: one user turn
[image, text] rendered by the model's own processor chat template (which
writes the family's image placeholder and, for Gemma 3, its BOS; the
extractor then adds no second BOS).
"""

from dataclasses import dataclass
from pathlib import Path

from batchkit.cli import positive_int
from batchkit.errors import UserError
from batchkit.files import read_json
from batchkit.models import DEVICES, DTYPES


@dataclass(frozen=True)
class Family:
    model_class: str          # transformers class name
    fp16_ok: bool = True      # fp16 overflows in some families' activations (then bfloat16 on a GPU)


FAMILIES = {
    "llava": Family("LlavaForConditionalGeneration"),
    "qwen2_vl": Family("Qwen2VLForConditionalGeneration", fp16_ok=False),
    "qwen2_5_vl": Family("Qwen2_5_VLForConditionalGeneration", fp16_ok=False),
    "gemma3": Family("Gemma3ForConditionalGeneration", fp16_ok=False),
    "internvl": Family("InternVLForConditionalGeneration"),
    "mllama": Family("MllamaForConditionalGeneration"),
}

# alias -> (hub id, family)
MODELS = {
    "llava-7b": ("llava-hf/llava-1.5-7b-hf", "llava"),
    "llava-13b": ("llava-hf/llava-1.5-13b-hf", "llava"),
    "llama-11b": ("meta-llama/Llama-3.2-11B-Vision-Instruct", "mllama"),
    "qwen-7b": ("Qwen/Qwen2.5-VL-7B-Instruct", "qwen2_5_vl"),
    "qwen-3b": ("Qwen/Qwen2.5-VL-3B-Instruct", "qwen2_5_vl"),
    "qwen2-2b": ("Qwen/Qwen2-VL-2B-Instruct", "qwen2_vl"),
    "internvl-1b": ("OpenGVLab/InternVL3-1B-hf", "internvl"),
    "internvl-2b": ("OpenGVLab/InternVL3-2B-hf", "internvl"),
    "internvl-8b": ("OpenGVLab/InternVL3-8B-hf", "internvl"),
    "internvl-14b": ("OpenGVLab/InternVL3-14B-hf", "internvl"),
    "llava-cot": ("Xkev/Llama-3.2V-11B-cot", "mllama"),
    "gemma-4b": ("google/gemma-3-4b-it", "gemma3"),
    "gemma-12b": ("google/gemma-3-12b-it", "gemma3"),
}

MODEL_TYPE_TO_FAMILY = {"llava": "llava", "qwen2_vl": "qwen2_vl", "qwen2_5_vl": "qwen2_5_vl", "gemma3": "gemma3",
                        "internvl": "internvl", "mllama": "mllama"}


@dataclass(frozen=True)
class ModelChoice:
    name: str        # the alias (names output files)
    source: str      # hub id or local directory
    family: str


def resolve_model(model, model_path=None):
    """`model` is an alias, or `alias=DIR` (that directory under the alias's family and name)."""
    if model and "=" in model:
        model, model_path = model.split("=", 1)
    if model not in MODELS:
        raise UserError(f"unknown model alias {model!r}; known aliases: {', '.join(MODELS)} "
                        "(a local snapshot goes with --model-path DIR or ALIAS=DIR)")
    hub_id, family = MODELS[model]
    if model_path:
        path = Path(model_path).expanduser()
        if not (path / "config.json").is_file():
            raise UserError(f"{path}: no model directory (config.json missing); download the snapshot "
                            f"(e.g. huggingface-cli download {hub_id} --local-dir {path}) or fix the path")
        config = read_json(path / "config.json", "model config")
        model_type = config.get("model_type") if isinstance(config, dict) else None
        if MODEL_TYPE_TO_FAMILY.get(model_type) != family:
            raise UserError(f"{path}: a {model_type!r} model, but {model} is a {family} model; give it under an alias "
                            f"of its family ({', '.join(a for a, (_, f) in MODELS.items() if f == MODEL_TYPE_TO_FAMILY.get(model_type)) or 'none known'})")
        return ModelChoice(model, str(path.resolve()), family)
    return ModelChoice(model, hub_id, family)


def resolve_dtype(family, dtype, device):
    """The torch dtype name to load with: 'auto' = float16 on a GPU where the family is safe in it (its 10-bit
    mantissa is closer to float32 than bfloat16's 7 bits), bfloat16 where float16 overflows, float32 on the CPU."""
    if dtype == "auto":
        if device != "cuda":
            return "float32"
        return "float16" if FAMILIES[family].fp16_ok else "bfloat16"
    if dtype == "float16" and not FAMILIES[family].fp16_ok:
        raise UserError(f"--dtype float16 overflows in {family} models (Qwen2-VL, Qwen2.5-VL and Gemma 3); "
                        "use bfloat16 (GPU) or float32")
    return dtype


MAX_LAYER_INDEX = 1000          # no VLM has this many hidden states; a larger index is a typo, refused before loading


def parse_layers(text):
    """'all' or a comma list of indices and ranges ('0,4,8-12', negatives count from the end) -> None or [ints]."""
    if text is None or text == "all":
        return None
    out = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part[1:]:
                lo, hi = int(part[0] + part[1:].split("-", 1)[0]), int(part[1:].split("-", 1)[1])
                if hi < lo:
                    raise UserError(f"--layers {text!r}: range {part} runs backwards; write it low-high, e.g. {hi}-{lo}")
                values = [lo, hi]
            else:
                values = [int(part)]
            if max(abs(v) for v in values) > MAX_LAYER_INDEX:
                raise UserError(f"--layers {text!r}: index {max(values, key=abs)} is beyond any model's depth; "
                                "give hidden-state indices like 0,8,16-20 (or all)")
            out.extend(range(values[0], values[-1] + 1))
    except ValueError:
        raise UserError(f"--layers {text!r}: write 'all' or indices and ranges like 0,4,8-12") from None
    return out


def add_model_args(p, with_batch=True):
    """--model/--model-path/--device/--dtype/--layers (and --batch-size) for the extraction CLIs."""
    p.add_argument("--model", required=True, help=f"model alias ({', '.join(MODELS)}), or ALIAS=DIR for a local snapshot")
    p.add_argument("--model-path", default=None, help="local snapshot directory that replaces the alias's hub id")
    p.add_argument("--device", choices=DEVICES, default="auto", help="auto = cuda if torch sees a GPU, else cpu (default %(default)s)")
    p.add_argument("--dtype", choices=DTYPES, default="auto",
                   help="auto = float16 on a GPU (bfloat16 for Qwen2-VL/2.5-VL and Gemma 3, where float16 overflows and is refused), float32 on the CPU")
    p.add_argument("--layers", default="all", help="hidden-state indices to keep: all (default), or e.g. 0,8,16-20 (0 = embeddings)")
    p.add_argument("--query", default=None, help='question template with {a} (reference) and {b} (target), e.g. '
                   '"Is the {b} to the left or right of the {a}?"; the target word is b (default: "Is {b} to the left or right of {a}?")')
    if with_batch:
        p.add_argument("--batch-size", type=positive_int, default=8, help="images per forward pass (default %(default)s)")
