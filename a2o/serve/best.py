"""Reading a ``best/`` directory (docs/INTERFACES.md) without loading any weights.

The driver reads and checks it before deploying anything, so a wrong path or an inconsistent
directory fails at ``a2o serve`` with a message naming the file, not inside a replica. Replicas
then load the weights themselves from ``best/model`` (a path every node must see).

Two checks keep served predictions honest (equal to the offline metrics in metrics.json):

- A model trained with the learned detector carries that detector in ``best/detector/``;
  ``detect.learned_model`` is pointed there whatever config.yaml says, and serving checks that its
  fingerprint is the one the model was trained with (:func:`check_detector_fingerprint`).
- A model whose detector cannot see pixels (the ``annotation`` oracle reads ground-truth masks,
  which uploads do not carry) but whose class set is non-empty is refused, unless the caller
  passes ``allow_oracle_detector=True``; then every response carries :attr:`BestModel.warning`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from a2o.config import ExperimentConfig, load_config
from a2o.detect.classes import ClassSet
from a2o.errors import A2OError, ClassTextError, ConfigError

if TYPE_CHECKING:  # pragma: no cover - torch stays out of the HTTP ingress replica
    from a2o.train.evaluate import EvalGeometry

__all__ = [
    "BestModel",
    "read_best",
    "eval_geometry",
    "check_detector_fingerprint",
    "DETECTOR_DIR",
    "ORACLE_DETECTORS",
    "ORACLE_WARNING",
]

log = logging.getLogger(__name__)

_META_FILE = "recognizer.json"  # a2o.model.save_recognizer's completion marker
_LEARNED_META_FILE = "detector.json"  # the learned detector's config, next to model.safetensors

DETECTOR_DIR = "detector"
"""best/ subfolder holding a learned detector (config.yaml's ``detect.learned_model`` is relative to best/)."""

ORACLE_DETECTORS = frozenset({"annotation"})
"""Detectors that read dataset annotations instead of pixels: blind on uploaded videos."""

ORACLE_WARNING = (
    "the object likelihood maps are empty: this model's detector is an annotation oracle "
    "(detect.detector: annotation reads ground-truth masks, which uploaded videos do not carry), "
    "so predictions use RGB alone and do not match the model's offline metrics"
)
"""What every /v1/predict response (and /v1/model) says when an oracle model is served anyway."""


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
    classes: ClassSet
    """Object classes the recognizer fuses, in map-channel order (``list(classes)`` is the JSON form)."""
    labels: list[str]
    """Action labels in logit order."""
    metrics: dict[str, Any]
    """metrics.json as written by the search (val/test accuracy, ...)."""
    trained_detector_fingerprint: str | None
    """Fingerprint of the detector the maps were computed with during training."""
    warning: str | None = None
    """Set when an oracle-detector model is served anyway (``allow_oracle_detector``): every
    prediction response and /v1/model carry it. None otherwise."""

    @property
    def model_dir(self) -> str:
        return os.path.join(self.root, "model")

    @property
    def geometry(self) -> EvalGeometry:
        return eval_geometry(self.config)


def read_best(path: str, *, allow_oracle_detector: bool = False) -> BestModel:
    """Read and cross-check ``path`` (a best/ directory); raises :class:`ConfigError` when unusable.

    A model with object classes whose detector cannot see pixels (:data:`ORACLE_DETECTORS`) is
    refused unless ``allow_oracle_detector`` is true; then the returned model's ``warning`` is set.
    A learned-detector model gets ``detect.learned_model`` = ``<best>/detector``.
    """
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
    cfg = _with_detector_dir(load_config(config_path), root, path)
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

    try:
        classes = ClassSet.parse(meta.get("classes", []), where=f"--model {path}: model/{_META_FILE} classes")
    except ClassTextError as exc:
        raise ConfigError(f"{exc}; re-save the model with a valid class set") from None
    labels = [str(label) for label in meta.get("labels", [])]
    if not labels:
        raise A2OError(f"--model {path}: model/{_META_FILE} lists no labels; re-save the model")
    if meta.get("num_frames") != cfg.data.num_frames or meta.get("resolution") != cfg.data.resolution:
        raise ConfigError(
            f"--model {path}: the model expects T={meta.get('num_frames')} frames at "
            f"{meta.get('resolution')} px but config.yaml has data.num_frames={cfg.data.num_frames}, "
            f"data.resolution={cfg.data.resolution}; the directory mixes two runs"
        )
    for key, value in (("classes", list(classes)), ("labels", labels)):
        if key in metrics and [str(v) for v in metrics[key]] != value:
            raise ConfigError(
                f"--model {path}: metrics.json {key} differ from the saved model's; the directory mixes two runs"
            )
    warning = None
    if cfg.detect.detector in ORACLE_DETECTORS and classes:
        if not allow_oracle_detector:
            raise ConfigError(_oracle_refusal(path, cfg.detect.detector, classes, metrics))
        warning = ORACLE_WARNING
    fingerprint = metrics.get("detector_fingerprint")
    return BestModel(
        root=root,
        config=cfg,
        classes=classes,
        labels=labels,
        metrics=metrics,
        trained_detector_fingerprint=str(fingerprint) if fingerprint is not None else None,
        warning=warning,
    )


def _with_detector_dir(cfg: ExperimentConfig, root: str, path: str) -> ExperimentConfig:
    """For a learned detector, ``detect.learned_model`` = ``<best>/detector`` (which must exist).

    best/ is self-contained: config.yaml says ``detector`` (relative), and load_config would have
    resolved that against the working directory, so the path is set here from best/'s own location.
    """
    if cfg.detect.detector != "learned":
        return cfg
    detector_dir = os.path.join(root, DETECTOR_DIR)
    if not os.path.isfile(os.path.join(detector_dir, _LEARNED_META_FILE)):
        what = "has no detector.json" if os.path.isdir(detector_dir) else "is missing"
        raise ConfigError(
            f"--model {path}: {DETECTOR_DIR}/ {what}; this model was trained with the learned "
            f"detector (detect.detector: learned), whose weights best/ must hold in {DETECTOR_DIR}/ "
            "(detector.json + model.safetensors). Rewrite best/ with the search's final step, or copy "
            f"the trained detector's directory (storage.root/detectors/<key>) to {detector_dir}"
        )
    return dataclasses.replace(cfg, detect=dataclasses.replace(cfg.detect, learned_model=detector_dir))


def _oracle_refusal(path: str, detector: str, classes: ClassSet, metrics: dict[str, Any]) -> str:
    test = metrics.get("test")
    offline = ""
    if isinstance(test, dict) and isinstance(test.get("accuracy"), (int, float)):
        offline = f" (offline test top-1 {test['accuracy']:.3f})"
    return (
        f"--model {path}: refusing to serve a model whose detector cannot see pixels. Its "
        f"{len(classes)} object maps ({', '.join(classes)}) come from the {detector!r} detector, which "
        "reads the dataset's ground-truth masks/boxes; uploaded videos carry none, so every map would "
        f"be empty and predictions would not match the offline metrics{offline}. Fix: retrain with "
        "detect.detector: learned (A2O-Synth) or grounded_sam2, or pass --allow-oracle-detector "
        "to serve it anyway (every response then carries a warning)"
    )


def check_detector_fingerprint(best: BestModel, fingerprint: str) -> None:
    """Compare the serving detector's ``fingerprint`` with the one the model was trained with.

    A learned detector that differs is an error: its maps would not be the ones the model learned
    from, and best/detector/ is supposed to be that very detector. Other detectors (whose weights
    come from a hub id or path outside best/) only get a warning, as a changed checkpoint may be
    intended.
    """
    trained = best.trained_detector_fingerprint
    if trained is None or trained == fingerprint:
        return
    if best.config.detect.detector == "learned":
        raise ConfigError(
            f"--model {best.root}: the learned detector in {DETECTOR_DIR}/ has fingerprint {fingerprint} "
            f"but the model was trained with {trained} (metrics.json detector_fingerprint); "
            f"{DETECTOR_DIR}/ was replaced or modified. Restore the detector the model was trained "
            "with, or rewrite best/ with the search's final step"
        )
    log.warning(
        "the serving detector's fingerprint differs from the one the model was trained "
        "with (%s vs %s): predictions may differ from the reported metrics",
        fingerprint,
        trained,
    )
