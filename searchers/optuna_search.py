"""Optuna TPE over one on/off flag per vocabulary word (a users' baseline)."""

from __future__ import annotations

import math
import pickle
import random
from collections.abc import Sequence
from typing import Any, Optional

from ray.tune.search import Searcher

from a2o.errors import require
from searchers.parsing import parse_class_reply

__all__ = ["OptunaTPESearcher"]


class OptunaTPESearcher(Searcher):
    """Optuna's TPE sampler over binary flags ``use:<word>``, mapped to ``{"classes": [...]}``.

    Optuna is driven directly through ``study.ask()`` / ``study.tell()``. A flag vector maps to a
    class set deterministically: the selected words, cut to ``max_classes`` in a seeded order;
    an empty selection becomes that order's first word. Errored trials and non-finite metrics are
    told to Optuna as failed trials. Early-stopped trials are told their last reported value.

    Args:
        vocabulary: Candidate classes (sanitised; unsafe entries are dropped).
        max_classes: ``C_max``, the largest suggested set.
        num_trials: Budget; ``suggest`` returns ``Searcher.FINISHED`` after this many.
        metric: Metric reported by the trainable.
        mode: ``"max"`` or ``"min"`` (the study's direction).
        seed: Seeds TPE and the truncation order; same seed + same results -> same suggestions.
        n_startup_trials: Random trials before TPE starts modelling.

    .. warning::
        Needs the optional dependency: ``pip install 'a2o[optuna]'``. With many words and few
        trials TPE is close to random search.

    Example:

    .. code-block:: python

        import ray
        from ray import tune
        from searchers.optuna_search import OptunaTPESearcher

        def trainable(config):
            tune.report({"val_accuracy": len({"ball", "net"} & set(config["classes"])) / 2, "epoch": 1})

        searcher = OptunaTPESearcher(["ball", "net", "hand", "floor"], max_classes=3, num_trials=6)
        ray.init(address="local", num_cpus=2, include_dashboard=False)
        tune.Tuner(trainable, tune_config=tune.TuneConfig(
            search_alg=searcher, num_samples=6, metric="val_accuracy", mode="max")).fit()
    """

    def __init__(self, vocabulary: Sequence[str], *, max_classes: int = 12, num_trials: int = 8,
                 metric: str = "val_accuracy", mode: str = "max", seed: int = 0, n_startup_trials: int = 5):
        super().__init__(metric=metric, mode=mode)
        optuna = require("optuna", "optuna")
        self.vocabulary = parse_class_reply("\n".join(map(str, vocabulary)), max_classes=10**6)
        if not self.vocabulary:
            raise ValueError("vocabulary has no usable class: set search.vocabulary to a list of short nouns")
        if max_classes < 1 or num_trials < 1:
            raise ValueError("need max_classes >= 1 and num_trials >= 1")
        self.max_classes = int(max_classes)
        self.num_trials = int(num_trials)
        self.seed = int(seed)
        self._order = list(self.vocabulary)
        random.Random(self.seed).shuffle(self._order)
        sampler = optuna.samplers.TPESampler(seed=self.seed, n_startup_trials=n_startup_trials)
        self._study = optuna.create_study(direction="maximize" if mode == "max" else "minimize",
                                          sampler=sampler)
        self._suggested = 0
        self._live: dict[str, dict[str, Any]] = {}  # trial_id -> optuna trial number, last value
        self.history: list[dict[str, Any]] = []

    def set_search_properties(self, metric: Optional[str], mode: Optional[str], config: dict, **spec) -> bool:
        self._metric = metric or self._metric
        return True

    def _classes(self, flags: dict[str, bool]) -> list[str]:
        chosen = [w for w in self._order if flags[f"use:{w}"]]
        return chosen[: self.max_classes] or self._order[:1]

    def suggest(self, trial_id: str) -> Optional[dict[str, Any]]:
        if self._suggested >= self.num_trials:
            return Searcher.FINISHED
        trial = self._study.ask()
        flags = {f"use:{w}": trial.suggest_categorical(f"use:{w}", [False, True]) for w in self.vocabulary}
        classes = self._classes(flags)
        self._suggested += 1
        self._live[trial_id] = {"number": trial.number, "classes": classes, "value": None}
        return {"classes": classes}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._live:
            self._live[trial_id]["value"] = result.get(self.metric)

    def on_trial_complete(self, trial_id: str, result: Optional[dict] = None, error: bool = False) -> None:
        live = self._live.pop(trial_id, None)
        if live is None:
            return
        from optuna.trial import TrialState

        value = (result or {}).get(self.metric, live["value"])
        finite = isinstance(value, (int, float)) and math.isfinite(value)
        if error or not finite:
            self._study.tell(live["number"], state=TrialState.FAIL)
        else:
            self._study.tell(live["number"], float(value))
        status = "error" if error else ("ok" if finite else "invalid")
        self.history.append({"classes": live["classes"], "status": status,
                             "val_accuracy": float(value) if finite and not error else None})

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as fh:
            pickle.dump(self.__dict__, fh)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as fh:
            self.__dict__.update(pickle.load(fh))
