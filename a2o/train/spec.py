"""What one trial's training loop receives: :class:`TrialInputs` (its data) and :class:`TrialSpec`.

Both are built on the driver (``fit_trial``, the benchmarks) and pickled to every Ray Train
worker; the loop reads attributes and never parses a config again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from a2o.config import ExperimentConfig, ModelConfig, TrainConfig, config_to_dict
from a2o.detect.classes import ClassSet

__all__ = ["TrialInputs", "TrialSpec"]


@dataclass(frozen=True)
class TrialInputs:
    """Everything a worker needs to find its data; plain values so it pickles to any node."""

    frames_root: str
    """The frame store of the experiment's frame grid (``a2o.train.trial.frames_root``)."""
    maps: Any
    """A picklable map reader over ``class_set`` (``a2o.detect.cache.MapReader``), None when C = 0."""
    class_set: ClassSet
    """The trial's object classes; map channel ``i`` is ``class_set[i]``."""
    labels: tuple[str, ...]
    """Action label names indexed by label id (the probe's outputs)."""
    train_ids: tuple[str, ...]
    """Video ids of the train split, in frame-store order."""
    train_labels: tuple[int, ...]
    """Label id of each train video."""
    val_ids: tuple[str, ...]
    """Video ids of the val split, in frame-store order."""
    val_labels: tuple[int, ...]
    """Label id of each val video."""


@dataclass(frozen=True)
class TrialSpec:
    """The typed spec of one trial's training loop (``a2o.train.loop.train_loop_per_worker``)."""

    model: ModelConfig
    """The ``model`` section, with ``checkpoint`` already resolved to a directory every rank loads."""
    train: TrainConfig
    """The ``train`` section; ``epochs`` is the number this trial runs (search or final budget)."""
    num_frames: int
    """T, frames per clip (``data.num_frames``)."""
    resolution: int
    """Side of the model input (``data.resolution``)."""
    inputs: TrialInputs
    """The trial's clips, labels, class set and maps."""
    extra_metrics: Mapping[str, Any] = field(default_factory=dict)
    """Reported with every epoch's metrics (e.g. maps_computed / maps_reused of the driver)."""
    experiment: Mapping[str, Any] = field(default_factory=dict)
    """``config_to_dict`` of the whole experiment: saved with the checkpoint (``extra.experiment``),
    never read by the loop."""

    def __post_init__(self) -> None:
        if self.train.epochs < 1:
            raise ValueError(f"train.epochs: a trial runs at least 1 epoch, got {self.train.epochs}")

    @classmethod
    def from_config(
        cls,
        cfg: ExperimentConfig,
        inputs: TrialInputs,
        *,
        epochs: int | None = None,
        extra_metrics: Mapping[str, Any] | None = None,
    ) -> TrialSpec:
        """The spec of a trial of ``cfg`` over ``inputs``; ``epochs`` defaults to ``train.epochs``."""
        train = cfg.train if epochs is None else dataclasses.replace(cfg.train, epochs=int(epochs))
        return cls(
            model=cfg.model,
            train=train,
            num_frames=cfg.data.num_frames,
            resolution=cfg.data.resolution,
            inputs=inputs,
            extra_metrics=dict(extra_metrics or {}),
            experiment=config_to_dict(cfg),
        )

    @property
    def class_set(self) -> ClassSet:
        return self.inputs.class_set

    @property
    def epochs(self) -> int:
        return self.train.epochs
