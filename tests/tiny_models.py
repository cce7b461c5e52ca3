"""Tiny random GroundingDINO and SAM2 checkpoints for offline CPU tests.

The checkpoints are built from tiny configs of the *real* transformers classes, then written with
``save_pretrained`` so that the code under test loads them through ``from_pretrained(dir)``: the
same path a published checkpoint takes. Nothing here touches a model hub.

The GroundingDINO tokenizer is a ``BertTokenizerFast`` over a character-level WordPiece vocab
(letters and ``##letters``), so a word of n letters costs n tokens. That keeps the vocab tiny and
makes long class lists cross the 256-token text limit quickly (useful to test prompt splitting).

Other tests reuse these helpers: ``build_tiny_grounded_sam2(root)`` returns the two checkpoint
dirs to put in ``DetectConfig(grounding_dino=..., sam2=...)``.
"""

from __future__ import annotations

import os
import string

__all__ = [
    "TINY_SAM2_IMAGE_SIZE",
    "build_tiny_grounding_dino",
    "build_tiny_sam2",
    "build_tiny_grounded_sam2",
    "tiny_detect_config",
]

# SAM2 input side of the tiny checkpoint: the Hiera stem has stride 4 and three query-pool
# stages halve it, so the FPN levels are 16, 8 and 4 pixels and pred_masks come out at 16 (S/4).
TINY_SAM2_IMAGE_SIZE = 64


def _write_char_vocab(path: str) -> None:
    """A WordPiece vocab of special tokens, punctuation, digits, letters and ##continuations."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    punct = [".", ",", "'", "-", "?"]
    chars = list(string.ascii_lowercase + string.digits)
    tokens = specials + punct + chars + [f"##{c}" for c in chars]
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(tokens) + "\n")


def build_tiny_grounding_dino(out_dir: str, *, seed: int = 0, num_queries: int = 12) -> str:
    """Write a tiny random ``GroundingDinoForObjectDetection`` + its BERT tokenizer to ``out_dir``."""
    import torch
    from transformers import (
        BertConfig,
        BertTokenizerFast,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        SwinConfig,
    )

    os.makedirs(out_dir, exist_ok=True)
    vocab_path = os.path.join(out_dir, "vocab.txt")
    _write_char_vocab(vocab_path)
    tokenizer = BertTokenizerFast(vocab=vocab_path, do_lower_case=True, model_max_length=512)
    backbone = SwinConfig(
        image_size=32,
        patch_size=4,
        embed_dim=8,
        depths=[1, 1, 1, 1],
        num_heads=[1, 1, 1, 1],
        window_size=4,
        out_features=["stage2", "stage3", "stage4"],
        out_indices=[2, 3, 4],
    )
    text = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=512,
    )
    config = GroundingDinoConfig(
        backbone_config=backbone,
        text_config=text,
        d_model=32,  # GroupNorm(32, d_model) in the input projections
        num_queries=num_queries,
        encoder_layers=1,
        decoder_layers=2,  # the two-stage head needs >= 2 decoder layers
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_n_points=2,
        decoder_n_points=2,
        num_feature_levels=4,
        max_text_len=256,
    )
    torch.manual_seed(seed)
    model = GroundingDinoForObjectDetection(config).eval()
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def build_tiny_sam2(out_dir: str, *, seed: int = 0) -> str:
    """Write a tiny random ``Sam2Model`` (input side ``TINY_SAM2_IMAGE_SIZE``) to ``out_dir``."""
    import torch
    from transformers import (
        Sam2Config,
        Sam2HieraDetConfig,
        Sam2MaskDecoderConfig,
        Sam2Model,
        Sam2PromptEncoderConfig,
        Sam2VisionConfig,
    )

    size = TINY_SAM2_IMAGE_SIZE
    backbone = Sam2HieraDetConfig(
        hidden_size=8,
        num_attention_heads=1,
        image_size=[size, size],
        # Global attention must not sit on a stage's first (query-pooling) block: block 3 is the
        # second block of stage 2.
        blocks_per_stage=[1, 1, 2, 1],
        embed_dim_per_stage=[8, 16, 32, 64],
        num_attention_heads_per_stage=[1, 1, 1, 1],
        window_size_per_stage=[4, 4, 4, 2],
        global_attention_blocks=[3],
        window_positional_embedding_background_size=[2, 2],
    )
    vision = Sam2VisionConfig(
        backbone_config=backbone,
        backbone_channel_list=[64, 32, 16, 8],
        backbone_feature_sizes=[[size // 4, size // 4], [size // 8, size // 8], [size // 16, size // 16]],
        fpn_hidden_size=16,
    )
    prompt = Sam2PromptEncoderConfig(hidden_size=16, image_size=size, patch_size=16, mask_input_channels=4)
    decoder = Sam2MaskDecoderConfig(
        hidden_size=16, mlp_dim=32, num_attention_heads=2, iou_head_hidden_dim=16
    )
    config = Sam2Config(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder)
    torch.manual_seed(seed)
    model = Sam2Model(config).eval()
    model.save_pretrained(out_dir)
    return out_dir


def build_tiny_grounded_sam2(root: str, *, seed: int = 0) -> tuple[str, str]:
    """Both tiny checkpoints under ``root``; returns ``(grounding_dino_dir, sam2_dir)``."""
    gdino_dir = build_tiny_grounding_dino(os.path.join(root, "gdino"), seed=seed)
    sam2_dir = build_tiny_sam2(os.path.join(root, "sam2"), seed=seed)
    return gdino_dir, sam2_dir


def tiny_detect_config(root: str, **overrides):
    """A ``DetectConfig`` for the tiny Grounded SAM2 checkpoints built under ``root``.

    Thresholds are low because random weights score boxes around 0.5.
    """
    from a2o.config import DetectConfig

    gdino_dir, sam2_dir = build_tiny_grounded_sam2(root)
    values = dict(
        detector="grounded_sam2",
        grounding_dino=gdino_dir,
        sam2=sam2_dir,
        box_threshold=0.05,
        text_threshold=0.05,
    )
    values.update(overrides)
    return DetectConfig(**values)
