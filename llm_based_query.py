"""Spatial instruction data from the stage-1 geometry, written by a template or any OpenAI-compatible LLM (SpaceSGG stage 2).

    python llm_based_query.py --anno-file outputs/spacesgg/multiview.json --prompt-function create_layer_prompt --output-file outputs/spacesgg/layer.json

Output: a JSON list of LLaVA records {"id", "image", "conversations": [{"from":
"human", "value": "<image>\\n..."}, {"from": "gpt", "value": "..."}], ...}.
Boxes use All-Seeing v2 tags <ref>label</ref><box>[[x1, y1, x2, y2]]</box>,
integers 0..999 (image padded to a square first unless --box-norm stretch).
--backend openai asks the server at --base-url (or OPENAI_BASE_URL) with the
key from OPENAI_API_KEY; answers are cached in OUT.cache.jsonl so a rerun
resumes, and replies that fail validation twice go to OUT.rejects.json.
Tokens (prompt and completion apart) and, with --price-in/--price-out, the
cost go to the summary and OUT.json.usage.json; --dry-run counts them before
a run is paid for. --backend openai-batch / batch-file send the same requests
by batch inference (half price on OpenAI; vllm run-batch on your GPUs).
"""

import sys

from batchkit.cli import add_shard_arg, make_parser, nonnegative_float, nonnegative_int, positive_float, positive_int, run_cli
from spacesgg.backends import BACKENDS, LLMSettings
from spacesgg.benchmark import read_split
from spacesgg.cli import add_path_rewrite_args
from spacesgg.llm_query import DEFAULT_CONCURRENCY, DEFAULT_POLL, BatchSettings, query
from spacesgg.prompt_functions import DEFAULT_MAX_QA_PAIRS, DEFAULT_MAX_REPLY_CHARS, DEFAULT_PAIRS_PER_VIEW, PROMPT_ALIASES, PROMPT_FUNCTIONS
from spacesgg.tags import BOX_NORMS
from spacesgg.usage import Prices

LLM = LLMSettings()        # the defaults, defined once in spacesgg.backends


def build_parser():
    p = make_parser(__doc__, __doc__.split("\n\n", 2)[2])
    p.add_argument("--anno-file", required=True, help="annotation JSON written by multiview_layers.py (stage 1.3)")
    p.add_argument("--prompt-function", required=True, choices=list(PROMPT_FUNCTIONS) + list(PROMPT_ALIASES),
                   help="layer descriptions, comparative QA (create_comparative_prompt is the same), rotation conversations or metric distance QA")
    p.add_argument("--output-file", required=True, help="LLaVA JSON list to write (atomically)")
    p.add_argument("--backend", choices=list(BACKENDS), default="template",
                   help="template: offline answers from the geometry (default); openai: any OpenAI-compatible server; "
                        "openai-batch: the same requests through the OpenAI Batch API (rerun to collect); batch-file: "
                        "Batch-format request files for any server (vllm run-batch), ingested with --batch-output")
    p.add_argument("--model", default=LLM.model, help="model name on the server (openai backend; default %(default)s)")
    p.add_argument("--base-url", default=None, help="server URL, e.g. http://127.0.0.1:8000/v1 for vLLM (default: OPENAI_BASE_URL, else OpenAI)")
    p.add_argument("--concurrency", type=positive_int, default=DEFAULT_CONCURRENCY, help="requests in flight at once (default %(default)s)")
    p.add_argument("--max-retries", type=nonnegative_int, default=LLM.max_retries, help="retries of a request on 429, 5xx, timeouts, connection errors and malformed replies (default %(default)s)")
    p.add_argument("--timeout", type=positive_float, default=LLM.timeout, help="seconds for a whole reply, however slowly it arrives; then it counts as timed out (default %(default)g)")
    p.add_argument("--backoff", type=nonnegative_float, default=LLM.backoff, help="first retry waits up to this many seconds, doubling per retry, with jitter; Retry-After wins if longer (default %(default)g)")
    p.add_argument("--max-wait", type=nonnegative_float, default=LLM.max_wait, help="no wait before a retry is longer than this, whatever Retry-After asks (default %(default)g s)")
    p.add_argument("--max-reply-chars", type=positive_int, default=DEFAULT_MAX_REPLY_CHARS, help="a longer reply is rejected (default %(default)s)")
    p.add_argument("--temperature", type=nonnegative_float, default=LLM.temperature, help="sampling temperature (openai backend; default %(default)g)")
    p.add_argument("--seed", type=int, default=0, help="seed of the phrasing and pair choices; same seed, same output (default %(default)s)")
    p.add_argument("--limit", type=positive_int, default=None, help="only the first N requests, for trials")
    p.add_argument("--dry-run", action="store_true", help="write the prompts (system, user, question) instead of asking, and "
                                                          "count the requests, tokens and cost still to pay for (sends nothing)")
    p.add_argument("--max-tokens", type=positive_int, default=LLM.max_tokens,
                   help="completion tokens at most per request, sent to the server; a dry run's upper bound (default %(default)s)")
    p.add_argument("--price-in", type=nonnegative_float, default=None, help="USD per million prompt tokens, for the cost in the summary and OUT.json.usage.json")
    p.add_argument("--price-out", type=nonnegative_float, default=None, help="USD per million completion tokens")
    p.add_argument("--tokenizer", default=None, help="dry run: a local tokenizer folder (transformers) for exact prompt token counts")
    p.add_argument("--batch-dir", default=None, help="batch backends: where the request files go (default OUT.json.batches/)")
    p.add_argument("--batch-output", nargs="+", default=[], help="batch-file: result files in the Batch output format to ingest")
    p.add_argument("--wait", action="store_true", help="openai-batch: poll (with backoff) until every batch is done, then write the records")
    p.add_argument("--poll", type=positive_float, default=DEFAULT_POLL, help="openai-batch --wait: seconds before the first poll, doubling up to 300 (default %(default)g)")
    p.add_argument("--box-norm", choices=BOX_NORMS, default="pad", help="pad: boxes of the image padded to a square, as All-Seeing v2 (default); stretch: x by width, y by height")
    p.add_argument("--pairs-per-view", type=positive_int, default=None, help=f"rotation: object pairs asked per view (default {DEFAULT_PAIRS_PER_VIEW})")
    p.add_argument("--max-qa-pairs", type=positive_int, default=None, help=f"comparative: relations given to the LLM per image (default {DEFAULT_MAX_QA_PAIRS}); distance: facts per image")
    p.add_argument("--image-root", default=None, help="write each record's image path as LLaVA's --image_folder joins it: relative to this folder (or the file name found "
                        "there); default: the dataset's images/ when the annotation file sits in a dataset folder, else the "
                        "annotation key (relative keys are relative to the dataset folder)")
    p.add_argument("--split", default=None, help="FILE:PART, e.g. outputs/benchmark/split.json:train: only the images of that "
                                                 "part of a split (python -m spacesgg.benchmark), so no benchmark image enters training")
    add_path_rewrite_args(p)
    add_shard_arg(p)
    return p


def main(args):
    settings = LLMSettings(model=args.model, base_url=args.base_url, timeout=args.timeout, max_retries=args.max_retries,
                           backoff=args.backoff, max_wait=args.max_wait, temperature=args.temperature,
                           max_tokens=args.max_tokens)
    return query(args.anno_file, args.prompt_function, args.output_file, backend=args.backend, settings=settings,
                 limit=args.limit, dry_run=args.dry_run, concurrency=args.concurrency, dataset_base=args.dataset_base,
                 data_prefix=args.data_prefix, image_root=args.image_root, box_norm=args.box_norm, seed=args.seed,
                 pairs_per_view=args.pairs_per_view, max_qa_pairs=args.max_qa_pairs, max_reply_chars=args.max_reply_chars,
                 shard=args.shard, split=read_split(args.split) if args.split else None,
                 prices=Prices(args.price_in, args.price_out), tokenizer=args.tokenizer,
                 batch=BatchSettings(args.batch_dir, tuple(args.batch_output), args.wait, args.poll))


if __name__ == "__main__":
    sys.exit(run_cli(main, build_parser()))
