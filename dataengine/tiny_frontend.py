"""Tiny random-weight models of every front-end family, built offline and saved with save_pretrained.

They load through the same `--model DIR` path as real snapshots, with the
family's real processor, so the front end is tested end to end without a hub.
Their outputs are random: they check plumbing, shapes and numbers against the
model's own post-processing, never quality.
"""

from pathlib import Path

DINO_TINY = {"model_type": "dinov2", "num_hidden_layers": 2, "hidden_size": 16, "num_attention_heads": 1, "patch_size": 4}


def _depth_anything(relative=False):
    import transformers as T
    backbone = T.Dinov2Config(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                              patch_size=14, image_size=56, out_features=["stage1", "stage2"], reshape_hidden_states=False)
    config = T.DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=16, neck_hidden_sizes=[8, 16],
                                   fusion_hidden_size=16, head_hidden_size=8, reassemble_factors=[2, 1],
                                   depth_estimation_type="relative" if relative else "metric", max_depth=20)
    processor = T.DPTImageProcessor(size={"height": 56, "width": 56}, keep_aspect_ratio=True, ensure_multiple_of=14,
                                    do_pad=False, resample=3, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    return T.DepthAnythingForDepthEstimation(config), processor


def _depth_pro():
    import transformers as T
    config = T.DepthProConfig(patch_size=16, fusion_hidden_size=16, intermediate_hook_ids=[1, 0],
                              intermediate_feature_dims=[10, 8], scaled_images_ratios=[0.5, 1.0],
                              scaled_images_overlap_ratios=[0.0, 0.2], scaled_images_feature_dims=[12, 12],
                              use_fov_model=True, image_model_config=dict(DINO_TINY), patch_model_config=dict(DINO_TINY),
                              fov_model_config=dict(DINO_TINY))
    return T.DepthProForDepthEstimation(config, use_fov_model=True), T.DepthProImageProcessor(size={"height": 32, "width": 32})


def _zoedepth():
    import transformers as T
    backbone = T.BeitConfig(hidden_size=16, num_hidden_layers=4, num_attention_heads=2, intermediate_size=32, image_size=32,
                            patch_size=8, out_features=["stage1", "stage2", "stage3", "stage4"], reshape_hidden_states=False,
                            use_relative_position_bias=True)
    config = T.ZoeDepthConfig(backbone_config=backbone, neck_hidden_sizes=[8, 8, 16, 16], fusion_hidden_size=16,
                              reassemble_factors=[4, 2, 1, 0.5], bottleneck_features=16, num_relative_features=8,
                              bin_embedding_dim=16, num_attractors=[4, 2, 2, 1], patch_transformer_hidden_size=16,
                              patch_transformer_intermediate_size=32, patch_transformer_num_attention_heads=2,
                              bin_configurations=[{"n_bins": 8, "min_depth": 0.001, "max_depth": 10.0, "name": "nyu"}])
    processor = T.ZoeDepthImageProcessor(size={"height": 32, "width": 32}, keep_aspect_ratio=True, ensure_multiple_of=8)
    return T.ZoeDepthForDepthEstimation(config), processor


def _sam_parts():
    vision = dict(hidden_size=16, output_channels=16, num_hidden_layers=2, num_attention_heads=2, image_size=64,
                  patch_size=8, window_size=4, global_attn_indexes=[1], mlp_dim=32, num_pos_feats=8)
    prompt = dict(hidden_size=16, image_size=64, patch_size=8, mask_input_channels=4)
    decoder = dict(hidden_size=16, mlp_dim=32, num_hidden_layers=2, num_attention_heads=2, iou_head_hidden_dim=16)
    return vision, prompt, decoder


def _sam_image_processor():
    import transformers as T
    return T.SamImageProcessor(size={"longest_edge": 64}, pad_size={"height": 64, "width": 64},
                               mask_size={"longest_edge": 16}, mask_pad_size={"height": 16, "width": 16})


def _sam():
    import transformers as T
    vision, prompt, decoder = _sam_parts()
    config = T.SamConfig(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder)
    return T.SamModel(config), T.SamProcessor(image_processor=_sam_image_processor())


def _sam_hq():
    import transformers as T
    vision, prompt, decoder = _sam_parts()
    config = T.SamHQConfig(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=dict(decoder, vit_dim=16))
    return T.SamHQModel(config), T.SamHQProcessor(image_processor=_sam_image_processor())


def _sam2():
    import transformers as T
    backbone = T.Sam2HieraDetConfig(hidden_size=12, image_size=128, patch_stride=4, patch_kernel_size=7, patch_padding=3,
                                    blocks_per_stage=[1, 2, 7, 2], embed_dim_per_stage=[12, 24, 48, 96],
                                    num_attention_heads_per_stage=[1, 2, 4, 8])
    vision = T.Sam2VisionConfig(backbone_config=backbone, backbone_channel_list=[96, 48, 24, 12],
                                backbone_feature_sizes=[[32, 32], [16, 16], [8, 8]], fpn_hidden_size=32)
    prompt = T.Sam2PromptEncoderConfig(image_size=128, patch_size=16, mask_input_channels=8, hidden_size=32)
    decoder = T.Sam2MaskDecoderConfig(hidden_size=32, mlp_dim=64, num_hidden_layers=2, num_attention_heads=4,
                                      iou_head_hidden_dim=32)
    config = T.Sam2Config(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder)
    processor = T.Sam2Processor(image_processor=T.Sam2ImageProcessor(size={"height": 128, "width": 128},
                                                                     mask_size={"height": 32, "width": 32}),
                                target_size=128, point_pad_value=-10)
    return T.Sam2Model(config), processor


LABEL_WORDS = ["a", "photo", "of", "the", "chair", "table", "lamp", "cup", "dog", "cat", "person", "tv", "plant", "sofa"]


def _grounding_dino():
    import transformers as T
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", *LABEL_WORDS]
    tokenizer = T.BertTokenizer(vocab={w: i for i, w in enumerate(words)}, do_lower_case=True)
    swin = T.SwinConfig(window_size=7, embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], image_size=98,
                        out_indices=[2, 3, 4])
    text = {"model_type": "bert", "hidden_size": 8, "num_hidden_layers": 2, "num_attention_heads": 2,
            "intermediate_size": 8, "max_position_embeddings": 32, "vocab_size": len(words)}
    config = T.GroundingDinoConfig(d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                                   decoder_attention_heads=4, encoder_ffn_dim=4, decoder_ffn_dim=4, num_queries=20,
                                   num_feature_levels=4, encoder_n_points=2, decoder_n_points=6, use_timm_backbone=False,
                                   backbone_config=swin, max_text_len=32, text_config=text)
    processor = T.GroundingDinoProcessor(image_processor=T.GroundingDinoImageProcessor(
        size={"shortest_edge": 98, "longest_edge": 128}), tokenizer=tokenizer)
    return T.GroundingDinoForObjectDetection(config), processor


def _owlv2():
    import transformers as T
    vocab = {"!": 0}                                   # OWL reads a query starting with id 0 as padding
    for c in "abcdefghijklmnopqrstuvwxyz.":
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    tokenizer = T.CLIPTokenizer(vocab=vocab, merges=[], pad_token="<|endoftext|>")
    text = dict(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                max_position_embeddings=32, bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"],
                pad_token_id=vocab["<|endoftext|>"])
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=64,
                  patch_size=16)
    config = T.Owlv2Config(text_config=text, vision_config=vision, projection_dim=16)
    processor = T.Owlv2Processor(image_processor=T.Owlv2ImageProcessor(size={"height": 64, "width": 64}),
                                 tokenizer=tokenizer)
    return T.Owlv2ForObjectDetection(config), processor


BUILDERS = {
    "depth_anything": _depth_anything,
    "depth_anything_relative": lambda: _depth_anything(relative=True),
    "depth_pro": _depth_pro,
    "zoedepth": _zoedepth,
    "sam": _sam,
    "sam_hq": _sam_hq,
    "sam2": _sam2,
    "grounding_dino": _grounding_dino,
    "owlv2": _owlv2,
}


FAMILIES = tuple(k for k in BUILDERS if k != "depth_anything_relative")     # registry families (the relative variant is a test case)


def build_tiny(kind, output_dir, seed=0):
    """Save a tiny random model of `kind` (a key of BUILDERS) and its processor to `output_dir`; returns the folder."""
    import torch
    torch.manual_seed(seed)
    model, processor = BUILDERS[kind]()
    output_dir = Path(output_dir)
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    return output_dir
