"""The per-worker training loop run by Ray Train's ``TorchTrainer`` (one call per DDP rank).

Recipe: setup (device, precision, seed, data, model, optimiser) → train epochs (report val metrics
every epoch so ASHA can stop early) → rank 0 writes the checkpoint with the last report.
Device and autocast are decided once, here; modules follow ``x.device``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from a2o.config import ExperimentConfig, config_from_dict
from a2o.train.data import ClipDataset

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrialInputs:
    """Everything a worker needs to find its data; plain values so it pickles to any node."""

    frames_root: str
    maps: Any  # a picklable map reader (a2o.detect.cache.MapReader) or None for C = 0
    classes: tuple[str, ...]
    labels: tuple[str, ...]
    train_ids: tuple[str, ...]
    train_labels: tuple[int, ...]
    val_ids: tuple[str, ...]
    val_labels: tuple[int, ...]


def cosine_with_warmup(total_steps: int, warmup_steps: int):
    """LR multiplier: linear warm-up to 1, then cosine decay to 0."""

    def factor(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def autocast_for(device: torch.device, precision: str):
    """bf16 autocast on CUDA unless fp32 is asked for; CPU runs in fp32 (bf16 on CPU is slow)."""
    if device.type == "cuda" and precision in ("auto", "bf16"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def build_optimizer(model: torch.nn.Module, core, tcfg, *, total_steps: int):
    """AdamW + cosine-with-warm-up over ``total_steps`` for ``model`` (DDP-wrapped or not).

    Param groups: (fusion | rest) x (decay | no decay; biases, norms and tokens get none). The
    fusion path of ``core`` (adapter + zero-init projection) takes ``train.fusion_lr_scale`` x the lr;
    LambdaLR scales each group's own lr. ``tcfg`` is the ``train`` config section.
    """
    fusion_ids = {id(p) for p in core.fusion.parameters()} if core.fusion is not None else set()
    groups = []
    for is_fusion in (False, True):
        params = [p for p in model.parameters() if p.requires_grad and (id(p) in fusion_ids) == is_fusion]
        lr = tcfg.lr * (tcfg.fusion_lr_scale if is_fusion else 1.0)
        groups.append({"params": [p for p in params if p.ndim >= 2], "weight_decay": tcfg.weight_decay, "lr": lr})
        groups.append({"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0, "lr": lr})
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=tcfg.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, cosine_with_warmup(total_steps, int(tcfg.warmup_fraction * total_steps))
    )
    return optimizer, scheduler


def _shard(items: tuple, rank: int, world: int) -> list:
    # Strided shard without padding, so every val clip counts exactly once across ranks.
    return list(items[rank::world])


@torch.no_grad()
def confusion_on(model, loader, num_labels: int, device: torch.device, precision: str) -> torch.Tensor:
    """Confusion matrix (rows = true, cols = predicted) of ``model`` on ``loader``."""
    model.eval()
    confusion = torch.zeros((num_labels, num_labels), dtype=torch.int64, device=device)
    for frames, maps, labels in loader:
        frames, maps, labels = frames.to(device), maps.to(device), labels.to(device)
        with autocast_for(device, precision):
            logits = model(frames, maps if maps.shape[2] else None)
        predicted = logits.float().argmax(dim=-1)
        index = labels * num_labels + predicted
        confusion += torch.bincount(index, minlength=num_labels * num_labels).view(num_labels, num_labels)
    return confusion


def train_loop_per_worker(loop_config: dict) -> None:
    """Ray Train entry point. ``loop_config``: {"experiment": dict, "inputs": TrialInputs}."""
    import ray.train
    import ray.train.torch

    from a2o.data.framestore import FrameStore
    from a2o.model import build_recognizer, save_recognizer
    from a2o.train.metrics import classwise_from_confusion

    loop_started = time.perf_counter()
    cfg: ExperimentConfig = config_from_dict(loop_config["experiment"])
    inputs: TrialInputs = loop_config["inputs"]
    tcfg = cfg.train
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()

    # ---- setup: device, precision and seeds are decided once, here.
    device = ray.train.torch.get_device()
    torch.manual_seed(tcfg.seed)
    np.random.seed(tcfg.seed + rank)
    num_labels = len(inputs.labels)

    frames = FrameStore(inputs.frames_root)
    train_set = ClipDataset(
        _shard(inputs.train_ids, rank, world),
        _shard(inputs.train_labels, rank, world),
        frames,
        inputs.maps,
        size=cfg.data.resolution,
        train=tcfg.augment,
        flip=tcfg.flip,
        seed=tcfg.seed + 1000 * rank,
    )
    val_set = ClipDataset(
        _shard(inputs.val_ids, rank, world),
        _shard(inputs.val_labels, rank, world),
        frames,
        inputs.maps,
        size=cfg.data.resolution,
        train=False,
    )
    shuffle_gen = torch.Generator().manual_seed(tcfg.seed + rank)
    train_loader = torch.utils.data.DataLoader(
        train_set, batch_size=tcfg.batch_size, shuffle=True, generator=shuffle_gen, drop_last=False
    )
    val_loader = torch.utils.data.DataLoader(val_set, batch_size=tcfg.batch_size, shuffle=False)

    model = build_recognizer(
        cfg.model,
        num_classes_in=len(inputs.classes),
        labels=list(inputs.labels),
        num_frames=cfg.data.num_frames,
        resolution=cfg.data.resolution,
    )
    model = ray.train.torch.prepare_model(model)
    core = model.module if hasattr(model, "module") else model

    steps_per_epoch = max(1, math.ceil(len(train_loader) / tcfg.grad_accum))
    if tcfg.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, tcfg.max_steps_per_epoch)
    epochs = int(loop_config.get("epochs", tcfg.epochs))
    optimizer, scheduler = build_optimizer(model, core, tcfg, total_steps=steps_per_epoch * epochs)
    loss_fn = torch.nn.CrossEntropyLoss()

    # Worker set-up (data, model build, DDP wrap): reported, because on short trials it is a
    # visible share of the wall time (benchmarks/trial_overhead.py).
    setup_time_s = time.perf_counter() - loop_started

    # ---- train
    train_time_s = 0.0  # the epochs so far (train + val), without set-up and checkpointing
    for epoch in range(1, epochs + 1):
        model.train()
        train_set.set_epoch(epoch)
        started = time.perf_counter()
        loss_sum, loss_count, step = 0.0, 0, 0
        optimizer.zero_grad(set_to_none=True)
        for batch_index, (clip_frames, clip_maps, labels) in enumerate(train_loader):
            clip_frames, clip_maps, labels = clip_frames.to(device), clip_maps.to(device), labels.to(device)
            with autocast_for(device, tcfg.precision):
                logits = model(clip_frames, clip_maps if clip_maps.shape[2] else None)
                loss = loss_fn(logits.float(), labels)
            (loss / tcfg.grad_accum).backward()
            loss_sum += float(loss.detach()) * len(labels)
            loss_count += len(labels)
            if (batch_index + 1) % tcfg.grad_accum == 0 or batch_index + 1 == len(train_loader):
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                if step >= steps_per_epoch:
                    break

        confusion = confusion_on(model, val_loader, num_labels, device, tcfg.precision)
        loss_stats = torch.tensor([loss_sum, loss_count], dtype=torch.float64, device=device)
        if world > 1:
            torch.distributed.all_reduce(confusion)
            torch.distributed.all_reduce(loss_stats)
        confusion_np = confusion.cpu().numpy()
        total = int(confusion_np.sum())
        val_accuracy = float(np.trace(confusion_np) / total) if total else 0.0
        epoch_time_s = time.perf_counter() - started
        train_time_s += epoch_time_s
        metrics = {
            "val_accuracy": val_accuracy,
            "classwise_accuracy": classwise_from_confusion(confusion_np, list(inputs.labels)),
            # rows = true action, cols = predicted, in inputs.labels order (the report draws it)
            "confusion": confusion_np.tolist(),
            "loss": float(loss_stats[0] / max(1.0, float(loss_stats[1]))),
            "epoch": epoch,
            "classes": list(inputs.classes),
            "epoch_time_s": epoch_time_s,
            "train_time_s": train_time_s,
            "worker_setup_s": setup_time_s,
            **loop_config.get("extra_metrics", {}),
        }
        if rank == 0:
            log.info("epoch %d/%d: val_accuracy=%.4f loss=%.4f", epoch, epochs, val_accuracy, metrics["loss"])
        if epoch == epochs and rank == 0:
            # Rank 0 alone writes the weights; Ray Train uploads the directory to run storage.
            with tempfile.TemporaryDirectory() as tmp:
                save_recognizer(
                    core,
                    os.path.join(tmp, "model"),
                    classes=list(inputs.classes),
                    labels=list(inputs.labels),
                    extra={"experiment": loop_config["experiment"], "metrics": metrics,
                           "confusion": confusion_np.tolist()},
                )
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
        else:
            ray.train.report(metrics)
