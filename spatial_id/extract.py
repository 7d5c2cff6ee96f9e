"""Read one word's hidden state at chosen layers of a VLM, in batches, keeping nothing else.

Layers are numbered as transformers' `output_hidden_states`: 0 = the
embeddings entering the decoder, k = the output of the k-th decoder layer
(1-based), and the last = the output after the final norm (transformers puts
the normed state there). Forward hooks copy only the target position of the
requested layers (in float32) and stop the forward after the last of them, so
no full hidden-state stack and no logits are ever built. Tokens after the
target are cut (a causal decoder never lets them reach it), and when the last
layer is needed its MLP runs on the target rows only.

The target is the last sub-token of the word inside the user text; its
position comes from the tokenizer's character offsets in the chat-templated
prompt, counted from the end of the sequence, which image-token expansion
(before the user text) does not change. Every batch row is checked.
"""

import re
from dataclasses import dataclass

import torch

from batchkit.errors import UserError
from batchkit.models import check_available, resolve_device

from .registry import FAMILIES, resolve_dtype

QUERY = "Is {b} to the left or right of {a}?"


def check_query(template):
    """A query template names the reference {a} and the target {b} once each (the target's word is read)."""
    try:
        filled = template.format(a="\0a", b="\0b")
    except (KeyError, IndexError, ValueError):
        raise UserError(f"--query {template!r}: use only the placeholders {{a}} (reference) and {{b}} (target)") from None
    if filled.count("\0a") != 1 or filled.count("\0b") != 1:
        raise UserError(f"--query {template!r}: name {{a}} and {{b}} once each, e.g. {QUERY!r}")
    return template
SEQUENCE_KEYS = ("input_ids", "attention_mask", "token_type_ids", "mm_token_type_ids", "cross_attention_mask",
                 "position_ids")   # processor outputs indexed [batch, token, ...]


class _StopForward(Exception):
    """Raised by the last hook: the rest of the forward (later layers, lm head) is not needed."""


def word_span(query, word):
    """(start, end) of the first whole-word occurrence of `word` in `query`."""
    m = re.search(rf"(?<!\w){re.escape(word)}(?!\w)", query)
    if not m:
        raise UserError(f"target word {word!r} is not in the query {query!r}; the target must be a word of the query")
    return m.span()


@dataclass
class TargetPosition:
    tail: int            # tokens from the target (inclusive) to the end of the prompt
    tail_ids: list       # those token ids, to check every processed row
    subtokens: list      # the word's sub-tokens, target last


def language_model(model):
    """The decoder stack (with .layers and .norm) inside a VLM."""
    for path in ("model.language_model", "language_model.model", "language_model", "model"):
        obj = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if obj is not None and hasattr(obj, "layers") and hasattr(obj, "norm"):
            return obj
    raise RuntimeError(f"cannot find the decoder layers of {type(model).__name__}")


def word_position(tokenizer, text, query, word, add_special=True, name="the model"):
    """TargetPosition of the last sub-token of `word` (inside `query`, found verbatim in the prompt `text`)."""
    start_in_query, end_in_query = word_span(query, word)
    q = text.rfind(query)
    if q < 0:
        raise UserError(f"the chat template of {name} did not keep the query {query!r} verbatim")
    start, end = q + start_in_query, q + end_in_query
    enc = tokenizer(text, add_special_tokens=add_special, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    hits = [k for k, (s, e) in enumerate(offsets) if e > start and s < end and e > s]
    if not hits:
        raise UserError(f"no token of {name}'s tokenizer covers {word!r} in {text!r}")
    last = hits[-1]
    return TargetPosition(len(ids) - last, ids[last:], tokenizer.convert_ids_to_tokens([ids[k] for k in hits]))


class Extractor:
    """A loaded VLM and its processor, ready to read one word's hidden states."""

    def __init__(self, choice, device="auto", dtype="auto"):
        import transformers
        self.choice = choice
        check_available(choice.source, choice.name, f"MODELS=\"{choice.name}=DIR\" (wrappers), --model {choice.name}=DIR "
                                                    "or --model-path DIR (scripts)")
        self.device = resolve_device(device)
        self.dtype_name = resolve_dtype(choice.family, dtype, self.device)
        model_class = getattr(transformers, FAMILIES[choice.family].model_class)
        try:
            self.processor = transformers.AutoProcessor.from_pretrained(choice.source)
            self.model = model_class.from_pretrained(choice.source, dtype=getattr(torch, self.dtype_name),
                                                     device_map=self.device)   # straight onto the device, no CPU copy
        except OSError as e:
            raise UserError(f"cannot load {choice.name} from {choice.source} ({str(e).splitlines()[0]}); give a local "
                            "snapshot with --model-path DIR, or log in to the hub for gated models") from None
        self.model.eval()
        self.tokenizer = self.processor.tokenizer
        self.tokenizer.padding_side = "right"       # real tokens keep the positions of an unbatched forward
        self.decoder = language_model(self.model)
        self.num_layers = len(self.decoder.layers)

    def num_hidden_states(self, with_image=True):
        """len(output_hidden_states): decoder layers run + 1 (Mllama skips its cross-attention layers without an image)."""
        skipped = 0
        if self.choice.family == "mllama" and not with_image:
            skipped = len(self.model.config.text_config.cross_attention_layers)
        return self.num_layers - skipped + 1

    def image_index(self, text_index):
        """The hidden-state index, in a forward with the image, of the same depth as `text_index` of a text-only one.

        Equal but for Mllama, whose text-only forward skips its cross-attention layers (and so numbers fewer states).
        """
        if self.choice.family != "mllama" or text_index == 0:
            return text_index
        cross = set(self.model.config.text_config.cross_attention_layers)
        run = [i for i in range(self.num_layers) if i not in cross]
        return run[text_index - 1] + 1

    def resolve_layers(self, layers, with_image=True):
        """Hidden-state indices from None (all) or a list of ints (negative counts from the end)."""
        n = self.num_hidden_states(with_image)
        if layers is None:
            return list(range(n))
        out = sorted({k % n for k in layers if -n <= k < n})
        bad = [k for k in layers if not -n <= k < n]
        if bad or not out:
            shown = ", ".join(map(str, (bad or layers)[:6])) + (" ..." if len(bad or layers) > 6 else "")
            raise UserError(f"--layers {shown} out of range: {self.choice.name} has hidden states 0..{n - 1}")
        return out

    def prompt(self, query, with_image=True):
        content = ([{"type": "image"}] if with_image else []) + [{"type": "text", "text": query}]
        return self.processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                                  tokenize=False)

    def _add_special(self, text):
        bos = self.tokenizer.bos_token
        return not (bos and text.startswith(bos))    # the chat template already wrote BOS

    def target_position(self, text, query, word):
        """Where the last sub-token of `word` (inside the user text) sits, counted from the end of `text`."""
        return word_position(self.tokenizer, text, query, word, self._add_special(text), self.choice.name)

    def _inputs(self, texts, images):
        """Processor outputs (on the CPU) for prompts and their images (None: text only)."""
        kwargs = dict(text=texts, return_tensors="pt", padding=True, padding_side="right",   # InternVL's ignores the tokenizer's
                      add_special_tokens=self._add_special(texts[0]))
        if images is not None:
            kwargs["images"] = [[im] for im in images]
        return self.processor(**kwargs)

    def hidden(self, texts, images, target, layers):
        """float32 Tensor[len(layers), B, D]: the target's hidden state at each requested layer, for each row."""
        return self.run(self._inputs(texts, images), target, layers, images is not None)

    @torch.inference_mode()
    def run(self, inputs, target, layers, with_image=True):
        """The forward with hooks on prepared inputs (see _inputs); the extraction proper."""
        inputs = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}   # a copy we may cut
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        lengths = mask.sum(dim=1)
        rows = torch.arange(ids.shape[0], device=ids.device)
        positions = lengths - target.tail
        tail = torch.tensor(target.tail_ids, device=ids.device)
        for r in range(ids.shape[0]):
            n = int(lengths[r])
            if not torch.equal(ids[r, n - target.tail:n], tail):
                raise RuntimeError(f"row {r}: the processed prompt does not end as tokenized; cannot place the target")
        keep = int(positions.max()) + 1         # causal decoder: tokens after the target never reach it
        for key in SEQUENCE_KEYS:
            if key in inputs and inputs[key].shape[:2] == ids.shape:
                inputs[key] = inputs[key][:, :keep]
        if bool(inputs["attention_mask"].all()):
            del inputs["attention_mask"]        # no padding: let attention take its causal fast path
        wanted, last = set(layers), max(layers)
        captured, fired = {}, [0]
        final_index = self.num_hidden_states(with_image) - 1

        def keep(index, hidden_states):
            captured[index] = hidden_states[rows, positions].float()

        def before_first(module, args, kwargs):
            if 0 in wanted:
                keep(0, args[0] if args else kwargs["hidden_states"])
            if last == 0:
                raise _StopForward

        def after_layer(module, args, output):
            fired[0] += 1
            k = fired[0]
            if k in wanted and k < final_index:
                keep(k, output[0] if isinstance(output, tuple) else output)
            if last <= k < final_index:
                raise _StopForward

        def after_norm(module, args, output):
            if final_index in wanted:
                keep(final_index, output)
            raise _StopForward

        handles = [self.decoder.layers[0].register_forward_pre_hook(before_first, with_kwargs=True)]
        handles += [layer.register_forward_hook(after_layer) for layer in self.decoder.layers]
        handles.append(self.decoder.norm.register_forward_hook(after_norm))
        last_mlp = getattr(self.decoder.layers[-1], "mlp", None)
        if last == final_index and last_mlp is not None:
            # The last layer's output is read at the target rows only, so its MLP (most of the layer's work) runs
            # on those rows; the residual add broadcasts the [B, 1, D] result, and the other rows are never read.
            handles.append(last_mlp.register_forward_pre_hook(
                lambda module, args: (args[0][rows, positions].unsqueeze(1), *args[1:])))
        try:
            self.model(**inputs, use_cache=False)
        except _StopForward:
            pass
        finally:
            for h in handles:
                h.remove()
        return torch.stack([captured[k] for k in layers]).cpu()
