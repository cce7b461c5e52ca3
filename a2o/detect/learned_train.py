"""Training the learned detector, and :func:`ensure_learned_detector`: train once per world, then reuse.

Recipe (:func:`train_learned_detector`): world spec (``dataset.json``) -> channels + lexicon
(:func:`a2o.detect.learned.world_channels`) -> the frame store's **train-split** frames, i.e. the
very pixels the detector sees at detection time, with targets from the annotation detector on the
same frames (it reads the manifest's masks and applies the frames' resize/crop, so every target is
pixel-aligned) -> :class:`~a2o.detect.learned.SegNet` trained with per-channel BCE + soft dice
(AdamW, linear warm-up then cosine decay, seeded init and data order) -> per-channel IoU on val at
threshold 0.5 -> :func:`~a2o.detect.learned.save_detector` (atomic).

Determinism: the weights depend only on the frames, the masks, the settings and ``seed`` (the init
runs under a forked, seeded torch RNG; the data order comes from a seeded generator), so on CPU two
runs with the same torch thread count give byte-identical ``model.safetensors`` (another thread
count changes float summation order, hence the last bits; the fingerprint holds the weights' sha256,
so the map cache never mixes the two).

Progress goes to the ``a2o.detect.learned`` logger: one line per epoch with the loss and the time
since training began.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from a2o.detect.base import VideoMeta
from a2o.detect.learned import (
    SegNet,
    is_trained,
    load_detector_weights,
    local_model_path,
    read_detector_metadata,
    save_detector,
    spec_sha256,
    unusable_folder_error,
    world_channels,
)
from a2o.errors import ConfigError, DetectorModelError
from a2o.progress import progress

if TYPE_CHECKING:  # pragma: no cover
    from a2o.config import DetectConfig, ExperimentConfig
    from a2o.data.framestore import FrameStore

__all__ = [
    "LearnedTrainSettings",
    "load_split",
    "channel_iou",
    "train_learned_detector",
    "epochs_to_run",
    "ensure_learned_detector",
    "check_learned_pairing",
]

# One logger for the learned detector, whether it trains or detects.
log = logging.getLogger("a2o.detect.learned")

_LOCK_STALE_S = 600.0  # a lock not refreshed (once per epoch) for this long is abandoned


@dataclass(frozen=True)
class LearnedTrainSettings:
    """Everything besides the data that decides the trained weights (``detect.learned_*``)."""

    epochs: int = 5
    """Passes over the train split's frames (more when ``min_steps`` asks for them)."""
    min_steps: int = 300
    """Fewest optimiser steps: a small world repeats its frames until then. Objects are
    discovered suddenly after a few hundred steps; 5 epochs of a 300-clip world give ~400, but
    of the 16-clip 'tiny' world only 20, which left every object at IoU 0."""
    width: int = 32
    """Channels of the network's half-resolution trunk."""
    lr: float = 1e-2
    """Peak AdamW learning rate."""
    batch_size: int = 32
    """Frames per optimiser step."""
    seed: int = 0
    """Seeds the weight init and the data order."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    dice_weight: float = 1.0
    """Weight of the soft dice term next to BCE: small objects cover few pixels, and BCE alone
    learns to predict 'nothing' for them; dice rewards overlap per channel."""
    warmup_fraction: float = 0.05
    """Share of steps with linear warm-up before the cosine decay."""

    @classmethod
    def from_config(cls, detect_cfg: DetectConfig) -> LearnedTrainSettings:
        return cls(
            epochs=detect_cfg.learned_epochs,
            min_steps=detect_cfg.learned_min_steps,
            width=detect_cfg.learned_width,
            lr=detect_cfg.learned_lr,
            batch_size=detect_cfg.learned_batch_size,
            seed=detect_cfg.learned_seed,
        )

    def training_json(self) -> dict[str, Any]:
        """The settings as stored in ``detector.json["training"]`` (the seed is stored on its own)."""
        values = dataclasses.asdict(self)
        values.pop("seed")
        values["loss"] = "bce+dice_sq"
        return values


# ----------------------------------------------------------------------------------------------
# data


def load_split(store: FrameStore, split: str, channels: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The frames of one split and their pixel-aligned targets, as uint8 tensors.

    Returns ``(frames (N, 3, S, S) uint8, targets (N, K, S, S) uint8 = round(255 * mask), clips)``
    with N = clips x T, in video-id order. Targets come from the annotation detector on the stored
    frames, so they get exactly the frames' resize and crop.
    """
    from a2o.detect.annotation import AnnotationDetector

    manifest = store.manifest()
    rows = sorted(
        (r for r in manifest.select(["video_id", "split", "boxes", "masks_uri"]).to_pylist()
         if r["split"] == split and r["video_id"] in store),
        key=lambda r: r["video_id"],
    )
    annotator = AnnotationDetector()
    frames, targets = [], []
    for row in rows:
        record = store.read(row["video_id"])
        meta = VideoMeta(
            video_id=row["video_id"],
            frame_indices=np.asarray(record.frame_indices, dtype=np.int64),
            source_height=int(record.source_height),
            source_width=int(record.source_width),
            boxes=row["boxes"],
            masks_uri=row["masks_uri"],
        )
        masks = annotator.detect(record.frames, list(channels), video=meta)  # (T, K, S, S) float32
        frames.append(torch.from_numpy(record.frames).permute(0, 3, 1, 2))  # (T, 3, S, S) uint8
        targets.append(torch.from_numpy(np.rint(masks * 255.0).astype(np.uint8)))
    if not rows:
        return torch.empty(0, 3, 0, 0, dtype=torch.uint8), torch.empty(0, len(channels), 0, 0, dtype=torch.uint8), 0
    return torch.cat(frames), torch.cat(targets), len(rows)


# ----------------------------------------------------------------------------------------------
# training


def _dice_loss(probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Soft dice per channel over the batch, averaged: (N, K, H, W) x 2 -> scalar.

    Squared terms in the denominator (V-Net's form), on purpose: with plain sums, the many
    background pixels at a small probability add up to more than the object's few pixels, so the
    gradient that should grow an object's map is divided by that sum and objects stayed at IoU 0
    for hundreds of steps (measured: object mean val IoU 0.00 -> 0.60 on the household world,
    3 epochs, batch 32). Squared, a 0.05 background contributes 0.0025 per pixel.
    """
    dims = (0, 2, 3)
    intersection = (probs * targets).sum(dims)
    total = probs.square().sum(dims) + targets.square().sum(dims)
    return (1.0 - (2.0 * intersection + 1.0) / (total + 1.0)).mean()


def _schedule(total_steps: int, warmup_fraction: float) -> Callable[[int], float]:
    warmup = max(1, int(total_steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def epochs_to_run(num_frames: int, settings: LearnedTrainSettings) -> int:
    """``settings.epochs``, or more when that many passes give fewer than ``settings.min_steps`` steps."""
    steps_per_epoch = max(1, math.ceil(num_frames / settings.batch_size))
    return max(settings.epochs, math.ceil(settings.min_steps / steps_per_epoch))


def _fit(
    frames: torch.Tensor,
    targets: torch.Tensor,
    settings: LearnedTrainSettings,
    device: torch.device,
    on_epoch: Callable[[int], None] | None,
) -> tuple[SegNet, list[dict[str, float]]]:
    """Train a SegNet on (N, 3, S, S) / (N, K, S, S) uint8 tensors; returns it and a per-epoch log."""
    num_items = frames.shape[0]
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
        torch.manual_seed(settings.seed)
        network = SegNet(targets.shape[1], width=settings.width)
    network.to(device).train()
    order_rng = torch.Generator().manual_seed(settings.seed)
    optimizer = torch.optim.AdamW(network.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    steps_per_epoch = math.ceil(num_items / settings.batch_size)
    num_epochs = epochs_to_run(num_items, settings)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _schedule(num_epochs * steps_per_epoch, settings.warmup_fraction)
    )
    history = []
    started = time.perf_counter()
    with progress(num_epochs, "training the learned detector", log, unit="epochs") as bar:
        for epoch in range(1, num_epochs + 1):
            order = torch.randperm(num_items, generator=order_rng)
            loss_sum = 0.0
            for start in range(0, num_items, settings.batch_size):
                index = order[start : start + settings.batch_size]
                x = frames[index].to(device).float().div_(255.0)  # (B, 3, S, S)
                y = targets[index].to(device).float().div_(255.0)  # (B, K, S, S)
                logits = network(x)  # (B, K, S, S)
                loss = F.binary_cross_entropy_with_logits(logits, y)
                if settings.dice_weight > 0:
                    loss = loss + settings.dice_weight * _dice_loss(torch.sigmoid(logits), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                loss_sum += float(loss.detach()) * len(index)
            elapsed = time.perf_counter() - started
            history.append({"epoch": epoch, "loss": loss_sum / num_items, "elapsed_s": round(elapsed, 3)})
            log.debug("learned detector: epoch %d/%d loss %.4f (%.1f s elapsed)", epoch, num_epochs,
                      loss_sum / num_items, elapsed)
            bar.update(1, postfix=f"loss {loss_sum / num_items:.3f}")
            if on_epoch is not None:
                on_epoch(epoch)
    return network.eval(), history


def channel_iou(
    network: SegNet, frames: torch.Tensor, targets: torch.Tensor, channels: Sequence[str], *,
    device: torch.device | None = None, batch_size: int = 256,
) -> dict[str, float | None]:
    """Per-channel IoU at threshold 0.5 (prediction and target), pooled over every pixel given.

    A channel that neither the targets nor the predictions show anywhere has no IoU: None.
    """
    device = device or torch.device("cpu")
    intersection = torch.zeros(len(channels), dtype=torch.float64)
    union = torch.zeros(len(channels), dtype=torch.float64)
    network.eval()
    with torch.inference_mode():
        for start in range(0, frames.shape[0], batch_size):
            x = frames[start : start + batch_size].to(device).float().div_(255.0)
            predicted = (network(x) > 0).cpu()  # logit > 0  <=>  probability > 0.5; (B, K, S, S)
            truth = targets[start : start + batch_size] >= 128  # mask >= 0.5
            intersection += (predicted & truth).sum((0, 2, 3)).double()
            union += (predicted | truth).sum((0, 2, 3)).double()
    return {
        name: (round(float(i / u), 4) if u > 0 else None)
        for name, i, u in zip(channels, intersection.tolist(), union.tolist(), strict=True)
    }


def train_learned_detector(
    store: FrameStore,
    info: Mapping[str, Any],
    model_dir: str,
    settings: LearnedTrainSettings,
    *,
    device: torch.device | str | None = None,
    on_epoch: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Train on ``store``'s train split for the world ``info`` (its dataset.json) and save to ``model_dir``.

    Returns the metadata written to ``detector.json``. ``model_dir`` must not exist yet.
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    channels, lexicon = world_channels(info)
    load_started = time.perf_counter()
    train_frames, train_targets, train_clips = load_split(store, "train", channels)
    val_frames, val_targets, val_clips = load_split(store, "val", channels)
    load_seconds = time.perf_counter() - load_started
    if train_clips == 0:
        raise DetectorModelError(
            f"the frame store {store.root_uri} holds no train-split clips to train the learned detector "
            "on: run `a2o data prepare --config <your config>` first"
        )
    log.info(
        "learned detector: training on %d train clips (%d frames, %d px), %d channels, %d epochs, "
        "loaded in %.1f s", train_clips, train_frames.shape[0], train_frames.shape[-1], len(channels),
        epochs_to_run(int(train_frames.shape[0]), settings), load_seconds,
    )
    started = time.perf_counter()
    network, history = _fit(train_frames, train_targets, settings, device, on_epoch)
    training_seconds = time.perf_counter() - started
    if val_clips:
        val_iou = channel_iou(network, val_frames, val_targets, channels, device=device)
    else:
        log.warning("learned detector: the frame store has no val clips; no IoU is reported")
        val_iou = {}
    scored = [v for v in val_iou.values() if v is not None]
    mean_iou = round(sum(scored) / len(scored), 4) if scored else None
    log.info(
        "learned detector: trained in %.1f s; val IoU (threshold 0.5) mean %s: %s", training_seconds,
        mean_iou, ", ".join(f"{k} {v}" for k, v in val_iou.items()),
    )
    meta = {
        "channels": channels,
        "lexicon": lexicon,
        "architecture": {"name": "segnet", "width": settings.width},
        "training": settings.training_json(),
        "seed": settings.seed,
        "train_resolution": int(train_frames.shape[-1]),
        "spec_sha256": spec_sha256(info),
        "data": {
            "frame_store": store.root_uri,
            "train_clips": train_clips,
            "train_frames": int(train_frames.shape[0]),
            "val_clips": val_clips,
            "val_frames": int(val_frames.shape[0]),
        },
        "val_iou": val_iou,
        "val_mean_iou": mean_iou,
        "epochs_run": len(history),
        "epochs_log": history,
        "training_seconds": round(training_seconds, 3),
        "load_seconds": round(load_seconds, 3),
        "device": str(device),
    }
    return save_detector(model_dir, network.state_dict(), meta)


# ----------------------------------------------------------------------------------------------
# ensure: train once, reuse afterwards


def _lock_abandoned(lock_path: str) -> bool:
    """A lock whose holder died on this host, or that nobody refreshed for ``_LOCK_STALE_S``."""
    try:
        age = time.time() - os.path.getmtime(lock_path)
    except FileNotFoundError:
        return False  # released meanwhile: the caller retries
    try:
        with open(lock_path, encoding="utf-8") as fh:
            holder = json.load(fh)
        if holder.get("host") == os.uname().nodename:
            os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return True
    except (OSError, ValueError, KeyError, TypeError):
        pass  # half-written lock, or another user's process: trust the age
    return age > _LOCK_STALE_S


def _break_abandoned_lock(lock_path: str) -> bool:
    """Remove an abandoned lock; True when this caller removed it.

    Two waiters can both judge the same dead lock abandoned. Without care the slower one would
    remove the lock the faster one has just taken, and both would train. So breaking is itself
    exclusive (``<lock>.break``, ``O_EXCL``) and the lock is judged again under it. A ``.break``
    file older than a minute was left by a process that died mid-break and is removed.
    """
    breaker = lock_path + ".break"
    try:
        fd = os.open(breaker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        with contextlib.suppress(FileNotFoundError):
            if time.time() - os.path.getmtime(breaker) > 60.0:
                os.remove(breaker)
        return False
    os.close(fd)
    try:
        if not _lock_abandoned(lock_path):  # someone broke it and took it meanwhile
            return False
        log.warning("learned detector: breaking the abandoned training lock %s", lock_path)
        with contextlib.suppress(FileNotFoundError):
            os.remove(lock_path)
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(breaker)


def _refresh_lock(lock_path: str) -> None:
    """Touch the lock once per epoch so that waiters do not judge it abandoned."""
    try:
        os.utime(lock_path)
    except FileNotFoundError:
        log.warning(
            "learned detector: the training lock %s was removed while training; another process "
            "may start training the same folder", lock_path,
        )


@contextlib.contextmanager
def _training_lock(model_dir: str, *, poll_s: float = 1.0, wait_s: float = 6 * 3600.0) -> Iterator[str]:
    """Hold ``<model_dir>.lock`` (``O_CREAT | O_EXCL``, holder pid inside) while training."""
    lock_path = model_dir.rstrip("/") + ".lock"
    os.makedirs(os.path.dirname(os.path.abspath(lock_path)), exist_ok=True)
    deadline = time.monotonic() + wait_s
    waited = False
    while True:
        try:
            fd = os.open(lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if _lock_abandoned(lock_path) and _break_abandoned_lock(lock_path):
                continue
            if time.monotonic() > deadline:
                raise DetectorModelError(
                    f"waited {wait_s:.0f} s for another process training the learned detector at "
                    f"{model_dir}; if none is running, delete {lock_path} and rerun"
                ) from None
            if not waited:
                log.info("learned detector: another process is training %s; waiting for it", model_dir)
                waited = True
            time.sleep(poll_s)
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps({"pid": os.getpid(), "host": os.uname().nodename, "time": time.time()}))
        break
    try:
        yield lock_path
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(lock_path)


def _reuse(model_dir: str, spec: str, settings: LearnedTrainSettings) -> str:
    """Check a trained folder before reusing it: intact, same world; settings drift is a warning."""
    meta = read_detector_metadata(model_dir)
    load_detector_weights(model_dir, meta)  # raises when the weights are damaged
    if meta["spec_sha256"] != spec:
        raise DetectorModelError(
            f"the learned detector at {model_dir} was trained on another world (spec sha256 "
            f"{meta['spec_sha256'][:12]}, the dataset now has {spec[:12]}); delete that folder and rerun "
            "`a2o data prepare --config <your config>`, or set detect.learned_model to another folder"
        )
    if meta["training"] != settings.training_json() or meta["seed"] != settings.seed:
        log.warning(
            "learned detector at %s was trained with %s (seed %s), not the configured %s (seed %s); "
            "using it as it is", model_dir, meta["training"], meta["seed"], settings.training_json(),
            settings.seed,
        )
    log.info("reusing learned detector at %s (val mean IoU %s)", model_dir, meta.get("val_mean_iou"))
    return model_dir


def check_learned_pairing(cfg: ExperimentConfig) -> None:
    """``detect.detector: learned`` needs A2O-Synth: it is trained on the generator's masks."""
    if cfg.detect.detector == "learned" and cfg.data.dataset != "synthetic":
        raise ConfigError(
            f"detect.detector: 'learned' is trained on A2O-Synth's ground-truth masks, but data.dataset "
            f"is {cfg.data.dataset!r}; use detect.detector: grounded_sam2 (open vocabulary) for this "
            "dataset, or annotation for oracle maps from its boxes"
        )


def ensure_learned_detector(cfg: ExperimentConfig, *, device: torch.device | str | None = None) -> str | None:
    """Train the configured learned detector into ``detect.learned_model`` unless it is there.

    A no-op returning None unless ``detect.detector`` is ``learned``; otherwise returns the folder.
    Needs the frame store (call it after ``prepare_frame_store``). Two processes never train the
    same folder at once: the second waits on ``<folder>.lock`` and then reuses the first's result.
    ``device`` is where training runs (the entry point picks; default CPU).
    """
    if cfg.detect.detector != "learned":
        return None
    check_learned_pairing(cfg)
    if not cfg.detect.learned_model:
        raise ConfigError(
            "detect.learned_model: empty; load the config with a2o.config.load_config (or pass it "
            "through a2o.config.resolve_paths), which sets it to <storage.root>/detectors/<key>"
        )
    model_dir = local_model_path(cfg.detect.learned_model)
    from a2o.data.framestore import FrameStore, grid_key
    from a2o.data.synthetic import load_dataset_info

    info = load_dataset_info(cfg.data.root)
    spec = spec_sha256(info)
    settings = LearnedTrainSettings.from_config(cfg.detect)
    if is_trained(model_dir):
        return _reuse(model_dir, spec, settings)
    with _training_lock(model_dir) as lock_path:
        if is_trained(model_dir):  # another process finished while we waited
            return _reuse(model_dir, spec, settings)
        if os.path.exists(model_dir):
            raise unusable_folder_error(model_dir, "the folder exists but holds no detector.json")
        store = FrameStore(cfg.storage.path("frames", grid_key(cfg.data)))
        log.info("training the learned detector into %s", model_dir)
        train_learned_detector(
            store, info, model_dir, settings, device=device,
            on_epoch=lambda _epoch: _refresh_lock(lock_path),
        )
    return model_dir
