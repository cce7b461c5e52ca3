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
    from a2o.train.epoch import build_training, run_epochs

    loop_started = time.perf_counter()
    tcfg, inputs = spec.train, spec.inputs
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()

    # ---- setup: device, precision and seeds are decided once, here.
    runtime = Runtime(ray.train.torch.get_device(), tcfg.precision)
    torch.manual_seed(tcfg.seed)
    np.random.seed(tcfg.seed + rank)
    training = build_training(
        spec, FrameStore(inputs.frames_root), inputs.maps, rank=rank, world=world,
        wrap=ray.train.torch.prepare_model,
    )

    # Worker set-up (data, model build, DDP wrap): reported, because on short trials it is a
    # visible share of the wall time (benchmarks/trial_overhead.py).
    setup_time_s = time.perf_counter() - loop_started

    # ---- train: every epoch is reported (ASHA may stop the trial between them); rank 0 alone
    # writes the weights with the last report, and Ray Train uploads them to run storage.
    epochs = tcfg.epochs

    def report(metrics: dict) -> bool:
        epoch = metrics["epoch"]
        if rank == 0:
            log.info("epoch %d/%d: val_accuracy=%.4f loss=%.4f", epoch, epochs, metrics["val_accuracy"], metrics["loss"])
        if epoch == epochs and rank == 0:
            with tempfile.TemporaryDirectory() as tmp:
                save_recognizer(
                    training.core,
                    os.path.join(tmp, "model"),
                    extra={"experiment": dict(spec.experiment), "metrics": metrics,
                           "confusion": metrics["confusion"]},
                )
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
        else:
            ray.train.report(metrics)
        return False  # Tune's scheduler stops a trial by ending this process, not through here

    run_epochs(
        training, spec, runtime, on_epoch=report, setup_time_s=setup_time_s,
        reduce=torch.distributed.all_reduce if world > 1 else None,
    )
