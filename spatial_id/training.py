"""Train a tiny LLaVA from scratch until it has spatial IDs, so the tools have something real to find offline.

The model is the tiny LLaVA family of `tiny.py` (CLIP vision tower, Llama
decoder, the real LlavaProcessor and chat template) with a tokenizer that
gives each object name a token of its own (after a space) and has 16 cell
tokens `<cell_i_j>`; weights start at std 1/sqrt(fan-in) (the family's 0.02
init leaves training at chance). Images are the grid images of `dataengine/`
(4 x 4 cells of 224 px, the reference in any other cell, every size), composed
in memory and sent through the processor exactly as the tools send files.

Each example asks "Is {b} to the left or right of {a}?" or "Is {b} above or
below {a}?", and the loss has, besides the answer right after the prompt
(only where the columns, or rows, differ: the choice between the two answers'
first tokens), two next-token terms:
- at each object's word, that object's cell token: the model must name the
  cell as soon as it reads the word, so the word's state carries the
  position, and the answer, which needs both positions, reads them from the
  two words (measured by swapping spatial IDs there: `intervention.py`). The
  cell tokens' lm-head rows are fixed (`cell_readout`) so that naming the
  cell needs the column and row *linearly* in the state, as in real VLMs;
- at each image patch, the name of the object in that cell: one identity
  code per object whatever it stands next to, so held-out pairs work.

Then, so that greedy generation says the whole word and stops, as any VLM is
read, a second phase trains the output layer only, on the next-token loss of
the whole answer word and the end of the answer: every state of the model
stays as the first phase left it, and the two answers of a question move
their output rows by the same step, so the choice between them (the
difference of their logits) is the first phase's too. The decision, the
spatial IDs and what the tools measure on them are the first phase's,
unchanged; only what the model writes after the choice is new (the cell
tokens' rows, fixed in the first phase, may move in the second).
"""

import os
import shutil
import time
from dataclasses import asdict, dataclass
from itertools import permutations
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from batchkit.errors import UserError
from batchkit.files import read_json, write_json
from batchkit.workers import pool_map
from dataengine.grid import CELL, GRID, SIZES, default_objects_dir, ensure_objects, load_render, paste
from dataengine.objects import OBJECT_NAMES

from .extract import word_position
from .intervention import DIRECTIONS, answer_token_ids

PATCH_WEIGHT = 1.0                 # the patch-name term relative to the word terms (both times word_loss)
MIN_ACCURACY = 0.9                 # held-out accuracy below which train_tiny.py says the model has not learned


def cell_token(i, j):
    return f"<cell_{i}_{j}>"


@dataclass
class TrainSettings:
    """Everything that decides the trained weights (recorded in training.json)."""
    seed: int = 0
    steps: int = 2000
    batch_size: int = 48
    learning_rate: float = 2e-3
    warmup: int = 100
    pool: int = 12000              # distinct training images, rendered and processed once
    heldout: int = 6               # unordered object pairs held out (both orders: 2x ordered pairs)
    layers: int = 4
    hidden: int = 128
    vision_hidden: int = 64
    vision_layers: int = 2
    image_size: int = 64
    patch: int = 16
    word_loss: float = 1.0         # weight of the next-token terms at the object words and image patches
    weight_decay: float = 0.01
    linear_cells: bool = True      # cell tokens read out linearly (fixed lm-head rows, see cell_readout)
    answer_steps: int = 2000       # second phase: the output layer learns to write the whole answer word and stop
    eval_images: int = 4000        # held-out images the reported accuracy is measured on (a seeded sample)
    workers: int = 2               # processes rendering and processing images (no effect on the weights)


def split_pairs(objects, heldout, seed):
    """(training, held-out) ordered pairs: `heldout` unordered pairs drawn at random, held out in both orders."""
    unordered = [(a, b) for k, a in enumerate(objects) for b in objects[k + 1:]]
    rng = np.random.default_rng(seed)
    chosen = {unordered[k] for k in rng.choice(len(unordered), size=heldout, replace=False)}
    held = sorted({p for a, b in chosen for p in ((a, b), (b, a))})
    return [p for p in permutations(objects, 2) if p not in set(held)], held


class GridImages:
    """Grid images composed in memory (as dataengine/grid.py writes them: black canvas, reference pasted first)."""

    def __init__(self, objects_dir, objects, grid=GRID, cell=CELL, sizes=SIZES):
        self.grid, self.cell, self.sizes = grid, cell, tuple(sizes)
        renders = {n: load_render(Path(objects_dir) / f"{n}.png") for n in objects}
        self.resized = {(n, s): np.asarray(Image.fromarray(r).resize((s, s), Image.LANCZOS))
                        for n, r in renders.items() for s in self.sizes}

    def image(self, a, b, target, reference, size):
        canvas = np.zeros((self.grid * self.cell,) * 2 + (3,), np.uint8)
        paste(canvas, self.resized[(a, size)], reference, self.cell)
        paste(canvas, self.resized[(b, size)], target, self.cell)
        return canvas

    def sample(self, pairs, n, rng):
        """n random (a, b, target cell, reference cell, size) over `pairs`."""
        cells = [(i, j) for j in range(self.grid) for i in range(self.grid)]
        out = []
        for _ in range(n):
            a, b = pairs[rng.integers(len(pairs))]
            t, r = rng.choice(len(cells), size=2, replace=False)
            out.append((a, b, cells[t], cells[r], self.sizes[rng.integers(len(self.sizes))]))
        return out

    def balanced(self, pairs):
        """Every (a, b, target, reference, size) of the reference-balanced design over `pairs`."""
        cells = [(i, j) for j in range(self.grid) for i in range(self.grid)]
        return [(a, b, t, r, s) for a, b in pairs for s in self.sizes for t in cells for r in cells if t != r]


class Prompts:
    """Token ids and the positions that the loss reads, per (pair, direction), from the real processor."""

    def __init__(self, processor, grid):
        self.processor, self.tok = processor, processor.tokenizer
        self.cells = {(i, j): self.tok.convert_tokens_to_ids(cell_token(i, j)) for i in range(grid) for j in range(grid)}
        self.image_token = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
        self.names = {}
        self.cache = {}
        side = processor.image_processor.crop_size["height"]
        self.blank = Image.new("RGB", (side, side))

    def get(self, a, b, direction):
        key = (a, b, direction)
        for name in (a, b):
            if name not in self.names:
                self.names[name] = self.tok(f" {name}", add_special_tokens=False)["input_ids"][-1]
        if key not in self.cache:
            words = DIRECTIONS[direction]["answers"]
            query = DIRECTIONS[direction]["query"].format(a=a, b=b)
            text = self.processor.apply_chat_template(
                [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": query}]}],
                add_generation_prompt=True, tokenize=False)
            add = not text.startswith(self.tok.bos_token or "\0")
            ids = self.processor(text=[text], images=[[self.blank]], return_tensors="pt",
                                 add_special_tokens=add)["input_ids"][0]
            n = len(ids)
            self.cache[key] = {"ids": ids, "b": n - word_position(self.tok, text, query, b, add).tail,
                               "a": n - word_position(self.tok, text, query, a, add).tail,
                               "answers": answer_token_ids(self.tok, text, words, add),
                               "completions": [self._completion(text, word, add) for word in words]}
        return self.cache[key]


    def _completion(self, text, word, add):
        """The token ids that write `word` right after the prompt `text`, and the end of the answer."""
        base = self.tok(text, add_special_tokens=add)["input_ids"]
        full = self.tok(text + word, add_special_tokens=add)["input_ids"]
        return torch.tensor(full[len(base):] + [self.tok.eos_token_id])


def answer_index(direction, target, reference):
    """0 (left / above), 1 (right / below) or None where the two share the column (row)."""
    axis = DIRECTIONS[direction]["axis"]
    if target[axis] == reference[axis]:
        return None
    return int(target[axis] > reference[axis])


def batch_inputs(prompts, examples, directions, pixel_values, with_answers=False):
    """Model inputs and loss targets (answer, b's cell, a's cell) for examples with their directions.

    `with_answers`: the answer word follows the prompt where it is defined, and "completion" holds the next-token
    targets of the answer (its tokens, then the end) at the prompt's last position and after it (-100 elsewhere).
    """
    rows = [prompts.get(a, b, d) for (a, b, *_), d in zip(examples, directions)]
    answer = [answer_index(d, t, ref) for (_, _, t, ref, _), d in zip(examples, directions)]
    completions = [r["completions"][x] if with_answers and x is not None else None for r, x in zip(rows, answer)]
    seqs = [r["ids"] if c is None else torch.cat([r["ids"], c[:-1]]) for r, c in zip(rows, completions)]
    length = max(len(q) for q in seqs)
    pad = prompts.tok.pad_token_id
    ids = torch.full((len(rows), length), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    completion = torch.full((len(rows), length), -100, dtype=torch.long)
    for k, (q, c) in enumerate(zip(seqs, completions)):
        ids[k, :len(q)] = q
        mask[k, :len(q)] = 1
        if c is not None:
            completion[k, len(rows[k]["ids"]) - 1:len(q)] = c
    last = torch.tensor([len(r["ids"]) - 1 for r in rows])
    image_positions = (ids == prompts.image_token).nonzero()[:, 1].view(len(rows), -1)   # patches in raster order
    names = torch.full(image_positions.shape, -100, dtype=torch.long)
    grid = round(image_positions.shape[1] ** 0.5)
    for k, (a, b, t, ref, _) in enumerate(examples):
        names[k, ref[1] * grid + ref[0]] = prompts.names[a]
        names[k, t[1] * grid + t[0]] = prompts.names[b]
    return {
        "inputs": {"input_ids": ids, "attention_mask": mask, "pixel_values": pixel_values},
        "last": last,
        "answer_pair": torch.tensor([r["answers"] for r in rows]),
        "answer": torch.tensor([-1 if x is None else x for x in answer]), "completion": completion,
        "image_positions": image_positions, "patch_names": names,
        "b": torch.tensor([r["b"] for r in rows]), "a": torch.tensor([r["a"] for r in rows]),
        "b_cell": torch.tensor([prompts.cells[t] for _, _, t, _, _ in examples]),
        "a_cell": torch.tensor([prompts.cells[ref] for _, _, _, ref, _ in examples]),
    }


def losses(model, batch):
    """(answer loss, word loss, two-way answer accuracy where defined) of one batch."""
    logits = model(**batch["inputs"], use_cache=False).logits
    rows = torch.arange(logits.shape[0])
    pair = logits[rows, batch["last"]].gather(1, batch["answer_pair"])          # [B, 2]: the two answers' logits
    defined = batch["answer"] >= 0
    answer_loss = torch.nn.functional.cross_entropy(pair[defined], batch["answer"][defined])
    word_loss = (torch.nn.functional.cross_entropy(logits[rows, batch["b"]], batch["b_cell"])
                 + torch.nn.functional.cross_entropy(logits[rows, batch["a"]], batch["a_cell"])) / 2
    patches = logits[rows[:, None], batch["image_positions"]]                   # [B, P, V]
    word_loss = word_loss + torch.nn.functional.cross_entropy(patches.flatten(0, 1), batch["patch_names"].flatten(),
                                                             ignore_index=-100) * PATCH_WEIGHT
    accuracy = (pair[defined].argmax(dim=1) == batch["answer"][defined]).float().mean()
    return answer_loss, word_loss, accuracy


def init_weights(model, seed):
    """Linear and conv weights ~ N(0, 1/fan-in), biases 0, embeddings ~ N(0, 1): a scale a tiny model can train from."""
    torch.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
            fan_in = m.weight[0].numel()
            torch.nn.init.normal_(m.weight, std=fan_in ** -0.5)
            if m.bias is not None:
                torch.nn.init.zeros_(m.bias)
        elif isinstance(m, torch.nn.Embedding):
            torch.nn.init.normal_(m.weight, std=1.0)


def build(settings, objects):
    from .tiny import BUILDERS
    torch.manual_seed(settings.seed)
    cells = [cell_token(i, j) for j in range(GRID) for i in range(GRID)]
    model, processor = BUILDERS["llava"](settings.layers, settings.hidden, settings.image_size, patch=settings.patch,
                                         words=objects, added_tokens=cells, vision_hidden=settings.vision_hidden,
                                         vision_layers=settings.vision_layers, tokenizer_size=480)
    tok = processor.tokenizer
    for name in objects:
        pieces = tok.tokenize(f" {name}")
        if len(pieces) != 1:
            raise RuntimeError(f"the tokenizer splits {name!r} into {pieces}; object names need a token each")
    init_weights(model, settings.seed)
    if settings.linear_cells:
        set_cell_readout(model, processor.tokenizer)
    return model, processor


def cell_readout(tokenizer, hidden, grid=GRID, sharpness=4.0):
    """(token ids, fixed lm-head rows) of the cell tokens: logit(i, j) = s (2 i x + 2 j y - i^2 - j^2) for a state
    with x, y, 1 along three fixed directions (i, j centred on the grid), largest at the cell nearest (x, y).

    With these rows fixed, naming the cell at an object's word needs that word's state to hold the object's
    column and row *linearly*, as the spatial IDs of real VLMs do, instead of as 16 unrelated directions."""
    ids, rows = [], []
    half = (grid - 1) / 2
    for j in range(grid):
        for i in range(grid):
            x, y = i - half, j - half
            row = torch.zeros(hidden)
            row[:3] = torch.tensor([2 * x, 2 * y, -(x * x + y * y)]) * sharpness
            ids.append(tokenizer.convert_tokens_to_ids(cell_token(i, j)))
            rows.append(row)
    return torch.tensor(ids), torch.stack(rows)


@torch.no_grad()
def set_cell_readout(model, tokenizer):
    head = model.get_output_embeddings().weight
    ids, rows = cell_readout(tokenizer, head.shape[1])
    head[ids] = rows.to(head.dtype)


def _process_chunk(job):
    grid_images, image_processor, chunk = job
    torch.set_num_threads(1)
    images = [grid_images.image(a, b, t, r, s) for a, b, t, r, s in chunk]
    return image_processor(images=images, return_tensors="pt")["pixel_values"]


def process(processor, grid_images, examples, workers=2, chunk=128, desc=None):
    """float32 pixel values [N, 3, S, S] of the examples' images, through the processor, in `workers` processes."""
    jobs = [(grid_images, processor.image_processor, examples[k:k + chunk]) for k in range(0, len(examples), chunk)]
    return torch.cat(list(tqdm(pool_map(_process_chunk, jobs, workers), total=len(jobs), desc=desc, unit="batch",
                               disable=desc is None)))


@torch.no_grad()
def accuracy(model, prompts, examples, pixel_values, batch_size=256):
    """{direction: accuracy} of the two-way answer over the examples where it is defined."""
    model.eval()
    out = {}
    for direction in DIRECTIONS:
        keep = [k for k, (_, _, t, r, _) in enumerate(examples) if answer_index(direction, t, r) is not None]
        right = 0
        for start in range(0, len(keep), batch_size):
            idx = keep[start:start + batch_size]
            batch = batch_inputs(prompts, [examples[k] for k in idx], [direction] * len(idx), pixel_values[idx])
            logits = model(**batch["inputs"], use_cache=False).logits
            rows = torch.arange(len(idx))
            pair = logits[rows, batch["last"]].gather(1, batch["answer_pair"])
            right += int((pair.argmax(dim=1) == batch["answer"]).sum())
        out[direction] = right / len(keep)
    return out


def train_answer_words(model, prompts, pool, pixels, settings, rng):
    """Second phase: only the output layer learns, from the states the first phase made, to write the answer word
    whole and then the end of the answer. The two answers of a question move their output rows together (by the
    same step), so the difference of their logits, the model's choice between them, stays exactly the first
    phase's; every state of the model, and so every spatial ID, is the first phase's."""
    head = model.get_output_embeddings().weight
    pairs = [prompts.get(*pool[0][:2], direction)["answers"] for direction in sorted(DIRECTIONS)]
    for p in model.parameters():
        p.requires_grad_(False)
    head.requires_grad_(True)
    optimiser = torch.optim.AdamW([head], lr=settings.learning_rate, weight_decay=0.0)
    model.eval()
    bar = tqdm(range(settings.answer_steps), desc="answer words", unit="step")
    for step in bar:
        idx = rng.integers(len(pool), size=settings.batch_size)
        directions = [sorted(DIRECTIONS)[k] for k in rng.integers(len(DIRECTIONS), size=settings.batch_size)]
        batch = batch_inputs(prompts, [pool[k] for k in idx], directions, pixels[idx], with_answers=True)
        with torch.no_grad():
            states = model(**batch["inputs"], use_cache=False, output_hidden_states=True).hidden_states[-1]
        targets = batch["completion"]
        at = targets >= 0
        loss = torch.nn.functional.cross_entropy(states[at] @ head.T, targets[at])
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        with torch.no_grad():
            for pair in pairs:                                   # the same step for both answers: their difference holds
                head.grad[pair] = head.grad[pair].mean(dim=0)
        optimiser.step()
        if step % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    for p in model.parameters():
        p.requires_grad_(True)


@torch.no_grad()
def generated_accuracy(model, prompts, examples, pixel_values, batch_size=256):
    """{direction: accuracy} of the greedy answer (exactly the right word, then the end) where it is defined."""
    model.eval()
    tok, out = prompts.tok, {}
    for direction in DIRECTIONS:
        words = DIRECTIONS[direction]["answers"]
        keep = [k for k, (_, _, t, r, _) in enumerate(examples) if answer_index(direction, t, r) is not None]
        right = 0
        for start in range(0, len(keep), batch_size):
            idx = keep[start:start + batch_size]
            batch = batch_inputs(prompts, [examples[k] for k in idx], [direction] * len(idx), pixel_values[idx])
            inputs = dict(batch["inputs"])
            ids = inputs["input_ids"]                                  # left-pad for generation: prompts end together
            order = torch.argsort((inputs["attention_mask"] == 0).int(), dim=1, stable=True, descending=True)
            inputs["input_ids"], inputs["attention_mask"] = ids.gather(1, order), inputs["attention_mask"].gather(1, order)
            new = model.generate(**inputs, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
            texts = tok.batch_decode(new[:, ids.shape[1]:], skip_special_tokens=True)
            right += sum(text.strip() == words[int(x)] for text, x in zip(texts, batch["answer"]))
        out[direction] = right / len(keep)
    return out


def train(settings, objects_dir=None, objects=OBJECT_NAMES, log=print):
    """(model, processor, record): a trained tiny LLaVA and what training.json records about it."""
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    objects = list(objects)
    objects_dir = Path(objects_dir or default_objects_dir())
    ensure_objects(objects, objects_dir)
    train_pairs, heldout = split_pairs(objects, settings.heldout, settings.seed)
    model, processor = build(settings, objects)
    grid_images = GridImages(objects_dir, objects)
    prompts = Prompts(processor, GRID)
    started = time.monotonic()
    pool = grid_images.sample(train_pairs, settings.pool, rng)
    pixels = process(processor, grid_images, pool, settings.workers, desc="training images")
    optimiser = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: min(1.0, (step + 1) / settings.warmup)
                                                 * 0.5 * (1 + np.cos(np.pi * min(step, settings.steps) / settings.steps)))
    model.train()
    bar = tqdm(range(settings.steps), desc="training", unit="step")
    for step in bar:
        idx = rng.integers(len(pool), size=settings.batch_size)
        directions = [sorted(DIRECTIONS)[k] for k in rng.integers(len(DIRECTIONS), size=settings.batch_size)]
        batch = batch_inputs(prompts, [pool[k] for k in idx], directions, pixels[idx])
        answer_loss, word_loss, acc = losses(model, batch)
        loss = answer_loss + settings.word_loss * word_loss
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        if settings.linear_cells:
            set_cell_readout(model, processor.tokenizer)      # fixed rows: undo the step's change to them
        schedule.step()
        if step % 10 == 0:
            bar.set_postfix(answer=f"{answer_loss.item():.3f}", words=f"{word_loss.item():.3f}", acc=f"{acc.item():.2f}")
    if settings.answer_steps:
        train_answer_words(model, prompts, pool, pixels, settings, rng)
    train_seconds = time.monotonic() - started
    model.eval()
    held = grid_images.balanced(heldout)
    if settings.eval_images < len(held):
        held = [held[k] for k in sorted(np.random.default_rng(settings.seed).choice(len(held), settings.eval_images,
                                                                                    replace=False))]
    held_pixels = process(processor, grid_images, held, settings.workers, desc="held-out images")
    measured = accuracy(model, prompts, held, held_pixels)
    generated = generated_accuracy(model, prompts, held, held_pixels) if settings.answer_steps else None
    repo = Path(__file__).resolve().parents[1]
    shown = objects_dir.resolve().relative_to(repo) if objects_dir.resolve().is_relative_to(repo) else objects_dir.resolve()
    record = {"settings": asdict(settings), "objects": objects, "objects_dir": str(shown),
              "training_pairs": [list(p) for p in train_pairs], "heldout_pairs": [list(p) for p in heldout],
              "grid": GRID, "cell": CELL, "sizes": list(SIZES), "query": DIRECTIONS["horizontal"]["query"],
              "queries": {d: v["query"] for d, v in DIRECTIONS.items()},
              "accuracy": {"heldout": measured, "heldout_generated": generated, "heldout_images": len(held),
                           "note": "reference-balanced grid images of the held-out pairs, every size; the answer "
                                   "counted where the two objects are in different columns (rows); heldout: the "
                                   "choice between the two answers' tokens, heldout_generated: the greedy answer, "
                                   "exactly the word"},
              "train_seconds": round(train_seconds, 1)}
    return model, processor, record


def _settings_key(settings):
    return {k: v for k, v in asdict(settings).items() if k != "workers"}


def trained_with(output_dir, settings):
    """True when output_dir holds a finished model trained with these settings; UserError when it holds anything else."""
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"--output-dir {out}: is a file")
    if not out.is_dir() or not any(out.iterdir()):
        return False
    record = out / "training.json"
    if record.is_file() and (out / "model.safetensors").is_file():
        old = read_json(record, "training record").get("settings", {})
        if {k: v for k, v in old.items() if k != "workers"} == _settings_key(settings):
            return True
        raise UserError(f"{out}: holds a model trained with other settings; write to another folder or delete it")
    raise UserError(f"{out}: not empty and not a finished training (no training.json); write to another folder or delete it")


def save_trained(model, processor, record, output_dir):
    """Model, processor and training.json (last) into a temporary sibling folder, then renamed to output_dir."""
    out = Path(output_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    try:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        write_json(tmp / "training.json", record)
        if out.is_dir():
            out.rmdir()                      # trained_with() let only an empty folder through
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
