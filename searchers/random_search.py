"""Random search: seeded random subsets of a vocabulary (a users' baseline)."""

from __future__ import annotations

import math
import pickle
import random
from collections.abc import Sequence
from typing import Any, Optional

from ray.tune.search import Searcher

from searchers.parsing import parse_class_reply

__all__ = ["RandomSubsetSearcher"]


class RandomSubsetSearcher(Searcher):
    """Suggests ``{"classes": [...]}``: a uniform random subset of ``vocabulary`` whose size is
    uniform in ``[1, min(max_classes, len(vocabulary))]``, avoiding sets already suggested while
    untried ones are easy to find.

    Args:
        vocabulary: Candidate classes (sanitised like LLM replies; unsafe entries are dropped).
        max_classes: ``C_max``, the largest subset.
        num_trials: Budget; ``suggest`` returns ``Searcher.FINISHED`` after this many.
        metric: Metric reported by the trainable (kept for results; random search ignores it).
        mode: ``"max"`` or ``"min"``.
        seed: Seeds the searcher's own ``random.Random``; same seed -> same suggestions.

    .. warning::
        Results do not steer random search; it only records them (``searcher.history``) so a
        restored run reports the same history.

    Example:

    .. code-block:: python

        import ray
        from ray import tune
        from searchers.random_search import RandomSubsetSearcher

        def trainable(config):
            tune.report({"val_accuracy": len({"ball", "net"} & set(config["classes"])) / 2, "epoch": 1})

        searcher = RandomSubsetSearcher(["ball", "net", "hand", "floor"], max_classes=3, num_trials=4)
        ray.init(address="local", num_cpus=2, include_dashboard=False)
        tune.Tuner(trainable, tune_config=tune.TuneConfig(
            search_alg=searcher, num_samples=4, metric="val_accuracy", mode="max")).fit()
    """

    def __init__(self, vocabulary: Sequence[str], *, max_classes: int = 12, num_trials: int = 8,
                 metric: str = "val_accuracy", mode: str = "max", seed: int = 0):
        super().__init__(metric=metric, mode=mode)
        self.vocabulary = parse_class_reply("\n".join(map(str, vocabulary)), max_classes=10**6)
        if not self.vocabulary:
            raise ValueError("vocabulary has no usable class: set search.vocabulary to a list of short nouns")
        if max_classes < 1 or num_trials < 1:
            raise ValueError("need max_classes >= 1 and num_trials >= 1")
        self.max_classes = int(max_classes)
        self.num_trials = int(num_trials)
        self.seed = int(seed)
        self._rng = random.Random(self.seed)
        self._suggested: list[list[str]] = []
        self._live: dict[str, dict[str, Any]] = {}
        self.history: list[dict[str, Any]] = []

    def set_search_properties(self, metric: Optional[str], mode: Optional[str], config: dict, **spec) -> bool:
        self._metric, self._mode = metric or self._metric, mode or self._mode
        return True

    def suggest(self, trial_id: str) -> Optional[dict[str, Any]]:
        if len(self._suggested) >= self.num_trials:
            return Searcher.FINISHED
        tried = {frozenset(s) for s in self._suggested}
        upper = min(self.max_classes, len(self.vocabulary))
        for _ in range(20):
            classes = self._rng.sample(self.vocabulary, self._rng.randint(1, upper))
            if frozenset(classes) not in tried:
                break
        self._suggested.append(classes)
        self._live[trial_id] = {"classes": classes, "value": None}
        return {"classes": list(classes)}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._live:
            self._live[trial_id]["value"] = result.get(self.metric)

    def on_trial_complete(self, trial_id: str, result: Optional[dict] = None, error: bool = False) -> None:
        live = self._live.pop(trial_id, None)
        if live is None:
            return
        value = (result or {}).get(self.metric, live["value"])
        finite = isinstance(value, (int, float)) and math.isfinite(value)
        status = "error" if error else ("ok" if finite else "invalid")
        self.history.append({"classes": live["classes"], "status": status,
                             "val_accuracy": float(value) if finite and not error else None})

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as fh:
            pickle.dump(self.__dict__, fh)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as fh:
            self.__dict__.update(pickle.load(fh))
