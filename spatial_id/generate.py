"""Answers of a VLM of the registry to questions about images: batched greedy generation, as a user would ask it.

The prompt is the model's own processor chat template of one user turn [image, question]; batches are padded on the
left so every row's answer starts right after its prompt; the answer is the generated text up to the end token.
"""

import torch

from .extract import Extractor


class Answerer:
    """A loaded VLM (alias or local snapshot) that answers questions about images."""

    def __init__(self, choice, device="auto", dtype="auto"):
        self.extractor = Extractor(choice, device, dtype)
        self.model, self.processor = self.extractor.model, self.extractor.processor
        self.tokenizer = self.extractor.tokenizer

    @torch.inference_mode()
    def answer(self, images, questions, max_new_tokens=32):
        """The greedy answer (text) to each question about its image (PIL RGB)."""
        texts = [self.extractor.prompt(q, with_image=True) for q in questions]
        inputs = self.processor(text=texts, images=[[im] for im in images], return_tensors="pt", padding=True,
                                padding_side="left", add_special_tokens=self.extractor._add_special(texts[0]))
        inputs = {k: v.to(self.extractor.device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        out = self.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad)
        return [t.strip() for t in self.tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)]
