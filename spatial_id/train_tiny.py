"""Train a tiny LLaVA from scratch on grid images until it has spatial IDs (2 CPU cores, under 10 minutes).

    python spatial_id/train_tiny.py --output-dir models/tiny-spatial-llava [--seed 0]

The model learns to answer "Is {b} to the left or right of {a}?" and "Is {b}
above or below {a}?" on grid images of the ten stand-in objects, and to name
each object's cell at its word, so the target word's state carries the
position (see spatial_id/training.py). Some object pairs are held out of
training in both orders. OUTPUT_DIR gets the model and processor
(save_pretrained: load it with --model llava-7b --model-path OUTPUT_DIR) and
training.json (settings, training and held-out pairs, objects_dir, sizes,
query, held-out accuracy, training time), written last. The same seed gives
the same weights on the same machine and library versions. A held-out
accuracy under 90% is reported and exits 1 (also when a rerun finds that model). The repository ships one at
spatial_id/assets/tiny-spatial-llava (this command with its defaults).
"""

import sys
from dataclasses import fields
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from batchkit.cli import make_parser, nonnegative_int, positive_int, run_cli
from batchkit.files import read_json
from spatial_id.training import MIN_ACCURACY, TrainSettings, save_trained, train, trained_with


def build_parser():
    p = make_parser(__doc__, __doc__.split("\n\n", 2)[2])
    defaults = {f.name: f.default for f in fields(TrainSettings)}
    p.add_argument("--output-dir", required=True, help="folder for the model, processor and training.json (new or empty)")
    p.add_argument("--seed", type=int, default=defaults["seed"], help="seed of weights, data and held-out pairs (default %(default)s)")
    p.add_argument("--steps", type=positive_int, default=defaults["steps"], help="optimiser steps (default %(default)s)")
    p.add_argument("--answer-steps", type=nonnegative_int, default=defaults["answer_steps"],
                   help="steps of the second phase, where the output layer learns to write the whole answer word and "
                        "stop (0: none; default %(default)s)")
    p.add_argument("--pool", type=positive_int, default=defaults["pool"],
                   help="distinct training images, rendered and processed once (default %(default)s)")
    p.add_argument("--eval-images", type=positive_int, default=defaults["eval_images"],
                   help="held-out images the accuracy is measured on (default %(default)s)")
    p.add_argument("--workers", type=positive_int, default=defaults["workers"],
                   help="processes rendering images; no effect on the weights (default %(default)s)")
    p.add_argument("--objects-dir", default=None, help="folder of RGBA renders {name}.png (default: data/objects, made if missing)")
    return p


def main(args):
    settings = TrainSettings(seed=args.seed, steps=args.steps, answer_steps=args.answer_steps, pool=args.pool,
                             eval_images=args.eval_images, workers=args.workers)
    out = Path(args.output_dir)
    if trained_with(out, settings):
        record = read_json(out / "training.json", "training record")
        print(f"train_tiny: 0 done, 1 skipped ({out} holds a model trained with these settings)")
    else:
        model, processor, record = train(settings, args.objects_dir)
        save_trained(model, processor, record, out)
        print(f"train_tiny: trained in {record['train_seconds']:.0f} s ({settings.steps} steps); saved to {out}")
    acc, said = record["accuracy"]["heldout"], record["accuracy"].get("heldout_generated")
    print(f"train_tiny: held-out accuracy left/right {acc['horizontal']:.1%}, above/below {acc['vertical']:.1%} on "
          f"{len(record['heldout_pairs'])} unseen pairs" + (f"; answered in words (greedy): {said['horizontal']:.1%}, "
                                                           f"{said['vertical']:.1%}" if said else ""))
    if min([*acc.values(), *(said or {}).values()]) < MIN_ACCURACY:
        print(f"warning: {out}: held-out accuracy under {MIN_ACCURACY:.0%}; the model has not learned the task "
              "(train longer: --steps, into another folder)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, build_parser()))
