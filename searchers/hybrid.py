"""{lr, weight_decay} + ICRL: the paper's combined search space."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

from searchers.icrl import ICRLSearcher

__all__ = ["HybridSearcher"]


class HybridSearcher(ICRLSearcher):
    """ICRL proposes the classes; a seeded log-uniform sampler proposes ``lr`` and ``weight_decay``.

    Each suggestion is ``{"classes": [...], "lr": float, "weight_decay": float,
    "proposal_source": ...}``. The history shown to the LLM lists each trial's hyperparameters next
    to its classes, so the agent can tell a bad set from a bad learning rate.

    Args:
        llm: As :class:`~searchers.icrl.ICRLSearcher`.
        action_names: As :class:`~searchers.icrl.ICRLSearcher`.
        lr_range: ``(low, high)`` of the log-uniform learning-rate sampler.
        weight_decay_range: ``(low, high)`` of the log-uniform weight-decay sampler.
        **kwargs: Every other :class:`~searchers.icrl.ICRLSearcher` argument; ``seed`` also seeds
            the hyperparameter sampler (with its own random stream).

    .. warning::
        The trainable must read ``config["lr"]`` and ``config["weight_decay"]``; with a plain
        class-only trainable the sampled values are silently unused.

    Example:

    .. code-block:: python

        import math

        import ray
        from ray import tune
        from searchers.hybrid import HybridSearcher
        from searchers.llm_client import LLMClientSpec

        def trainable(config):
            tune.report({"val_accuracy": 1.0 - abs(math.log10(config["lr"]) + 4) / 3, "epoch": 1})

        searcher = HybridSearcher(LLMClientSpec(base_url="http://127.0.0.1:8080/v1"),
                                  action_names=["walk", "run"], num_trials=4)
        ray.init(address="local", num_cpus=2, include_dashboard=False)
        tune.Tuner(trainable, tune_config=tune.TuneConfig(
            search_alg=searcher, num_samples=4, metric="val_accuracy", mode="max")).fit()
    """

    def __init__(self, llm: Any, action_names: Sequence[str], *,
                 lr_range: tuple[float, float] = (1e-5, 1e-3),
                 weight_decay_range: tuple[float, float] = (1e-4, 0.3), **kwargs: Any):
        super().__init__(llm, action_names, **kwargs)
        for name, (low, high) in (("lr_range", lr_range), ("weight_decay_range", weight_decay_range)):
            if not 0 < low <= high:
                raise ValueError(f"{name} must be (low, high) with 0 < low <= high, got {(low, high)}")
        self.lr_range = tuple(lr_range)
        self.weight_decay_range = tuple(weight_decay_range)
        self._hp_rng = random.Random(self.seed * 7919 + 17)  # independent of the fallback's stream

    def _log_uniform(self, low: float, high: float) -> float:
        return float(math.exp(self._hp_rng.uniform(math.log(low), math.log(high))))

    def _config(self, classes: list[str], source: str) -> dict[str, Any]:
        config = super()._config(classes, source)
        config["lr"] = self._log_uniform(*self.lr_range)
        config["weight_decay"] = self._log_uniform(*self.weight_decay_range)
        return config
