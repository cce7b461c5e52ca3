"""The learned detector: a small segmentation network trained on a world's masks, that sees pixels.

Why it exists: the annotation detector reads ground-truth masks, so a served model gets empty maps
for an uploaded video. This detector is trained once per A2O-Synth world on the train split's
frames and masks (:mod:`a2o.detect.learned_train`), and search, final evaluation and serving all
use the same trained folder, so the maps a model learned from are the maps it gets in production.

Network: one output channel per *world channel* (every object, the agent "hand" included, and every
scene region), sigmoid probabilities. Class texts reach channels through the world's **lexicon**:
``{normalised text: [[channel, weight], ...]}``; a canonical name or a synonym maps to its channel
at weight 1, a hypernym ("utensil") to each member channel at a reduced weight. The map of a text
is ``max over its (channel, weight) of weight * prob(channel)``, so a hypernym's map is a weaker
version of its members'. A simple plural ("balls", "boxes") of a known text is accepted.

A text the world does not know gets an **all-zero map**, on purpose: that is what a thresholded
open-vocabulary detector (Grounded SAM2) returns for a concept that is not in the scene, and any
other choice (seeded noise, a "closest" channel) would add a penalty or a cue unrelated to what
the word means, which is exactly what the search must be able to judge.

Folder layout (written atomically: temp folder, then rename; ``detector.json`` is written last)::

    DIR/model.safetensors   the network's weights
    DIR/detector.json       format version, channels, lexicon, architecture, training settings,
                            seed, train resolution, sha256 of the world spec (dataset.json), sha256
                            of model.safetensors, per-channel val IoU, training seconds

The fingerprint (:func:`learned_fingerprint`) is built from ``detector.json``'s content (spec
sha256, seed, training settings, channels, lexicon, weights sha256, format version), never from
the path, so a copy of the folder (``best/detector/``) shares the map cache with the original.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from a2o.detect.base import VideoMeta
from a2o.detect.classes import normalise_text
from a2o.errors import DetectionError, DetectorModelError

if TYPE_CHECKING:  # pragma: no cover
    from a2o.config import DetectConfig
    from a2o.runtime import Runtime

__all__ = [
    "SegNet",
    "Lexicon",
    "LearnedDetector",
    "world_channels",
    "normalise_text",
    "spec_sha256",
    "read_detector_metadata",
    "load_detector_weights",
    "save_detector",
    "is_trained",
    "local_model_path",
    "unusable_folder_error",
    "learned_fingerprint",
    "fingerprint_of_dir",
    "FORMAT",
    "FORMAT_VERSION",
    "META_FILE",
    "WEIGHTS_FILE",
]

log = logging.getLogger(__name__)

FORMAT = "a2o-learned-detector"
FORMAT_VERSION = 1
META_FILE = "detector.json"  # the completion marker: written last
WEIGHTS_FILE = "model.safetensors"
_REQUIRED_KEYS = (
    "format", "format_version", "channels", "lexicon", "architecture", "training", "seed",
    "train_resolution", "spec_sha256", "weights_sha256",
)


# ----------------------------------------------------------------------------------------------
# the network


class ConvBNReLU(nn.Sequential):
    """3x3 conv (no bias: BN follows) + BatchNorm + ReLU; ``padding = dilation`` keeps the size."""

    def __init__(self, in_channels: int, out_channels: int, *, stride: int = 1, dilation: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class SegNet(nn.Module):
    """RGB frame -> one logit map per world channel.

    A two-scale U-Net with dilated context. The full-resolution stem sees colours and edges (the
    objects are a few pixels wide); the half-resolution trunk (dilations 1, 2, 4) and a global
    pooled branch see which region the background is and what surrounds a pixel; the trunk is
    upsampled and added to the stem's skip so masks keep their edges. About 40k parameters at
    width 32: it trains in about a minute on two CPU cores for a few hundred clips at 32 px.

    Args:
        num_channels: K, world channels (outputs).
        width: channels of the half-resolution trunk (the stem has half as many).
    """

    def __init__(self, num_channels: int, width: int = 32) -> None:
        super().__init__()
        if num_channels < 1 or width < 4:
            raise ValueError(f"SegNet needs num_channels >= 1 and width >= 4; got {num_channels}, {width}")
        stem = max(width // 2, 4)
        self.stem = nn.Sequential(ConvBNReLU(3, stem), ConvBNReLU(stem, stem))
        self.down = ConvBNReLU(stem, width, stride=2)
        self.context = nn.Sequential(
            ConvBNReLU(width, width, dilation=1),
            ConvBNReLU(width, width, dilation=2),
            ConvBNReLU(width, width, dilation=4),
        )
        self.scene = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(width, width, 1), nn.ReLU(inplace=True))
        self.reduce = nn.Conv2d(width, stem, 1)  # before the upsampling: 4x fewer pixels to mix
        self.fuse = ConvBNReLU(stem, stem)
        self.head = nn.Conv2d(stem, num_channels, 1)
        # Start every channel at a 5 % prior, not 50 %: most pixels of most channels are empty, and
        # a balanced start spends the first epoch just learning that (RetinaNet's prior init).
        nn.init.constant_(self.head.bias, -math.log((1 - 0.05) / 0.05))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) float in [0, 1] -> logits (N, K, H, W); H and W even."""
        x = (frames - 0.5) / 0.25
        skip = self.stem(x)  # (N, w/2, H, W)
        deep = self.context(self.down(skip))  # (N, w, H/2, W/2)
        deep = deep + self.scene(deep)  # (N, w, 1, 1) broadcast: scene-wide context
        up = F.interpolate(self.reduce(deep), size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.head(self.fuse(skip + up))  # (N, w/2, H, W) -> (N, K, H, W)


# ----------------------------------------------------------------------------------------------
# text -> channels


def world_channels(info: Mapping[str, Any]) -> tuple[list[str], dict[str, list[list[Any]]]]:
    """(channels, lexicon) of a world from its ``dataset.json`` (``load_dataset_info(root)``).

    A world spec that lists ``"channels"`` (every object, the agent included, and every region, in
    a fixed order) and a ``"lexicon"`` (``{text: [[channel, weight], ...]}``) is used as is. An
    older dataset.json without them gets the flattened values of ``info["vocabulary"]`` (agents,
    manipulated, distractors, regions) and the identity lexicon at weight 1.
    """
    if "channels" in info:
        channels = [normalise_text(c) for c in info["channels"]]
        raw_lexicon = info.get("lexicon") or {}
    else:
        vocabulary = info.get("vocabulary")
        if not isinstance(vocabulary, Mapping) or not vocabulary:
            raise DetectorModelError(
                "dataset.json lists neither 'channels' nor 'vocabulary': it is not an A2O-Synth world; "
                "regenerate it with `a2o data synth`"
            )
        channels = []
        for names in vocabulary.values():
            channels.extend(normalise_text(n) for n in names if normalise_text(n) not in channels)
        raw_lexicon = {}
    lexicon = Lexicon.build(channels, raw_lexicon)
    return list(lexicon.channels), lexicon.to_json()


@dataclass(frozen=True)
class Lexicon:
    """Normalised text -> ((channel index, weight), ...); every channel name maps to itself at 1."""

    channels: tuple[str, ...]
    entries: Mapping[str, tuple[tuple[int, float], ...]]

    @classmethod
    def build(cls, channels: Sequence[str], lexicon: Mapping[str, Any]) -> Lexicon:
        """Validate ``channels`` (unique, non-empty) and ``lexicon`` (known channels, weights in (0, 1])."""
        names = tuple(normalise_text(c) for c in channels)
        if not names or any(not n for n in names) or len(set(names)) != len(names):
            raise DetectorModelError(f"world channels must be unique, non-empty names; got {list(channels)}")
        index = {name: i for i, name in enumerate(names)}
        entries: dict[str, tuple[tuple[int, float], ...]] = {name: ((i, 1.0),) for i, name in enumerate(names)}
        for text, targets in dict(lexicon).items():
            key = normalise_text(text)
            try:
                pairs = tuple((index[normalise_text(ch)], float(w)) for ch, w in targets)
            except KeyError as exc:
                raise DetectorModelError(
                    f"lexicon entry {text!r} names channel {exc.args[0]!r}, which is not one of {list(names)}"
                ) from None
            except (TypeError, ValueError):
                raise DetectorModelError(
                    f"lexicon entry {text!r} must be a list of [channel, weight] pairs, got {targets!r}"
                ) from None
            if not key or not pairs or any(not 0.0 < w <= 1.0 for _, w in pairs):
                raise DetectorModelError(
                    f"lexicon entry {text!r}: need a non-empty text and weights in (0, 1], got {targets!r}"
                )
            entries[key] = pairs
        return cls(names, entries)

    def lookup(self, text: str) -> tuple[tuple[int, float], ...]:
        """The (channel, weight) pairs of a text, accepting a plural ('balls', 'boxes'); () if unknown."""
        key = normalise_text(text)
        if key in self.entries:
            return self.entries[key]
        for suffix in ("es", "s"):
            if key.endswith(suffix) and key[: -len(suffix)] in self.entries:
                return self.entries[key[: -len(suffix)]]
        return ()

    def to_json(self) -> dict[str, list[list[Any]]]:
        return {text: [[self.channels[i], w] for i, w in pairs] for text, pairs in sorted(self.entries.items())}


def spec_sha256(info: Mapping[str, Any]) -> str:
    """sha256 of a world spec (the dataset.json content), canonical JSON so key order does not matter."""
    return hashlib.sha256(json.dumps(info, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


# ----------------------------------------------------------------------------------------------
# the folder


def local_model_path(model_dir: str) -> str:
    """The local path of a model folder; an empty value or a remote URI is a clear error."""
    if not model_dir:
        raise DetectorModelError(
            "detect.learned_model is empty: load the config with a2o.config.load_config (or pass it "
            "through a2o.config.resolve_paths), which sets it to <storage.root>/detectors/<key>"
        )
    if "://" in model_dir:
        if model_dir.startswith("file://"):
            return model_dir[len("file://"):]
        raise DetectorModelError(
            f"learned detector folder {model_dir}: only local paths are supported so far; put "
            "storage.root (or detect.learned_model) on a local or mounted filesystem"
        )
    return model_dir


def unusable_folder_error(model_dir: str, what: str) -> DetectorModelError:
    """The error for a half-written or damaged folder: names it, what is wrong, and the fix."""
    return DetectorModelError(
        f"learned detector at {model_dir} is unusable ({what}); delete that folder and rerun "
        "`a2o data prepare --config <your config>` (a search also retrains it first)"
    )


def is_trained(model_dir: str) -> bool:
    """Whether ``model_dir`` holds the completion marker (not whether it is intact)."""
    return os.path.isfile(os.path.join(local_model_path(model_dir), META_FILE))


def read_detector_metadata(model_dir: str) -> dict[str, Any]:
    """``detector.json`` of a trained folder, checked; raises :class:`DetectorModelError` naming the fix."""
    path = local_model_path(model_dir)
    meta_path = os.path.join(path, META_FILE)
    if not os.path.isfile(meta_path):
        if os.path.isdir(path):
            raise unusable_folder_error(model_dir, f"{META_FILE} is missing: training did not finish")
        raise DetectorModelError(
            f"no trained learned detector at {model_dir}: train it with `a2o data prepare --config "
            "<your config>` (detect.detector: learned), or start the search, which trains it first"
        )
    try:
        with open(meta_path, encoding="utf-8") as fh:
            meta = json.load(fh)
    except (OSError, ValueError) as exc:
        raise unusable_folder_error(model_dir, f"{META_FILE} is not readable JSON: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise unusable_folder_error(model_dir, f"{META_FILE} is not an {FORMAT} file")
    if meta.get("format_version") != FORMAT_VERSION:
        raise unusable_folder_error(
            model_dir, f"format version {meta.get('format_version')!r}, this A2O reads {FORMAT_VERSION}"
        )
    missing = [key for key in _REQUIRED_KEYS if key not in meta]
    if missing:
        raise unusable_folder_error(model_dir, f"{META_FILE} lacks {missing}")
    return meta


def load_detector_weights(model_dir: str, meta: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The state dict in ``model.safetensors``, after checking its sha256 against ``detector.json``."""
    from safetensors import SafetensorError
    from safetensors.torch import load as load_safetensors

    weights_path = os.path.join(local_model_path(model_dir), WEIGHTS_FILE)
    try:
        with open(weights_path, "rb") as fh:
            payload = fh.read()
    except OSError as exc:
        raise unusable_folder_error(model_dir, f"cannot read {WEIGHTS_FILE}: {exc}") from exc
    if hashlib.sha256(payload).hexdigest() != meta["weights_sha256"]:
        raise unusable_folder_error(model_dir, f"{WEIGHTS_FILE} does not match the sha256 in {META_FILE}")
    try:
        return load_safetensors(payload)
    except (SafetensorError, ValueError) as exc:  # pragma: no cover - sha256 checked first
        raise unusable_folder_error(model_dir, f"{WEIGHTS_FILE} is not a safetensors file: {exc}") from exc


def save_detector(model_dir: str, state_dict: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> dict[str, Any]:
    """Write weights + ``detector.json`` into a temp folder, then rename it to ``model_dir``.

    ``detector.json`` is written last and the folder appears whole or not at all, so a crash
    never leaves a folder that looks trained. Returns the metadata as written (with the weights'
    sha256). ``model_dir`` must not exist yet (the caller holds the training lock).
    """
    from safetensors.torch import save as save_safetensors

    path = local_model_path(model_dir).rstrip("/")
    parent, name = os.path.split(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".tmp-{name}-{os.getpid()}-{os.urandom(4).hex()}")
    os.makedirs(tmp)
    try:
        payload = save_safetensors({k: v.detach().cpu().contiguous() for k, v in state_dict.items()})
        with open(os.path.join(tmp, WEIGHTS_FILE), "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        written = {**meta, "format": FORMAT, "format_version": FORMAT_VERSION,
                   "weights_sha256": hashlib.sha256(payload).hexdigest()}
        with open(os.path.join(tmp, META_FILE), "w", encoding="utf-8") as fh:
            json.dump(written, fh, indent=2, sort_keys=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.rename(tmp, path)  # atomic on one filesystem; fails if path exists (never overwrites)
    except BaseException:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return written


def learned_fingerprint(meta: Mapping[str, Any]) -> str:
    """The detector's fingerprint from its metadata: content only, so a copied folder matches."""
    lexicon_sha = hashlib.sha256(json.dumps(meta["lexicon"], sort_keys=True).encode("utf-8")).hexdigest()
    fields = {
        "detector": "learned",
        "format_version": meta["format_version"],
        "spec_sha256": meta["spec_sha256"],
        "seed": meta["seed"],
        "training": meta["training"],
        "architecture": meta["architecture"],
        "train_resolution": meta["train_resolution"],
        "channels": list(meta["channels"]),
        "lexicon_sha256": lexicon_sha,
        "weights_sha256": meta["weights_sha256"],
    }
    return json.dumps(fields, sort_keys=True, separators=(",", ":"))


def fingerprint_of_dir(model_dir: str) -> str:
    """:func:`learned_fingerprint` of a trained folder (reads only ``detector.json``)."""
    return learned_fingerprint(read_detector_metadata(model_dir))


# ----------------------------------------------------------------------------------------------
# the detector


class LearnedDetector:
    """Frames -> per-world-channel probabilities -> one map per class text via the lexicon.

    Args:
        model_dir: a trained folder (see module docstring).
        device: where the network runs (the caller picks; default CPU).
        batch_frames: frames per forward pass.
    """

    def __init__(self, model_dir: str, *, device: torch.device | str | None = None, batch_frames: int = 256):
        meta = read_detector_metadata(model_dir)
        state_dict = load_detector_weights(model_dir, meta)
        self.model_dir = model_dir
        self.metadata = meta
        self.lexicon = Lexicon.build(meta["channels"], meta["lexicon"])
        self.train_resolution = int(meta["train_resolution"])
        self.batch_frames = max(int(batch_frames), 1)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        network = SegNet(len(self.lexicon.channels), width=int(meta["architecture"]["width"]))
        try:
            network.load_state_dict(state_dict)
        except RuntimeError as exc:
            raise unusable_folder_error(model_dir, f"weights do not fit the architecture in {META_FILE}: {exc}") from exc
        self.network = network.to(self.device).eval()
        self.fingerprint = learned_fingerprint(meta)

    @classmethod
    def from_config(cls, detect_cfg: DetectConfig, runtime: Runtime | None = None) -> LearnedDetector:
        return cls(detect_cfg.learned_model, device=runtime.device if runtime is not None else None)

    @staticmethod
    def fingerprint_for(detect_cfg: DetectConfig) -> str:
        """Content, not path: built from the trained folder's detector.json (world spec, seed,
        training settings, weights sha256), so a copy such as best/detector/ matches. Raises
        DetectorModelError (saying how to train it) when the folder is not trained yet."""
        return fingerprint_of_dir(detect_cfg.learned_model)

    @property
    def channels(self) -> tuple[str, ...]:
        return self.lexicon.channels

    def channel_probabilities(self, frames: np.ndarray) -> np.ndarray:
        """frames (T, H, W, 3) uint8 -> probabilities (T, K, H, W) float32, one per world channel.

        Frames of another size are resized to the training resolution, and the maps back.
        """
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise DetectionError(f"frames must be (T, H, W, 3), got {frames.shape}")
        num_frames, height, width = frames.shape[:3]
        size = self.train_resolution
        outputs = []
        with torch.inference_mode():
            for start in range(0, num_frames, self.batch_frames):
                chunk = torch.from_numpy(np.ascontiguousarray(frames[start : start + self.batch_frames]))
                x = chunk.to(self.device).permute(0, 3, 1, 2).float().div_(255.0)  # (N, 3, H, W)
                if (height, width) != (size, size):
                    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                                      antialias=min(height, width) > size)
                probs = torch.sigmoid(self.network(x).float())  # (N, K, S, S)
                if (height, width) != (size, size):
                    probs = F.interpolate(probs, size=(height, width), mode="bilinear", align_corners=False,
                                          antialias=size > min(height, width))
                outputs.append(probs.clamp_(0.0, 1.0).cpu())
        if not outputs:
            return np.zeros((0, len(self.channels), height, width), dtype=np.float32)
        return torch.cat(outputs).numpy()

    def detect(self, frames: np.ndarray, class_texts: Sequence[str], *, video: VideoMeta) -> np.ndarray:
        """frames (T, H, W, 3) uint8 -> maps (T, C, H, W) float32 in [0, 1]; unknown texts give zeros."""
        probs = self.channel_probabilities(frames)  # (T, K, H, W)
        maps = np.zeros((probs.shape[0], len(class_texts), *probs.shape[2:]), dtype=np.float32)
        for c, text in enumerate(class_texts):
            for channel, weight in self.lexicon.lookup(text):
                np.maximum(maps[:, c], weight * probs[:, channel], out=maps[:, c])
        return maps
