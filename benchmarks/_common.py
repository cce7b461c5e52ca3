"""Shared helpers of the benchmarks: an A2O-Synth experiment, in-process training, tables.

:func:`build_experiment` is the one place a benchmark experiment's config is written; every
benchmark starts from it (and adds only its own sections through ``overrides``).

In-process training runs the *real* per-worker loop (:func:`a2o.train.loop.train_loop_per_worker`)
through Ray Train V2's local mode (``ScalingConfig(num_workers=0)``): the training function runs in
this process with Ray Train's context, ``report`` and ``prepare_model`` stubbed by Ray itself, and no
Ray cluster is started. Its :class:`~a2o.train.spec.TrialSpec` comes from
:func:`a2o.train.trial.prepare_inputs`, :func:`a2o.train.trial.resolve_checkpoint` and
:func:`a2o.train.trial.trial_spec`, the path ``fit_trial`` takes, so the only difference from a
search trial is the Ray Train controller and worker actors around the loop.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from a2o.config import ExperimentConfig, config_from_dict, resolve_paths
from a2o.detect.classes import ClassSet

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Geometry:
    """Data and model size of a benchmark experiment (small enough for a 2-core CPU)."""

    num_frames: int = 4
    """Frames per clip (T): a multiple of the V-JEPA2 tubelet (2). Four of the demo's eight rendered
    frames: each tubelet then spans a large step of the motion."""
    resolution: int = 32
    """Side of the square model input."""
    hidden: int = 64
    """Hidden size of the tiny V-JEPA2."""
    layers: int = 2
    """Encoder layers of the tiny V-JEPA2."""
    patch: int = 4
    """Patch size of the tiny V-JEPA2 (4 at 32 px: 8 x 8 tokens per tubelet, objects span tokens)."""
    batch_size: int = 8
    """Clips per optimiser step."""
    lr: float = 2e-3
    """Peak AdamW learning rate (the probe's, with the encoder frozen)."""
    fusion_lr_scale: float = 50.0
    """Adapter + zero-init projection learning rate as a multiple of ``lr`` (``train.fusion_lr_scale``)."""
    freeze_backbone: bool = True
    """Freeze the V-JEPA2 encoder (``model.freeze_backbone``); the probe and the fusion path train.

    The benchmark's V-JEPA2 is randomly initialised (no pretrained weights offline): fine-tuning it
    on 240 clips learns no motion features in a CPU budget, and then no class set can beat chance.
    Frozen, it is a fixed random spatio-temporal feature extractor, the stand-in for a pretrained
    encoder, and the maps change what it sees: the claim under test."""


@dataclass(frozen=True)
class InProcessResult:
    """What one in-process training run returns."""

    metrics: dict[str, Any]
    """The last epoch's metrics, as the loop reports them to Ray Train."""
    wall_time_s: float
    """Wall time of the fit (model build + epochs + final checkpoint write)."""


def set_torch_threads(threads: int) -> None:
    """Pin torch (and OpenMP) threads; Ray Train workers get ``OMP_NUM_THREADS`` = their CPUs."""
    import torch

    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)


def _merged(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` laid over it, section by section."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = value
    return merged


def experiment_config(
    synth_root: str,
    storage_root: str,
    *,
    preset: str,
    detector: str = "learned",
    synth_seed: int = 0,
    geometry: Geometry = Geometry(),
    epochs: int = 1,
    seed: int = 0,
    cpus_per_worker: float = 1.0,
    overrides: Mapping[str, Any] | None = None,
) -> ExperimentConfig:
    """The benchmark recipe as an experiment config (paths resolved); ``overrides`` adds sections
    or keys a benchmark needs beyond it (e.g. the searcher benchmark's search and LLM settings)."""
    recipe = {
        "data": {
            "dataset": "synthetic",
            "root": synth_root,
            "synth_preset": preset,
            "num_frames": geometry.num_frames,
            "resolution": geometry.resolution,
            "seed": synth_seed,
        },
        "detect": {"detector": detector},
        "model": {
            "checkpoint": "tiny",
            "tiny_hidden": geometry.hidden,
            "tiny_layers": geometry.layers,
            "tiny_patch": geometry.patch,
            "freeze_backbone": geometry.freeze_backbone,
        },
        "train": {
            "epochs": epochs,
            "batch_size": geometry.batch_size,
            "lr": geometry.lr,
            "fusion_lr_scale": geometry.fusion_lr_scale,
            "augment": False,  # store_resolution = resolution: nothing to crop
            "num_workers": 1,
            "cpus_per_worker": cpus_per_worker,
            "seed": seed,
        },
        "storage": {"root": storage_root},
    }
    return resolve_paths(config_from_dict(_merged(recipe, overrides or {})))


def build_experiment(
    work_dir: str,
    *,
    preset: str = "household",
    detector: str = "learned",
    synth_seed: int = 0,
    geometry: Geometry = Geometry(),
    epochs: int = 1,
    seed: int = 0,
    cpus_per_worker: float = 1.0,
    storage_root: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> ExperimentConfig:
    """Generate A2O-Synth under ``work_dir/synth``, prepare its frame store, return the experiment.

    ``detector`` is 'learned' (the world's segmentation net, trained once on the train split's
    masks and cached under the run's storage: what the demo and a served model use) or
    'annotation' (the oracle: maps are exactly the generator's masks). The run's storage is
    ``storage_root`` (default ``work_dir/run``); ``overrides`` as in :func:`experiment_config`.
    Every step is idempotent: a second call reuses the data and the trained detector.
    """
    from a2o.data.framestore import prepare_frame_store
    from a2o.data.manifest import load_manifest
    from a2o.data.synthetic import generate_synth
    from a2o.train.trial import frames_root

    synth_root = generate_synth(os.path.join(work_dir, "synth"), preset, seed=synth_seed)
    cfg = experiment_config(
        synth_root, storage_root or os.path.join(work_dir, "run"), preset=preset, detector=detector,
        synth_seed=synth_seed, geometry=geometry, epochs=epochs, seed=seed, cpus_per_worker=cpus_per_worker,
        overrides=overrides,
    )
    summary = prepare_frame_store(load_manifest(cfg.data), cfg.data, frames_root(cfg), use_ray=False)
    if summary.skipped:
        raise RuntimeError(f"{summary.skipped} synthetic videos could not be decoded: {summary.skipped_ids[:5]}")
    if detector == "learned":
        from a2o.detect.learned_train import ensure_learned_detector

        ensure_learned_detector(cfg)
    return cfg


def with_seed(cfg: ExperimentConfig, seed: int) -> ExperimentConfig:
    """The experiment with another training seed (the data and the tiny weights stay fixed)."""
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=seed))


def train_in_process(
    cfg: ExperimentConfig, classes: Sequence[str] | ClassSet, *, epochs: int | None = None
) -> InProcessResult:
    """Run the real Ray Train loop for ``classes`` in this process (Ray Train local mode).

    Maps are ensured in the map cache first (the annotation detector runs in-process), exactly as
    ``fit_trial`` does before it builds its ``TorchTrainer``. ``epochs`` defaults to ``train.epochs``.
    """
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from a2o.train.loop import train_loop_per_worker
    from a2o.train.trial import prepare_inputs, resolve_checkpoint, trial_spec

    started = time.perf_counter()
    class_set = ClassSet.parse(classes, where="benchmark class set")
    inputs, detect_stats = prepare_inputs(cfg, class_set)
    cfg = resolve_checkpoint(cfg, len(inputs.labels))
    trainer = TorchTrainer(
        functools.partial(train_loop_per_worker, trial_spec(cfg, inputs, detect_stats, epochs=epochs)),
        scaling_config=ScalingConfig(num_workers=0),  # local mode: same process, no Ray cluster
        # a name per process and start time: parallel benchmark jobs share one storage folder
        run_config=RunConfig(
            name=f"in-process-{os.getpid()}-{time.time_ns()}", storage_path=os.path.abspath(cfg.storage.path("train"))
        ),
    )
    result = trainer.fit()
    return InProcessResult(dict(result.metrics or {}), time.perf_counter() - started)


def command_line() -> str:
    """The command that started this process, for the printed report."""
    module = sys.modules["__main__"].__spec__
    head = ["python", "-m", module.name] if module is not None else ["python", sys.argv[0]]
    return shlex.join([*head, *sys.argv[1:]])


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-markdown table with columns padded to their widest cell."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (width + 2) for width in widths) + "|"
    return "\n".join([line(cells[0]), rule, *(line(row) for row in cells[1:])])


def update_readme_section(path: str, name: str, body: str) -> bool:
    """Replace the text between ``<!-- results:NAME:begin -->`` and ``<!-- results:NAME:end -->``.

    Benchmarks call this with ``--readme README.md`` so the README's Results section is the output
    of the last run, not hand-copied. Returns False (and changes nothing) when the markers are absent.
    """
    begin, end = f"<!-- results:{name}:begin -->", f"<!-- results:{name}:end -->"
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    start, stop = text.find(begin), text.find(end)
    if start < 0 or stop < start:
        log.warning("%s has no %s ... %s markers: README not updated", path, begin, end)
        return False
    updated = text[: start + len(begin)] + "\n" + body.strip() + "\n" + text[stop:]
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(updated)
    os.replace(tmp, path)
    return True


def machine_line() -> str:
    """What the benchmark ran on, for the printed report and the README."""
    import platform

    import torch

    from a2o.runtime import Runtime

    runtime = Runtime.best_available()
    gpu = torch.get_device_module(runtime.device).get_device_name(runtime.device) if runtime.accelerated else "no GPU"
    return (f"{platform.machine()}, {os.cpu_count()} CPU cores, {gpu}; Python {platform.python_version()}, "
            f"torch {torch.__version__}")


def quiet_logs() -> None:
    """INFO for the benchmark, warnings only for Ray, transformers and the a2o internals."""
    import ray  # noqa: F401  (Ray sets its logger's level on import: import first, then override)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for name in ("ray", "a2o", "transformers", "huggingface_hub", "filelock", "urllib3", "tensorboardX"):
        logging.getLogger(name).setLevel(logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
