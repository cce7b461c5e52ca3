"""Grounded SAM2: GroundingDINO boxes per class, SAM2 masks per box, one map per class.

Pipeline for a clip (frames batched through both models, ``frame_batch_size`` at a time):

1. **Prompts.** Classes join into GroundingDINO's dot-separated prompt ``"a. b. c."``. The text
   encoder takes at most ``config.max_text_len`` (256) tokens including [CLS]/[SEP], so the class
   list is packed greedily into as many prompts as needed, counting tokens with the checkpoint's
   own tokenizer (``self.prompts_for(classes)``; ``last_prompt_count`` records the split).
2. **Boxes.** For every query box, the score of class *c* is the max sigmoid logit over the
   tokens of *c*'s span in the prompt (spans from the tokenizer's offset mapping). This maps
   detections back to the requested classes exactly, where decoding the thresholded tokens back
   to a phrase (what ``post_process_grounded_object_detection`` does) yields fragments such as
   "ball" for "tennis ball" or merged phrases across neighbouring classes that need fuzzy matching.
   A box counts for every class whose score passes both ``box_threshold`` and ``text_threshold``
   (overlapping concepts both light up); at most ``MAX_BOXES_PER_CLASS`` boxes per (frame, class)
   are kept, by score.
3. **Masks.** SAM2 embeds each frame once, then decodes all kept boxes of the frame in one call
   (``input_boxes`` in SAM2 input pixels, one mask per box). ``pred_masks`` are logits at S/4:
   sigmoid, then bilinear resize to the frame size.
4. **Maps.** The map of class *c* is the pixel-wise max over its boxes of mask probability × box
   score; a class without boxes in a frame gets zeros there.

Preprocessing is plain torch (the HF image processors need torchvision): bilinear resize, /255,
ImageNet mean/std. GroundingDINO sees frames at ``detect_resolution`` (0 = frame size), SAM2 at
its configured input size. The forward passes run under the caller's ``Runtime.autocast()`` (bf16
on an accelerator by default).

Caveat on caching: classes packed into one prompt still interact inside GroundingDINO (its
image-text fusion layers attend over the whole prompt), so a class's map depends slightly on its
prompt-mates. The map cache keys entries by (detector, class, video) and reuses them across class
sets, which treats that dependence as noise; a rerun of the same class set reproduces the same
bytes on CPU. Splitting every class into its own prompt would remove the dependence at the cost
of one GroundingDINO pass per class.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from a2o.detect.base import VideoMeta
from a2o.errors import DetectionError, require

if TYPE_CHECKING:  # pragma: no cover
    from a2o.config import DetectConfig
    from a2o.runtime import Runtime

__all__ = ["GroundedSam2Detector", "MAX_BOXES_PER_CLASS"]

log = logging.getLogger(__name__)

MAX_BOXES_PER_CLASS = 8  # per frame; bounds SAM2 work when a random or weak model fires everywhere
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def _checkpoint_identity(model: str) -> str:
    """A model id as is; a local dir as its path plus a digest of its config and file sizes.

    Hashing full weights would cost seconds for published checkpoints on every driver start; the
    config plus the weight files' names and sizes changes whenever a different model is saved there.
    """
    if not os.path.isdir(model):
        return model
    digest = hashlib.sha256()
    for name in sorted(os.listdir(model)):
        path = os.path.join(model, name)
        if not os.path.isfile(path):
            continue
        digest.update(name.encode())
        if name.endswith(".json"):
            with open(path, "rb") as fh:
                digest.update(fh.read())
        else:
            digest.update(str(os.path.getsize(path)).encode())
    return f"dir:{os.path.abspath(model)}:{digest.hexdigest()[:16]}"


class GroundedSam2Detector:
    """GroundingDINO + SAM2 from transformers, loaded once per instance on ``runtime.device``."""

    def __init__(
        self,
        grounding_dino: str,
        sam2: str,
        *,
        runtime: Runtime,
        box_threshold: float = 0.3,
        text_threshold: float = 0.25,
        detect_resolution: int = 0,
        frame_batch_size: int = 8,
        fingerprint: str,
    ):
        require("torch", "detect")
        transformers = require("transformers", "detect")
        self.runtime = runtime
        self.device = runtime.device
        self.box_threshold = float(box_threshold)
        self.text_threshold = float(text_threshold)
        self.detect_resolution = int(detect_resolution)
        self.frame_batch_size = int(frame_batch_size)
        self.fingerprint = fingerprint
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(grounding_dino)
        if not getattr(self.tokenizer, "is_fast", False):
            raise DetectionError(
                f"{grounding_dino}: GroundingDINO needs a fast tokenizer (offset mappings); "
                "save one with the checkpoint (tokenizer.json)"
            )
        self.gdino = transformers.GroundingDinoForObjectDetection.from_pretrained(grounding_dino)
        self.gdino.to(self.device).eval()
        self.sam2 = transformers.Sam2Model.from_pretrained(sam2)
        self.sam2.to(self.device).eval()
        self.max_text_len = int(self.gdino.config.max_text_len)
        self.sam2_size = int(self.sam2.config.prompt_encoder_config.image_size)
        self.last_prompt_count = 0  # prompts the last detect() needed (observability, tests)

    @classmethod
    def from_config(cls, detect_cfg: DetectConfig, runtime: Runtime) -> GroundedSam2Detector:
        return cls(
            detect_cfg.grounding_dino,
            detect_cfg.sam2,
            runtime=runtime,
            box_threshold=detect_cfg.box_threshold,
            text_threshold=detect_cfg.text_threshold,
            detect_resolution=detect_cfg.detect_resolution,
            fingerprint=cls.fingerprint_for(detect_cfg),
        )

    @staticmethod
    def fingerprint_for(detect_cfg: DetectConfig) -> str:
        """What changes the maps: both checkpoints, the thresholds, the resolution, the box cap."""
        fields = {
            "detector": "grounded_sam2",
            "version": 1,
            "grounding_dino": _checkpoint_identity(detect_cfg.grounding_dino),
            "sam2": _checkpoint_identity(detect_cfg.sam2),
            "box_threshold": detect_cfg.box_threshold,
            "text_threshold": detect_cfg.text_threshold,
            "detect_resolution": detect_cfg.detect_resolution,
            "max_boxes_per_class": MAX_BOXES_PER_CLASS,
        }
        return json.dumps(fields, sort_keys=True, separators=(",", ":"))

    # ------------------------------------------------------------------------------------------
    # prompts

    def _class_token_count(self, text: str) -> int:
        """Tokens a class costs inside a prompt: its own tokens plus the '.' separator."""
        return len(self.tokenizer(text + ".", add_special_tokens=False)["input_ids"])

    def prompts_for(self, class_texts: Sequence[str]) -> list[list[int]]:
        """Split class indices into prompts that each fit ``max_text_len`` tokens (greedy packing)."""
        budget = self.max_text_len - 2  # [CLS] and [SEP]
        groups: list[list[int]] = []
        current: list[int] = []
        used = 0
        for index, text in enumerate(class_texts):
            cost = self._class_token_count(text)
            if cost > budget:
                raise DetectionError(f"class {text!r} alone needs {cost} tokens; the limit is {budget}")
            if current and used + cost > budget:
                groups.append(current)
                current, used = [], 0
            current.append(index)
            used += cost
        if current:
            groups.append(current)
        return groups

    def _encode_prompt(self, texts: Sequence[str]):
        """Tokenise "a. b. c." and return (encoding, token->class index (L,) tensor, -1 elsewhere)."""
        import torch

        pieces, spans, cursor = [], [], 0
        for text in texts:
            spans.append((cursor, cursor + len(text)))
            pieces.append(text + ".")
            cursor += len(text) + 2  # "text" + "." + " "
        prompt = " ".join(pieces)
        encoding = self.tokenizer(prompt, return_offsets_mapping=True, return_tensors="pt")
        offsets = encoding.pop("offset_mapping")[0]  # (L, 2)
        if offsets.shape[0] > self.max_text_len:  # internal invariant of prompts_for
            raise AssertionError(f"prompt of {offsets.shape[0]} tokens exceeds {self.max_text_len}")
        token_class = torch.full((offsets.shape[0],), -1, dtype=torch.long)
        for c, (start, end) in enumerate(spans):
            inside = (offsets[:, 0] >= start) & (offsets[:, 1] <= end) & (offsets[:, 1] > offsets[:, 0])
            token_class[inside] = c
        return encoding, token_class

    # ------------------------------------------------------------------------------------------
    # models

    def _pixels(self, frames, size: int):
        """(B, H, W, 3) uint8 tensor -> normalised (B, 3, size, size) float32."""
        import torch
        import torch.nn.functional as F

        x = frames.permute(0, 3, 1, 2).to(torch.float32) / 255.0
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        mean = torch.tensor(_IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(_IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def _boxes(self, pixels, class_texts: Sequence[str]):
        """GroundingDINO on (B, 3, S, S): per class, per frame, a list of (xyxy in [0,1], score)."""
        import torch

        num_frames = pixels.shape[0]
        # boxes[b][c] -> list of (box (4,), score)
        boxes: list[list[list[tuple]]] = [[[] for _ in class_texts] for _ in range(num_frames)]
        for group in self.prompts_for(class_texts):
            encoding, token_class = self._encode_prompt([class_texts[i] for i in group])
            encoding = {k: v.to(self.device).expand(num_frames, -1) for k, v in encoding.items()}
            with self.runtime.autocast():
                outputs = self.gdino(pixel_values=pixels, **encoding)
            seq_len = token_class.shape[0]
            probs = outputs.logits[:, :, :seq_len].float().sigmoid()  # (B, Q, L)
            token_class = token_class.to(probs.device)
            # per class: max over its tokens -> (B, Q, Cg)
            class_scores = torch.stack(
                [probs[:, :, token_class == c].amax(dim=-1) for c in range(len(group))], dim=-1
            )
            # A box counts for every class whose own score passes both thresholds: overlapping
            # concepts ("person", "player") should both light up, and a class's boxes then do
            # not depend on which other classes share its prompt at this step.
            keep = (class_scores > self.box_threshold) & (class_scores > self.text_threshold)  # (B, Q, Cg)
            cxcywh = outputs.pred_boxes.float()  # (B, Q, 4) normalised
            xyxy = torch.cat([cxcywh[..., :2] - cxcywh[..., 2:] / 2, cxcywh[..., :2] + cxcywh[..., 2:] / 2], -1)
            xyxy, class_scores, keep = xyxy.clamp(0.0, 1.0).cpu(), class_scores.cpu(), keep.cpu()
            for b, q, g in torch.nonzero(keep).tolist():
                boxes[b][group[g]].append((xyxy[b, q], float(class_scores[b, q, g])))
        for per_frame in boxes:
            for c, found in enumerate(per_frame):
                found.sort(key=lambda item: -item[1])
                per_frame[c] = found[:MAX_BOXES_PER_CLASS]
        return boxes

    def _masks(self, frames, boxes, num_classes: int, out_size: int):
        """SAM2 masks -> maps (B, C, out_size, out_size) float32 (max of prob × box score)."""
        import torch
        import torch.nn.functional as F

        num_frames = frames.shape[0]
        maps = torch.zeros((num_frames, num_classes, out_size, out_size), dtype=torch.float32)
        counts = [sum(len(found) for found in per_frame) for per_frame in boxes]
        with_boxes = [b for b in range(num_frames) if counts[b] > 0]
        if not with_boxes:
            return maps
        max_boxes = max(counts)
        pixels = self._pixels(frames[with_boxes], self.sam2_size)  # (B', 3, S, S)
        # Pad each frame's box list to max_boxes by repeating its first box: a duplicate mask
        # cannot change a max, and one batched decoder call beats a call per frame.
        prompt_boxes = torch.zeros((len(with_boxes), max_boxes, 4))
        owners: list[list[tuple[int, float]]] = []
        for row, b in enumerate(with_boxes):
            items = [(c, box, score) for c, found in enumerate(boxes[b]) for box, score in found]
            owner = []
            for j in range(max_boxes):
                c, box, score = items[j] if j < len(items) else items[0]
                prompt_boxes[row, j] = box * self.sam2_size
                owner.append((c, score))
            owners.append(owner)
        with self.runtime.autocast():
            embeddings = self.sam2.get_image_embeddings(pixels.to(self.device))
            outputs = self.sam2(
                image_embeddings=embeddings,
                input_boxes=prompt_boxes.to(self.device),
                multimask_output=False,
            )
        logits = outputs.pred_masks[:, :, 0].float()  # (B', N, S/4, S/4)
        probs = F.interpolate(logits, size=(out_size, out_size), mode="bilinear", align_corners=False)
        probs = probs.sigmoid().cpu()  # (B', N, out, out)
        for row, b in enumerate(with_boxes):
            for j, (c, score) in enumerate(owners[row]):
                maps[b, c] = torch.maximum(maps[b, c], probs[row, j] * score)
        return maps

    # ------------------------------------------------------------------------------------------

    def detect(self, frames: np.ndarray, class_texts: Sequence[str], *, video: VideoMeta) -> np.ndarray:
        """frames (T, H, W, 3) uint8 -> maps (T, C, H, W) float32 in [0, 1]."""
        import torch

        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise DetectionError(f"frames must be (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
        num_frames, height, width = frames.shape[:3]
        if height != width:
            raise DetectionError(f"the frame grid is square; got {height}x{width} for {video.video_id}")
        texts = list(class_texts)
        self.last_prompt_count = len(self.prompts_for(texts)) if texts else 0
        maps = np.zeros((num_frames, len(texts), height, width), dtype=np.float32)
        if not texts:
            return maps
        detect_size = self.detect_resolution or height
        with torch.inference_mode():
            for start in range(0, num_frames, self.frame_batch_size):
                chunk = torch.from_numpy(np.ascontiguousarray(frames[start : start + self.frame_batch_size]))
                chunk = chunk.to(self.device)  # (B, H, W, 3) uint8
                boxes = self._boxes(self._pixels(chunk, detect_size), texts)
                chunk_maps = self._masks(chunk, boxes, len(texts), height)  # (B, C, H, W)
                maps[start : start + chunk.shape[0]] = chunk_maps.numpy()
        return np.clip(maps, 0.0, 1.0)
