"""Swap the target word's spatial ID for another cell's and record whether the model's left/right answer flips.

    python spatial_id/intervene.py --model llava-7b --ids embeds/universal_id/llava-7b.pt --image-dir data/grid_data --layers 8,12,16 --output-dir embeds/interventions/llava-7b

On the grid images of one size (default the largest), at each layer of
--layers, the target's state h becomes h + ID(to) - ID(from) (IDs from --ids,
a universal ID file of this model) for every other cell (or --cells-from /
--cells-to), and the answer is the model's choice between "left" and "right"
after the prompt. Reports the flip rate of moves that cross the reference's
column, of those that do not, and of a control adding a random vector of the
same norm, with bootstrap 95% intervals: OUTPUT_DIR/interventions.json and
interventions.png. --direction vertical asks "Is {b} above or below {a}?"
instead and counts moves across the reference's row.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from batchkit.cli import make_parser, positive_int, run_cli
from spatial_id.extract import Extractor, check_query
from spatial_id.ids import pair_folders
from spatial_id.intervention import DIRECTIONS, Intervener, flip_experiment, load_ids, parse_cell, write_flip_outputs
from spatial_id.registry import add_model_args, parse_layers, resolve_model


def build_parser():
    p = make_parser(__doc__, __doc__.split("\n\n", 2)[2])
    p.add_argument("--ids", required=True, help="universal ID file of this model (compute_id.py / average_id.py)")
    p.add_argument("--image-dir", required=True, help="a pair folder or a folder of them (random design)")
    p.add_argument("--output-dir", required=True, help="where interventions.json and interventions.png go")
    p.add_argument("--size", type=positive_int, default=None, help="object size of the images used (default: the largest)")
    p.add_argument("--cells-from", default=None, help="only images whose target is in this cell, e.g. 0,1")
    p.add_argument("--cells-to", default=None, help="only moves to this cell, e.g. 3,1")
    p.add_argument("--direction", choices=sorted(DIRECTIONS), default="horizontal",
                   help="horizontal: left/right, moves across the reference's column; vertical: above/below, across its "
                        "row (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the control's random vectors (default %(default)s)")
    p.add_argument("--label", default=None, help="what the model is, for the plot's title, e.g. \"tiny LLaVA, trained\" "
                                                 "(default: its alias and snapshot)")
    add_model_args(p)
    return p


def main(args):
    choice = resolve_model(args.model, args.model_path)
    folders = pair_folders(args.image_dir)
    extractor = Extractor(choice, args.device, args.dtype)
    id_data = load_ids(args.ids, extractor)
    grid = 1 + max(max(c[0], c[1]) for c in id_data["cells"])
    layers = extractor.resolve_layers(parse_layers(args.layers))
    cells_from = parse_cell(args.cells_from, grid, "--cells-from") if args.cells_from else None
    cells_to = parse_cell(args.cells_to, grid, "--cells-to") if args.cells_to else None
    template = check_query(args.query or DIRECTIONS[args.direction]["query"])
    results = flip_experiment(Intervener(extractor, args.direction), folders, id_data, layers, template, args.size, cells_from, cells_to,
                              args.batch_size, args.seed)
    meta = {"model": choice.name, "model_path": choice.source, "ids": str(args.ids), "query": template,
            "direction": args.direction, "pairs": [f.name for f in folders], "dtype": extractor.dtype_name,
            "label": args.label}
    write_flip_outputs(results, meta, args.output_dir)
    best = max(results.items(), key=lambda kv: (kv[1]["crossing"] - kv[1]["control"]) if kv[1]["n"]["crossing"] else -1)
    print(f"intervene {choice.name}: {len(layers)} layers; largest crossing-minus-control at layer {best[0]}: crossing "
          f"{best[1]['crossing']:.0%}, not crossing {best[1]['not_crossing']:.0%}, control {best[1]['control']:.0%}; "
          f"wrote {Path(args.output_dir) / 'interventions.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, build_parser()))
