"""The per-worker training loop run by Ray Train's ``TorchTrainer`` (one call per DDP rank).

Recipe: setup (runtime, seed, data, model, optimiser) → train epochs (report val metrics every
epoch so ASHA can stop early) → rank 0 writes the checkpoint with the last report. The worker's
:class:`~a2o.runtime.Runtime` (device and autocast) is decided once, here; everything below takes it
or follows ``x.device``. The epoch and the evaluation are :mod:`a2o.train.epoch`'s, which the
benchmarks run too.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time

import numpy as np
import torch

from a2o.train.spec import TrialSpec

log = logging.getLogger(__name__)


def train_loop_per_worker(spec: TrialSpec) -> None:
    """Ray Train entry point: ``TorchTrainer(functools.partial(train_loop_per_worker, spec))``."""
    import ray.train
    import ray.train.torch

    from a2o.data.framestore import FrameStore
    from a2o.model import save_recognizer
    from a2o.runtime import Runtime
    from a2o.train.epoch import build_training, evaluate, train_one_epoch
    from a2o.train.metrics import classwise_from_confusion

    loop_started = time.perf_counter()
    tcfg, inputs = spec.train, spec.inputs
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()

    # ---- setup: device, precision and seeds are decided once, here.
    runtime = Runtime(ray.train.torch.get_device(), tcfg.precision)
    torch.manual_seed(tcfg.seed)
    np.random.seed(tcfg.seed + rank)
    num_labels = len(inputs.labels)
    training = build_training(
        spec, FrameStore(inputs.frames_root), inputs.maps, rank=rank, world=world,
        wrap=ray.train.torch.prepare_model,
    )
    model = training.model

    # Worker set-up (data, model build, DDP wrap): reported, because on short trials it is a
    # visible share of the wall time (benchmarks/trial_overhead.py).
    setup_time_s = time.perf_counter() - loop_started

    # ---- train
    train_time_s = 0.0  # the epochs so far (train + val), without set-up and checkpointing
    epochs = tcfg.epochs
    for epoch in range(1, epochs + 1):
        training.train_set.set_epoch(epoch)
        started = time.perf_counter()
        loss = train_one_epoch(
            model, training.train_loader, training.optimizer, training.scheduler, runtime,
            grad_accum=tcfg.grad_accum, max_steps=training.steps_per_epoch,
        )
        confusion = evaluate(model, training.val_loader, num_labels, runtime)
        loss_stats = torch.tensor([loss.total, loss.clips], dtype=torch.float64, device=runtime.device)
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
            "classes": list(spec.class_set),
            "epoch_time_s": epoch_time_s,
            "train_time_s": train_time_s,
            "worker_setup_s": setup_time_s,
            **spec.extra_metrics,
        }
        if rank == 0:
            log.info("epoch %d/%d: val_accuracy=%.4f loss=%.4f", epoch, epochs, val_accuracy, metrics["loss"])
        if epoch == epochs and rank == 0:
            # Rank 0 alone writes the weights; Ray Train uploads the directory to run storage.
            with tempfile.TemporaryDirectory() as tmp:
                save_recognizer(
                    training.core,
                    os.path.join(tmp, "model"),
                    extra={"experiment": dict(spec.experiment), "metrics": metrics,
                           "confusion": confusion_np.tolist()},
                )
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
        else:
            ray.train.report(metrics)
