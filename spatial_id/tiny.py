"""Tiny random-weight VLMs of the six families, built offline, saved with save_pretrained.

Each has a byte-level BPE tokenizer trained here with the `tokenizers`
package (object names are left out of its corpus, so "frog" or "teapot" split
into several sub-tokens, as in real tokenizers), the family's special tokens,
a chat template in the family's format, the family's real image processor and
processor class, and a random-weight model. They load back through the same
path as real checkpoints (`--model-path DIR`); their IDs mean nothing.
"""

from pathlib import Path

import torch

FAMILIES = ("llava", "qwen2_vl", "qwen2_5_vl", "gemma3", "internvl", "mllama")
CORPUS = (
    "Is the thing to the left or right of that ? "
    "left right above below near far in front behind the a of to is or and it what where which "
    "You are a helpful assistant . system user assistant model USER ASSISTANT Describe picture image photo "
    "small big red green blue yellow black white grid cell row column object scene view "
)


def _tokenizer(special, bos, eos, pad, vocab_size=420, words=(), **named):
    """A TokenizersBackend over a byte-level BPE trained on CORPUS (plus `words`, often enough to become one token
    each after a space); `named` become tokenizer attributes (image_token=...)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(dict.fromkeys(special)),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    extra = " ".join(f" {w}" for w in words)
    tok.train_from_iterator([CORPUS] * 4 + [extra] * 50 * bool(words), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=pad, **named)


def _text_dims(vocab, layers, hidden, heads=4, kv_heads=2, intermediate=None):
    return dict(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate or 2 * hidden,
                num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads)


CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}"
          "{% else %}{% for c in m['content'] %}{% if c['type'] == 'image' %}IMAGE{% elif c['type'] == 'text' %}"
          "{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def _llava(layers, hidden, image_size, patch=None, vocab_size=None, words=(), added_tokens=(), vision_hidden=32,
           vision_layers=2, tokenizer_size=420):
    from transformers import CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
    tok = _tokenizer(["<s>", "</s>", "<pad>", "<image>"], "<s>", "</s>", "<pad>", vocab_size=tokenizer_size, words=words,
                     image_token="<image>")
    tok.add_tokens(list(added_tokens))
    template = ("{% for m in messages %}{% if m['role'] == 'user' %}USER: {% if m['content'] is string %}{{ m['content'] }}"
                "{% else %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>\n{% elif c['type'] == 'text' %}"
                "{{ c['text'] }}{% endif %}{% endfor %}{% endif %} {% endif %}{% endfor %}"
                "{% if add_generation_prompt %}ASSISTANT:{% endif %}")
    patch = patch or image_size // 4
    proc = LlavaProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": image_size},
                                                             crop_size={"height": image_size, "width": image_size}),
                          tokenizer=tok, patch_size=patch, vision_feature_select_strategy="default",
                          num_additional_image_tokens=1, chat_template=template)
    vision = CLIPVisionConfig(hidden_size=vision_hidden, intermediate_size=2 * vision_hidden, num_hidden_layers=vision_layers,
                              num_attention_heads=2, image_size=image_size, patch_size=patch)
    text = LlamaConfig(**_text_dims(max(len(tok), vocab_size or 0), layers, hidden), pad_token_id=tok.pad_token_id,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=tok.image_token_id,
                         vision_feature_select_strategy="default", vision_feature_layer=-2)
    return LlavaForConditionalGeneration(config), proc


def _qwen(family, layers, hidden, image_size):
    import transformers as tf
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
                "<|video_pad|>"]
    tok = _tokenizer(specials, None, "<|im_end|>", "<|endoftext|>", image_token="<|image_pad|>", video_token="<|video_pad|>",
                     vision_start_token="<|vision_start|>", vision_end_token="<|vision_end|>")
    template = CHATML.replace("IMAGE", "<|vision_start|><|image_pad|><|vision_end|>")
    pixels = (image_size // 14) * 14
    image_kwargs = dict(min_pixels=pixels * pixels, max_pixels=pixels * pixels, patch_size=14, merge_size=2)
    heads = 4
    mrope = [hidden // heads // 2 - 2 * (hidden // heads // 6), hidden // heads // 6, hidden // heads // 6]
    text = dict(**_text_dims(len(tok), layers, hidden, heads=heads), pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id, bos_token_id=None,
                rope_parameters={"rope_type": "default", "mrope_section": mrope, "rope_theta": 10000.0})
    ids = dict(image_token_id=tok.image_token_id, video_token_id=tok.video_token_id,
               vision_start_token_id=tok.convert_tokens_to_ids("<|vision_start|>"),
               vision_end_token_id=tok.convert_tokens_to_ids("<|vision_end|>"))
    if family == "qwen2_vl":
        vision = tf.Qwen2VLConfig.sub_configs["vision_config"](depth=2, embed_dim=32, hidden_size=hidden, num_heads=2, mlp_ratio=2)
        proc = tf.Qwen2VLProcessor(image_processor=tf.Qwen2VLImageProcessor(**image_kwargs), tokenizer=tok,
                                   video_processor=tf.Qwen2VLVideoProcessor(), chat_template=template)
        model = tf.Qwen2VLForConditionalGeneration(tf.Qwen2VLConfig(text_config=text, vision_config=vision, **ids))
    else:
        vision = tf.Qwen2_5_VLConfig.sub_configs["vision_config"](depth=2, hidden_size=32, intermediate_size=64, num_heads=2,
                                                                  out_hidden_size=hidden, window_size=56,
                                                                  fullatt_block_indexes=[1])
        proc = tf.Qwen2_5_VLProcessor(image_processor=tf.Qwen2VLImageProcessor(**image_kwargs), tokenizer=tok,
                                      video_processor=tf.Qwen2VLVideoProcessor(), chat_template=template)
        model = tf.Qwen2_5_VLForConditionalGeneration(tf.Qwen2_5_VLConfig(text_config=text, vision_config=vision, **ids))
    return model, proc


def _gemma3(layers, hidden, image_size):
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3ImageProcessor, Gemma3Processor, Gemma3TextConfig, SiglipVisionConfig
    specials = ["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>",
                "<image_soft_token>"]
    tok = _tokenizer(specials, "<bos>", "<eos>", "<pad>", boi_token="<start_of_image>", eoi_token="<end_of_image>",
                     image_token="<image_soft_token>")
    template = ("{{ bos_token }}{% for m in messages %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n"
                "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
                "{% if c['type'] == 'image' %}<start_of_image>{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
                "{% endfor %}{% endif %}<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")
    patch, tokens = image_size // 4, 4
    proc = Gemma3Processor(image_processor=Gemma3ImageProcessor(size={"height": image_size, "width": image_size}),
                           tokenizer=tok, chat_template=template, image_seq_length=tokens)
    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                image_size=image_size, patch_size=patch, vision_use_head=False)
    text = Gemma3TextConfig(**_text_dims(len(tok), layers, hidden), head_dim=hidden // 4, pad_token_id=tok.pad_token_id,
                            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, sliding_window=64)
    config = Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=tokens,
                          boi_token_index=tok.boi_token_id, eoi_token_index=tok.eoi_token_id,
                          image_token_index=tok.image_token_id)
    return Gemma3ForConditionalGeneration(config), proc


def _internvl(layers, hidden, image_size):
    from transformers import (
        GotOcr2ImageProcessor,
        InternVLConfig,
        InternVLForConditionalGeneration,
        InternVLProcessor,
        InternVLVideoProcessor,
        Qwen2Config,
    )
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>", "<video>"]
    tok = _tokenizer(specials, None, "<|im_end|>", "<|endoftext|>", start_image_token="<img>", end_image_token="</img>",
                     context_image_token="<IMG_CONTEXT>", video_token="<video>")
    template = CHATML.replace("IMAGE", "<IMG_CONTEXT>\n")
    patch = image_size // 4
    proc = InternVLProcessor(image_processor=GotOcr2ImageProcessor(size={"height": image_size, "width": image_size},
                                                                   crop_to_patches=False),
                             tokenizer=tok, video_processor=InternVLVideoProcessor(), image_seq_length=4,
                             chat_template=template)
    vision = InternVLConfig.sub_configs["vision_config"](hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                                         num_attention_heads=2, image_size=[image_size, image_size],
                                                         patch_size=[patch, patch])
    text = Qwen2Config(**_text_dims(len(tok), layers, hidden), pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    config = InternVLConfig(vision_config=vision, text_config=text, image_token_id=tok.context_image_token_id,
                            downsample_ratio=0.5, image_seq_length=4)
    return InternVLForConditionalGeneration(config), proc


def _mllama(layers, hidden, image_size):
    from transformers import MllamaConfig, MllamaForConditionalGeneration, MllamaImageProcessor, MllamaProcessor
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|finetune_right_pad_id|>", "<|start_header_id|>",
                "<|end_header_id|>", "<|eot_id|>", "<|image|>", "<|python_tag|>"]
    tok = _tokenizer(specials, "<|begin_of_text|>", "<|eot_id|>", "<|finetune_right_pad_id|>", image_token="<|image|>")
    template = ("{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
                "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
                "{% if c['type'] == 'image' %}<|image|>{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}"
                "{% endif %}<|eot_id|>{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")
    proc = MllamaProcessor(image_processor=MllamaImageProcessor(size={"height": image_size, "width": image_size},
                                                                max_image_tiles=1),
                           tokenizer=tok, chat_template=template)
    vision = MllamaConfig.sub_configs["vision_config"](hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                                      num_global_layers=1, attention_heads=2, image_size=image_size,
                                                      patch_size=image_size // 4, max_num_tiles=1,
                                                      intermediate_layers_indices=[0], vision_output_dim=64,
                                                      supported_aspect_ratios=[[1, 1]])
    text = MllamaConfig.sub_configs["text_config"](**_text_dims(len(tok), layers, hidden),
                                                   cross_attention_layers=[1] if layers > 1 else [0],
                                                   pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                                                   eos_token_id=tok.eos_token_id)
    config = MllamaConfig(vision_config=vision, text_config=text, image_token_index=tok.image_token_id)
    return MllamaForConditionalGeneration(config), proc


BUILDERS = {"llava": _llava, "qwen2_vl": lambda *a: _qwen("qwen2_vl", *a), "qwen2_5_vl": lambda *a: _qwen("qwen2_5_vl", *a),
            "gemma3": _gemma3, "internvl": _internvl, "mllama": _mllama}


def build_tiny_model(family, output_dir, layers=4, hidden=64, image_size=32, seed=0, **options):
    """Build, save (model + processor) and return the folder of a tiny random-weight model of `family`.

    `options` go to the family's builder. LLaVA takes `patch` (the vision patch size), `vocab_size` (to give the
    embedding and lm head a real model's vocabulary size beyond the small tokenizer), `words` (whole words of
    the tokenizer), `added_tokens`, `tokenizer_size`, `vision_hidden` and `vision_layers`.
    """
    if family not in BUILDERS:
        raise ValueError(f"unknown family {family!r}; one of {', '.join(FAMILIES)}")
    torch.manual_seed(seed)
    model, processor = BUILDERS[family](layers, hidden, image_size, **options)
    out = Path(output_dir)
    model.eval().save_pretrained(out)
    processor.save_pretrained(out)
    return out
