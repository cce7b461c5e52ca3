"""The Ray Serve application of a ``best/`` directory, and its ``serve run`` builder.

``build_app({"model": "runs/x/best"})`` reads and checks the directory on the driver, then binds
three deployments composed by handles::

    PredictIngress (FastAPI)  ──prepare(bytes)──▶  ClipDetector   (serve.detector_gpus)
                              ──predict(clip)──▶  ClipRecognizer (serve.recognizer_gpus, @serve.batch)

Each deployment autoscales between ``serve.min_replicas`` and ``serve.max_replicas`` and takes at
most ``serve.max_ongoing_requests`` at once. Run it with ``a2o serve --model DIR`` or::

    serve run a2o.serve.app:build_app model=runs/x/best

(``serve build`` needs a module-level Application; write a config with :func:`serve_config`
instead and ``serve deploy``/``serve run`` it.) HTTP binds to 127.0.0.1 unless told otherwise.

A model whose detector cannot see pixels (the ``annotation`` oracle) is refused by
:func:`a2o.serve.best.read_best` unless ``allow_oracle_detector=true`` is passed; then it is served
with a WARNING in the log and a ``warning`` field in every prediction response.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from a2o.config import apply_overrides, config_from_dict, config_to_dict
from a2o.errors import ConfigError
from a2o.serve.best import BestModel, check_detector_fingerprint, read_best

__all__ = ["AppArgs", "build_app", "serve_config", "APP_NAME"]

log = logging.getLogger(__name__)

APP_NAME = "a2o"


class AppArgs(BaseModel):
    """Arguments of :func:`build_app` (``serve run a2o.serve.app:build_app key=value ...``)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="Path of the best/ directory (visible from every node).")
    overrides: list[str] = Field(
        default_factory=list,
        description="Config overrides applied to best/config.yaml, e.g. ['serve.max_batch_size=8'].",
    )
    detector_cpus: float = Field(1.0, gt=0, description="CPUs per detector replica.")
    recognizer_cpus: float = Field(1.0, gt=0, description="CPUs per recognizer replica.")
    ingress_cpus: float = Field(0.0, ge=0, description="CPUs per HTTP ingress replica (it only moves bytes).")
    allow_oracle_detector: bool = Field(
        False,
        description="Serve a model whose detector reads annotations (blind on uploads) anyway; every "
        "response then carries a warning.",
    )


def _parse_args(args: AppArgs | dict[str, Any]) -> AppArgs:
    if isinstance(args, AppArgs):
        return args
    values = dict(args)
    if isinstance(values.get("overrides"), str):  # `serve run ... overrides=a=1,b=2` gives a string
        values["overrides"] = [item for item in values["overrides"].split(",") if item]
    try:
        return AppArgs.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"serve app arguments: {problems}. Pass at least model=PATH_TO_BEST") from None


def _with_overrides(best: BestModel, overrides: list[str]) -> BestModel:
    if not overrides:
        return best
    cfg = config_from_dict(apply_overrides(config_to_dict(best.config), overrides))
    return dataclasses.replace(best, config=cfg)


def _autoscaling(serve_cfg: Any) -> dict[str, Any]:
    return {"min_replicas": serve_cfg.min_replicas, "max_replicas": serve_cfg.max_replicas}


def build_app(args: AppArgs | dict[str, Any]) -> Any:
    """The Serve ``Application`` of ``args["model"]`` (a best/ directory); see the module docstring."""
    from ray import serve

    from a2o.detect.base import detector_fingerprint
    from a2o.serve.deployments import ClipDetector, ClipRecognizer, PredictIngress

    parsed = _parse_args(args)
    best = _with_overrides(
        read_best(parsed.model, allow_oracle_detector=parsed.allow_oracle_detector), parsed.overrides
    )
    fingerprint = detector_fingerprint(best.config.detect)
    check_detector_fingerprint(best, fingerprint)  # a replaced learned detector fails before deploying
    if best.warning:
        log.warning("serving %s with --allow-oracle-detector: %s", best.root, best.warning)
    serve_cfg = best.config.serve
    if serve_cfg.max_ongoing_requests < serve_cfg.max_batch_size:
        log.warning(
            "serve.max_ongoing_requests=%d < serve.max_batch_size=%d: recognizer batches can never fill",
            serve_cfg.max_ongoing_requests,
            serve_cfg.max_batch_size,
        )
    common = {
        "autoscaling_config": _autoscaling(serve_cfg),
        "max_ongoing_requests": serve_cfg.max_ongoing_requests,
    }
    detector = serve.deployment(
        ClipDetector,
        name="ClipDetector",
        ray_actor_options={"num_cpus": parsed.detector_cpus, "num_gpus": serve_cfg.detector_gpus},
        **common,
    ).bind(best)
    recognizer = serve.deployment(
        ClipRecognizer,
        name="ClipRecognizer",
        ray_actor_options={"num_cpus": parsed.recognizer_cpus, "num_gpus": serve_cfg.recognizer_gpus},
        **common,
    ).bind(best)
    ingress = serve.deployment(
        PredictIngress,
        name="PredictIngress",
        ray_actor_options={"num_cpus": parsed.ingress_cpus},
        **common,
    )
    log.info(
        "serving %s: %d labels, classes %s, detector %s",
        best.root,
        len(best.labels),
        best.classes,
        best.config.detect.detector,
    )
    return ingress.bind(detector, recognizer, best, fingerprint)


def serve_config(
    args: AppArgs | dict[str, Any], *, host: str = "127.0.0.1", port: int = 8000
) -> dict[str, Any]:
    """A Serve config (``serve deploy``/``serve run`` YAML as a dict) running :func:`build_app`.

    It stands in for ``serve build``, which cannot build an app that needs a model path.
    """
    parsed = _parse_args(args)
    read_best(parsed.model, allow_oracle_detector=parsed.allow_oracle_detector)  # fail here, not at deploy time
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": host, "port": int(port)},
        "applications": [
            {
                "name": APP_NAME,
                "route_prefix": "/",
                "import_path": "a2o.serve.app:build_app",
                "args": parsed.model_dump(),
            }
        ],
    }
