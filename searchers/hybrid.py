"""{lr, weight_decay} + ICRL: the paper's combined search space."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

from searchers.icrl import ICRLSearcher
from searchers.proposer import LLMArg

__all__ = ["LogUniformSampler", "hybrid_searcher"]


class LogUniformSampler:
    """Seeded log-uniform samples of named hyperparameters, drawn in the order of ``ranges``.

    Args:
        ranges: ``name -> (low, high)`` with ``0 < low <= high``.
        seed: Seeds the sampler's own ``random.Random`` (independent of every other stream).
    """

    def __init__(self, ranges: dict[str, tuple[float, float]], seed: int = 0):
        for name, (low, high) in ranges.items():
            if not 0 < low <= high:
                raise ValueError(f"{name}_range must be (low, high) with 0 < low <= high, got {(low, high)}")
        self.ranges = {name: (float(low), float(high)) for name, (low, high) in ranges.items()}
        self._rng = random.Random(seed)

    def sample(self) -> dict[str, float]:
        return {name: float(math.exp(self._rng.uniform(math.log(low), math.log(high))))
                for name, (low, high) in self.ranges.items()}


def hybrid_searcher(llm: LLMArg, action_names: Sequence[str], *,
                    lr_range: tuple[float, float] = (1e-5, 1e-3),
                    weight_decay_range: tuple[float, float] = (1e-4, 0.3), **kwargs: Any) -> ICRLSearcher:
    """ICRL proposes the classes; a seeded log-uniform sampler proposes ``lr`` and ``weight_decay``.

    Each suggestion is ``{"classes": [...], "proposal_source": ..., "lr": float,
    "weight_decay": float}``. The history shown to the LLM lists each trial's hyperparameters next
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
        from searchers.hybrid import hybrid_searcher
        from searchers.llm_client import LLMClientSpec

        def trainable(config):
            tune.report({"val_accuracy": 1.0 - abs(math.log10(config["lr"]) + 4) / 3, "epoch": 1})

        searcher = hybrid_searcher(LLMClientSpec(base_url="http://127.0.0.1:8080/v1"),
                                   action_names=["walk", "run"], num_trials=4, metric="val_accuracy", mode="max")
        ray.init(address="local", num_cpus=2, include_dashboard=False)
        tune.Tuner(trainable, tune_config=tune.TuneConfig(
            search_alg=searcher, num_samples=4, metric="val_accuracy", mode="max")).fit()
    """
    seed = int(kwargs.get("seed", 0))
    sampler = LogUniformSampler({"lr": lr_range, "weight_decay": weight_decay_range},
                                seed=seed * 7919 + 17)  # independent of the fallback's stream
    return ICRLSearcher(llm, action_names, hyperparameters=sampler, **kwargs)
