"""One trial's training, step by step: set-up, one epoch of training, one evaluation.

The Ray Train loop (:func:`a2o.train.loop.train_loop_per_worker`) and every benchmark run these
same functions; a benchmark only configures them (its own frame source, seed, eval batch size).
Device and precision come in as a :class:`~a2o.runtime.Runtime` decided by the caller's entry point.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from a2o.runtime import Runtime
from a2o.train.data import ClipDataset, FrameSource, MapSource
from a2o.train.spec import TrialSpec

__all__ = [
    "Training",
    "EpochLoss",
    "build_training",
    "build_optimizer",
    "cosine_with_warmup",
    "train_one_epoch",
    "evaluate",
    "run_epochs",
]


def cosine_with_warmup(total_steps: int, warmup_steps: int):
    """LR multiplier: linear warm-up to 1, then cosine decay to 0."""

    def factor(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


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


@dataclass
class Training:
    """What :func:`build_training` sets up for one rank of one trial."""

    model: torch.nn.Module
    """The model to call (DDP-wrapped on several ranks)."""
    core: Any
    """The bare :class:`~a2o.model.A2ORecognizer` (what is saved)."""
    train_set: ClipDataset
    train_loader: torch.utils.data.DataLoader
    val_loader: torch.utils.data.DataLoader
    optimizer: torch.optim.Optimizer
    scheduler: Any
    steps_per_epoch: int
    """Optimiser steps of one epoch (``train.max_steps_per_epoch`` applied)."""


def build_training(
    spec: TrialSpec,
    frames: FrameSource,
    maps: MapSource | None,
    *,
    rank: int = 0,
    world: int = 1,
    wrap: Callable[[torch.nn.Module], torch.nn.Module],
    eval_batch_size: int | None = None,
) -> Training:
    """Datasets of this rank's shard, loaders, the recognizer and its optimiser for ``spec``.

    Call it after seeding torch (the adapter and probe draw their initial weights here). ``wrap``
    places the built model (``ray.train.torch.prepare_model``, or ``lambda m: m.to(device)``).
    ``eval_batch_size`` defaults to ``train.batch_size``.
    """
    from a2o.model import build_recognizer

    tcfg, inputs = spec.train, spec.inputs
    train_set = ClipDataset(
        _shard(inputs.train_ids, rank, world),
        _shard(inputs.train_labels, rank, world),
        frames,
        maps,
        size=spec.resolution,
        train=tcfg.augment,
        flip=tcfg.flip,
        seed=tcfg.seed + 1000 * rank,
    )
    val_set = ClipDataset(
        _shard(inputs.val_ids, rank, world),
        _shard(inputs.val_labels, rank, world),
        frames,
        maps,
        size=spec.resolution,
        train=False,
    )
    shuffle_gen = torch.Generator().manual_seed(tcfg.seed + rank)
    train_loader = torch.utils.data.DataLoader(
        train_set, batch_size=tcfg.batch_size, shuffle=True, generator=shuffle_gen, drop_last=False
    )
    val_loader = torch.utils.data.DataLoader(val_set, batch_size=eval_batch_size or tcfg.batch_size, shuffle=False)

    core = build_recognizer(
        spec.model,
        classes=spec.class_set,
        labels=list(inputs.labels),
        num_frames=spec.num_frames,
        resolution=spec.resolution,
    )
    model = wrap(core)
    core = model.module if hasattr(model, "module") else model

    steps_per_epoch = max(1, math.ceil(len(train_loader) / tcfg.grad_accum))
    if tcfg.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, tcfg.max_steps_per_epoch)
    optimizer, scheduler = build_optimizer(model, core, tcfg, total_steps=steps_per_epoch * tcfg.epochs)
    return Training(model, core, train_set, train_loader, val_loader, optimizer, scheduler, steps_per_epoch)


@dataclass(frozen=True)
class EpochLoss:
    """Summed train loss over the clips of one epoch (sum and count: ranks add them up)."""

    total: float
    clips: int

    @property
    def mean(self) -> float:
        return self.total / max(1, self.clips)


def train_one_epoch(
    model: torch.nn.Module,
    loader,
    optimizer: torch.optim.Optimizer,
    scheduler,
    runtime: Runtime,
    *,
    grad_accum: int = 1,
    max_steps: int = 0,
) -> EpochLoss:
    """One pass over ``loader``: cross-entropy, an optimiser and scheduler step every ``grad_accum``
    batches, stopping after ``max_steps`` steps (0 = the whole loader).

    Stopping at ``max_steps`` leaves the loader's iterator unfinished, so a shuffling sampler skips
    its end-of-epoch draw from the loader's generator: the next epoch's order then differs from
    running the loader to its end, even when ``max_steps`` is the loader's own step count.
    """
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()
    loss_sum, loss_count, step = 0.0, 0, 0
    optimizer.zero_grad(set_to_none=True)
    for batch_index, (clip_frames, clip_maps, labels) in enumerate(loader):
        # (B, T, S, S, 3) uint8, (B, T, C, S, S) uint8 (C may be 0), (B,)
        clip_frames, clip_maps, labels = (
            clip_frames.to(runtime.device), clip_maps.to(runtime.device), labels.to(runtime.device)
        )
        with runtime.autocast():
            logits = model(clip_frames, clip_maps if clip_maps.shape[2] else None)  # (B, K)
            loss = loss_fn(logits.float(), labels)
        (loss / grad_accum).backward()
        loss_sum += float(loss.detach()) * len(labels)
        loss_count += len(labels)
        if (batch_index + 1) % grad_accum == 0 or batch_index + 1 == len(loader):
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if max_steps and step >= max_steps:
                break
    return EpochLoss(loss_sum, loss_count)


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader, num_labels: int, runtime: Runtime) -> torch.Tensor:
    """Confusion matrix (num_labels, num_labels) int64 on ``runtime.device`` of ``model`` on
    ``loader`` (rows = true label, cols = predicted)."""
    model.eval()
    confusion = torch.zeros((num_labels, num_labels), dtype=torch.int64, device=runtime.device)
    for frames, maps, labels in loader:
        frames, maps, labels = frames.to(runtime.device), maps.to(runtime.device), labels.to(runtime.device)
        with runtime.autocast():
            logits = model(frames, maps if maps.shape[2] else None)  # (B, K)
        predicted = logits.float().argmax(dim=-1)
        index = labels * num_labels + predicted
        confusion += torch.bincount(index, minlength=num_labels * num_labels).view(num_labels, num_labels)
    return confusion


def run_epochs(
    training: Training,
    spec: TrialSpec,
    runtime: Runtime,
    *,
    on_epoch: Callable[[dict[str, Any]], bool],
    reduce: Callable[[torch.Tensor], None] | None = None,
    setup_time_s: float = 0.0,
) -> int:
    """Train and evaluate ``spec.train.epochs`` epochs; the trial's loop, shared by Ray Train and the benchmarks.

    After each epoch ``on_epoch(metrics)`` gets the epoch's validation metrics (``val_accuracy``,
    ``classwise_accuracy``, ``confusion`` with its row/column order ``confusion_labels``, ``loss``,
    ``epoch``, timings and ``spec.extra_metrics``); it reports them and returns True to stop early
    (a scheduler's decision). ``reduce`` sums a tensor over ranks in place (``all_reduce`` under DDP).
    Returns the number of epochs run.
    """
    from a2o.train.metrics import classwise_from_confusion

    tcfg = spec.train
    labels = list(spec.inputs.labels)
    train_time_s = 0.0  # the epochs so far (train + val), without set-up and checkpointing
    for epoch in range(1, tcfg.epochs + 1):
        training.train_set.set_epoch(epoch)
        started = time.perf_counter()
        loss = train_one_epoch(
            training.model, training.train_loader, training.optimizer, training.scheduler, runtime,
            grad_accum=tcfg.grad_accum, max_steps=training.steps_per_epoch,
        )
        confusion = evaluate(training.model, training.val_loader, len(labels), runtime)
        loss_stats = torch.tensor([loss.total, loss.clips], dtype=torch.float64, device=runtime.device)
        if reduce is not None:
            reduce(confusion)
            reduce(loss_stats)
        confusion_np = confusion.cpu().numpy()
        total = int(confusion_np.sum())
        epoch_time_s = time.perf_counter() - started
        train_time_s += epoch_time_s
        metrics = {
            "val_accuracy": float(confusion_np.trace() / total) if total else 0.0,
            "classwise_accuracy": classwise_from_confusion(confusion_np, labels),
            # rows = true action, cols = predicted, in confusion_labels order (the report draws it,
            # the ICRL prompt names the most confused pairs)
            "confusion": confusion_np.tolist(),
            "confusion_labels": labels,
            "loss": float(loss_stats[0] / max(1.0, float(loss_stats[1]))),
            "epoch": epoch,
            "classes": list(spec.class_set),
            "epoch_time_s": epoch_time_s,
            "train_time_s": train_time_s,
            "worker_setup_s": setup_time_s,
            **spec.extra_metrics,
        }
        if on_epoch(metrics) and epoch < tcfg.epochs:
            return epoch
    return tcfg.epochs
