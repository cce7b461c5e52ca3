"""Random search: seeded random subsets of a vocabulary (a users' baseline)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any, Optional

from ray.tune.search import Searcher

from a2o.detect.classes import ClassSet
from searchers.base import LoggedSearcher
from searchers.trials import TrialLog, check_mode
from searchers.words import usable_words

__all__ = ["RandomSubsetSearcher"]


class RandomSubsetSearcher(LoggedSearcher):
    """Suggests ``{"classes": [...]}``: a uniform random subset of ``vocabulary`` whose size is
    uniform in ``[1, min(max_classes, len(vocabulary))]``, avoiding sets already suggested while
    untried ones are easy to find.

    Args:
        vocabulary: Candidate classes (entries breaking the class-text rule are dropped, with a
            warning that counts them).
        max_classes: ``C_max``, the largest subset.
        num_trials: Budget; ``suggest`` returns ``Searcher.FINISHED`` after this many.
        metric: Metric reported by the trainable (recorded in ``history``; random search ignores
            it). None: Tune's, else ``"val_accuracy"``.
        mode: ``"max"``, ``"min"`` or None (Tune's, else ``"max"``); only :meth:`best` reads it.
        seed: Seeds the searcher's own ``random.Random``; same seed -> same suggestions.

    .. warning::
        Results do not steer random search; it only records them (``searcher.history``, a list of
        :class:`~a2o.records.TrialRecord`) so a restored run reports the same history. Tune passes
        ``TuneConfig``'s ``metric``/``mode`` only with a non-empty ``param_space``; otherwise pass
        them here, or ``"val_accuracy"``/``"max"`` are used (logged once).

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
                 metric: Optional[str] = None, mode: Optional[str] = None, seed: int = 0):
        super().__init__(metric=metric, mode=check_mode(mode))
        self.vocabulary = usable_words(vocabulary)
        if not self.vocabulary:
            raise ValueError("vocabulary has no usable class: set search.vocabulary to a list of short nouns")
        if max_classes < 1 or num_trials < 1:
            raise ValueError("need max_classes >= 1 and num_trials >= 1")
        self.max_classes = int(max_classes)
        self.num_trials = int(num_trials)
        self.seed = int(seed)
        self._rng = random.Random(self.seed)
        self.tried: list[ClassSet] = []
        self.log = TrialLog()



    def suggest(self, trial_id: str) -> Optional[dict[str, Any]]:
        self._metric_and_mode()
        if len(self.tried) >= self.num_trials:
            return Searcher.FINISHED
        tried = {c.as_frozenset() for c in self.tried}
        upper = min(self.max_classes, len(self.vocabulary))
        for _ in range(20):
            classes = self._rng.sample(self.vocabulary, self._rng.randint(1, upper))
            if frozenset(classes) not in tried:
                break
        class_set = ClassSet(tuple(classes))  # vocabulary words passed the rule; a sample has no repeats
        self.tried.append(class_set)
        self.log.start(trial_id, class_set, source="random")
        return {"classes": list(class_set)}

