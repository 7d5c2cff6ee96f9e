"""Steer a VLM's left/right (above/below) answer with spatial IDs, beside a random direction of the same norm.

    python spatial_id/steer.py --model llava-7b --ids embeds/universal_id/llava-7b.pt --image-dir data/grid_data --layers 8,12,16 --scales 0 0.5 1 2 5 --output-dir embeds/steering/llava-7b

At each layer of --layers and each scale s of --scales, the target word's
state moves from its own cell toward a target cell: + s x (ID[target] -
ID[own]) (--norm absolute) or that difference rescaled to s x the state's norm
(--norm relative, the published form), with IDs from --ids (a universal file
of average_id.py, or a per-pair file); the control adds a random direction of
the same norm (seeded). --targets opposite steers each image to the cell
mirrored across the reference (the answer should follow to the other side);
--targets all to every cell (in_between.png: the answer rate per target
cell). Writes OUTPUT_DIR/steering.json (per layer and scale: the rate at which
the answer follows the target's side, the mean shift of the logit margin
toward it, the same for the control, bootstrap 95% intervals) and
steering.png (dose-response curves). A rerun with the same model snapshot,
IDs file, images, layers and scales reuses steering.json; anything else is
measured again.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from batchkit.cli import make_parser, nonnegative_float, positive_int, run_cli  # noqa: E402
from batchkit.files import file_digest, read_json  # noqa: E402
from batchkit.models import resolve_device  # noqa: E402
from spatial_id.extract import Extractor, check_query  # noqa: E402
from spatial_id.ids import images_of, pair_folders  # noqa: E402
from spatial_id.intervention import DIRECTIONS, Intervener, load_ids  # noqa: E402
from spatial_id.registry import add_model_args, parse_layers, resolve_dtype, resolve_model  # noqa: E402
from spatial_id.steering import NORMS, TARGETS, check_ids, steer_experiment, write_steer_outputs  # noqa: E402

DEFAULT_SCALES = (0.0, 0.5, 1.0, 2.0, 5.0)


def build_parser():
    p = make_parser(__doc__, __doc__.split("\n\n", 2)[2])
    p.add_argument("--ids", required=True, help="ID file of this model: universal (average_id.py) or per pair (compute_id.py)")
    p.add_argument("--image-dir", required=True, help="a pair folder or a folder of them")
    p.add_argument("--output-dir", required=True, help="where steering.json and steering.png go")
    p.add_argument("--scales", type=nonnegative_float, nargs="+", default=list(DEFAULT_SCALES),
                   help="steering strengths s, finite and not negative (default %(default)s)")
    p.add_argument("--norm", choices=NORMS, default="relative",
                   help="relative: the ID difference rescaled to s x the state's norm (published); absolute: s x the "
                        "difference itself (default %(default)s)")
    p.add_argument("--targets", choices=TARGETS, default="opposite",
                   help="opposite: the cell mirrored across the reference; all: every cell, for the in-between map (default %(default)s)")
    p.add_argument("--direction", choices=sorted(DIRECTIONS), default="horizontal",
                   help="horizontal: left/right across the reference's column; vertical: above/below across its row (default %(default)s)")
    p.add_argument("--size", type=positive_int, default=None, help="object size of the images used (default: the largest)")
    p.add_argument("--word", default="universal", help="which key of the ID file (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the control's random directions (default %(default)s)")
    p.add_argument("--label", default=None, help="what the model is, for the plot's title, e.g. \"tiny LLaVA, trained\"")
    add_model_args(p)
    return p


def main(args):
    choice = resolve_model(args.model, args.model_path)
    folders = pair_folders(args.image_dir)
    layers_asked = parse_layers(args.layers)
    template = check_query(args.query or DIRECTIONS[args.direction]["query"])
    scales = sorted(set(args.scales))
    out = Path(args.output_dir)
    meta = {"model": choice.name, "model_path": choice.source, "ids": str(args.ids), "ids_digest": file_digest(args.ids),
            "word": args.word, "images": images_of(folders), "pairs": [f.name for f in folders], "query": template,
            "direction": args.direction, "norm": args.norm, "targets": args.targets, "scales": scales,
            "layers_asked": args.layers, "size": args.size, "seed": args.seed, "label": args.label,
            "dtype": resolve_dtype(choice.family, args.dtype, resolve_device(args.device))}
    done = out / "steering.json"
    if done.is_file():
        try:
            old = read_json(done, "steering results").get("meta", {})
        except Exception:  # an unreadable result is measured again
            old = {}
        if {k: old.get(k) for k in meta} == meta:
            print(f"steer {choice.name}: {done} was made with this snapshot, IDs file, images, layers and scales; reused")
            return 0
    extractor = Extractor(choice, args.device, args.dtype)
    layers = extractor.resolve_layers(layers_asked)
    id_data = load_ids(args.ids, extractor, args.word)
    check_ids(id_data, extractor, layers)
    result = steer_experiment(Intervener(extractor, args.direction), folders, id_data, layers, scales, template,
                              args.norm, args.targets, args.size, args.batch_size, args.seed, args.word)
    meta["layers"] = layers
    write_steer_outputs(result, meta, out)
    best = max(((layer, s, v) for layer, by in result["layers"].items() for s, v in by.items() if v["follow"] is not None),
               key=lambda t: (t[2]["follow"] - (t[2]["control_follow"] or 0), -t[1]), default=None)
    if best:
        layer, s, v = best
        print(f"steer {choice.name}: strongest at layer {layer}, scale {s:g}: the answer follows the target in "
              f"{v['follow']:.0%} of {v['n']} images (random direction of the same norm: {v['control_follow']:.0%}); "
              f"wrote {done}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, build_parser()))
