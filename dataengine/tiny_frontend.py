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


BUILDERS = {
    "depth_anything": _depth_anything,
    "depth_anything_relative": lambda: _depth_anything(relative=True),
    "depth_pro": _depth_pro,
    "zoedepth": _zoedepth,
}


def build_tiny(kind, output_dir, seed=0):
    """Save a tiny random model of `kind` (a key of BUILDERS) and its processor to `output_dir`; returns the folder."""
    import torch
    torch.manual_seed(seed)
    model, processor = BUILDERS[kind]()
    output_dir = Path(output_dir)
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    return output_dir
