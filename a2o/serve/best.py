"""Reading a ``best/`` directory (docs/INTERFACES.md) without loading any weights.

The driver reads and checks it before deploying anything, so a wrong path or an inconsistent
directory fails at ``a2o serve`` with a message naming the file, not inside a replica. Replicas
then load the weights themselves from ``best/model`` (a path every node must see).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from a2o.config import ExperimentConfig, load_config
from a2o.errors import A2OError, ConfigError

if TYPE_CHECKING:  # pragma: no cover - torch stays out of the HTTP ingress replica
    from a2o.train.evaluate import EvalGeometry

__all__ = ["BestModel", "read_best", "eval_geometry"]

log = logging.getLogger(__name__)

_META_FILE = "recognizer.json"  # a2o.model.save_recognizer's completion marker


def eval_geometry(cfg: ExperimentConfig) -> EvalGeometry:
    """The clip x view geometry of the final test evaluation, from the experiment config."""
    from a2o.train.evaluate import EvalGeometry

    return EvalGeometry.from_config(cfg)


@dataclass(frozen=True)
class BestModel:
    """What serving needs to know about a ``best/`` directory (small, picklable)."""

    root: str
    """Absolute path of the best/ directory."""
    config: ExperimentConfig
    """The experiment config the model was trained with (detector, frame grid, eval views)."""
    classes: list[str]
    """Object classes the recognizer fuses, in map-channel order."""
    labels: list[str]
    """Action labels in logit order."""
    metrics: dict[str, Any]
    """metrics.json as written by the search (val/test accuracy, ...)."""
    trained_detector_fingerprint: str | None
    """Fingerprint of the detector the maps were computed with during training."""

    @property
    def model_dir(self) -> str:
        return os.path.join(self.root, "model")

    @property
    def geometry(self) -> EvalGeometry:
        return eval_geometry(self.config)


def read_best(path: str) -> BestModel:
    """Read and cross-check ``path`` (a best/ directory); raises :class:`ConfigError` when unusable."""
    root = os.path.abspath(os.path.expanduser(str(path)))
    if not os.path.isdir(root):
        raise ConfigError(
            f"--model {path}: not a directory; point it at the best/ folder of a finished search"
        )
    meta_path = os.path.join(root, "model", _META_FILE)
    config_path = os.path.join(root, "config.yaml")
    for required in (meta_path, config_path):
        if not os.path.isfile(required):
            raise ConfigError(
                f"--model {path}: {os.path.relpath(required, root)} is missing; a best/ directory holds "
                "model/ (save_recognizer output), config.yaml and metrics.json"
            )
    try:
        with open(meta_path, encoding="utf-8") as fh:
            meta = json.load(fh)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"--model {path}: model/{_META_FILE} is unreadable ({exc}); re-save the model"
        ) from exc
    cfg = load_config(config_path)
    metrics_path = os.path.join(root, "metrics.json")
    metrics: dict[str, Any] = {}
    if os.path.isfile(metrics_path):
        try:
            with open(metrics_path, encoding="utf-8") as fh:
                metrics = json.load(fh)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"--model {path}: metrics.json is not valid JSON ({exc})") from exc
        if not isinstance(metrics, dict):
            raise ConfigError(f"--model {path}: metrics.json must hold a JSON object")
    else:
        log.warning("%s has no metrics.json; /v1/model will report no metrics", root)

    classes = [str(c) for c in meta.get("classes", [])]
    labels = [str(label) for label in meta.get("labels", [])]
    if not labels:
        raise A2OError(f"--model {path}: model/{_META_FILE} lists no labels; re-save the model")
    if meta.get("num_frames") != cfg.data.num_frames or meta.get("resolution") != cfg.data.resolution:
        raise ConfigError(
            f"--model {path}: the model expects T={meta.get('num_frames')} frames at "
            f"{meta.get('resolution')} px but config.yaml has data.num_frames={cfg.data.num_frames}, "
            f"data.resolution={cfg.data.resolution}; the directory mixes two runs"
        )
    for key, value in (("classes", classes), ("labels", labels)):
        if key in metrics and [str(v) for v in metrics[key]] != value:
            raise ConfigError(
                f"--model {path}: metrics.json {key} differ from the saved model's; the directory mixes two runs"
            )
    if cfg.detect.detector == "annotation" and classes:
        log.warning(
            "best/ uses the annotation detector: uploaded videos carry no annotations, so every "
            "likelihood map is empty. Serve a model trained with a real detector for object cues."
        )
    fingerprint = metrics.get("detector_fingerprint")
    return BestModel(
        root=root,
        config=cfg,
        classes=classes,
        labels=labels,
        metrics=metrics,
        trained_detector_fingerprint=str(fingerprint) if fingerprint is not None else None,
    )
