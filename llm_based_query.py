"""Spatial instruction data from the stage-1 geometry, written by a template or any OpenAI-compatible LLM (SpaceSGG stage 2).

    python llm_based_query.py --anno-file outputs/spacesgg/multiview.json --prompt-function create_layer_prompt --output-file outputs/spacesgg/layer.json

Output: a JSON list of LLaVA records {"id", "image", "conversations": [{"from":
"human", "value": "<image>\\n..."}, {"from": "gpt", "value": "..."}], ...}.
Boxes use All-Seeing v2 tags <ref>label</ref><box>[[x1, y1, x2, y2]]</box>,
integers 0..999 (image padded to a square first unless --box-norm stretch).
--backend openai asks the server at --base-url (or OPENAI_BASE_URL) with the
key from OPENAI_API_KEY; answers are cached in OUT.cache.jsonl so a rerun
resumes, and replies that fail validation twice go to OUT.rejects.json.
"""

import sys

from spacesgg.backends import BACKENDS, DEFAULT_BACKOFF, DEFAULT_MAX_RETRIES, DEFAULT_MODEL, DEFAULT_TEMPERATURE, DEFAULT_TIMEOUT
from batchkit.cli import make_parser, run_cli
from spacesgg.cli import add_path_rewrite_args
from spacesgg.llm_query import DEFAULT_CONCURRENCY, query
from spacesgg.prompts import DEFAULT_MAX_QA_PAIRS, DEFAULT_PAIRS_PER_VIEW, PROMPT_ALIASES, PROMPT_FUNCTIONS
from spacesgg.tags import BOX_NORMS


def build_parser():
    p = make_parser(__doc__, __doc__.split("\n\n", 2)[2])
    p.add_argument("--anno-file", required=True, help="annotation JSON written by multiview_layers.py (stage 1.3)")
    p.add_argument("--prompt-function", required=True, choices=list(PROMPT_FUNCTIONS) + list(PROMPT_ALIASES),
                   help="layer descriptions, comparative QA (create_comparative_prompt is the same) or rotation conversations")
    p.add_argument("--output-file", required=True, help="LLaVA JSON list to write (atomically)")
    p.add_argument("--backend", choices=list(BACKENDS), default="template",
                   help="template: offline answers from the geometry (default); openai: any OpenAI-compatible server")
    p.add_argument("--model", default=DEFAULT_MODEL, help="model name on the server (openai backend; default %(default)s)")
    p.add_argument("--base-url", default=None, help="server URL, e.g. http://127.0.0.1:8000/v1 for vLLM (default: OPENAI_BASE_URL, else OpenAI)")
    p.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY, help="requests in flight at once (default %(default)s)")
    p.add_argument("--max-retries", type=int, default=DEFAULT_MAX_RETRIES, help="retries of a request on 429, 5xx, timeouts, connection errors and malformed replies (default %(default)s)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds per request before it counts as timed out (default %(default)g)")
    p.add_argument("--backoff", type=float, default=DEFAULT_BACKOFF, help="first retry waits up to this many seconds, doubling per retry, with jitter; Retry-After wins if longer (default %(default)g)")
    p.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE, help="sampling temperature (openai backend; default %(default)g)")
    p.add_argument("--seed", type=int, default=0, help="seed of the phrasing and pair choices; same seed, same output (default %(default)s)")
    p.add_argument("--limit", type=int, default=None, help="only the first N requests, for trials")
    p.add_argument("--dry-run", action="store_true", help="write the prompts (system, user, question) instead of asking")
    p.add_argument("--box-norm", choices=BOX_NORMS, default="pad", help="pad: boxes of the image padded to a square, as All-Seeing v2 (default); stretch: x by width, y by height")
    p.add_argument("--pairs-per-view", type=int, default=None, help=f"rotation: object pairs asked per view (default {DEFAULT_PAIRS_PER_VIEW})")
    p.add_argument("--max-qa-pairs", type=int, default=None, help=f"comparative: relations given to the LLM per image (default {DEFAULT_MAX_QA_PAIRS})")
    p.add_argument("--image-root", default=None, help="write each record's image path relative to this folder (LLaVA's --image_folder)")
    add_path_rewrite_args(p)
    return p


def main(args):
    return query(args.anno_file, args.prompt_function, args.output_file, backend=args.backend, limit=args.limit,
                 dry_run=args.dry_run, concurrency=args.concurrency, dataset_base=args.dataset_base,
                 data_prefix=args.data_prefix, image_root=args.image_root, box_norm=args.box_norm, seed=args.seed,
                 pairs_per_view=args.pairs_per_view, max_qa_pairs=args.max_qa_pairs, model=args.model,
                 base_url=args.base_url, timeout=args.timeout, max_retries=args.max_retries, backoff=args.backoff,
                 temperature=args.temperature)


if __name__ == "__main__":
    sys.exit(run_cli(main, build_parser()))
