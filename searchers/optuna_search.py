"""Optuna TPE over a vocabulary (a users' baseline), in one of two search spaces.

``space="flags"``: one on/off flag per word (the literal encoding of "any subset"). With a few
hundred words most flags are on in every sample, and the set is the first ``max_classes`` of them
in a fixed order, so TPE learns little in a few dozen trials.

``space="slots"``: what a practitioner writes for "choose up to C_max of these words":
``C_max`` categorical slots, each one word of the vocabulary or ``(none)``. TPE models each
slot's distribution over words, so a word that scored well is drawn again; duplicates collapse;
an all-``(none)`` sample becomes the first slot's most likely word (the seeded order's first).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from typing import Any, Optional

from ray.tune.search import Searcher

from a2o.detect.classes import ClassSet
from a2o.errors import require
from searchers.base import LoggedSearcher
from searchers.trials import TrialLog, check_mode
from searchers.words import usable_words

__all__ = ["OptunaTPESearcher", "SPACES", "NONE_WORD"]

SPACES = ("flags", "slots")
NONE_WORD = "(none)"  # the empty choice of a slot (it breaks the class-text rule, so never a class)

logger = logging.getLogger(__name__)


class OptunaTPESearcher(LoggedSearcher):
    """Optuna's TPE sampler over the vocabulary, mapped to ``{"classes": [...]}``.

    ``space="flags"``: binary flags ``use:<word>``; ``space="slots"``: ``max_classes`` categorical
    slots ``slot<i>`` over the vocabulary and ``(none)`` (see the module docstring for why the
    second is the practitioner's choice). Optuna is driven directly through ``study.ask()`` / ``study.tell()``. A flag vector maps to a
    class set deterministically: the selected words, cut to ``max_classes`` in a seeded order;
    an empty selection becomes that order's first word. Errored trials and non-finite metrics are
    told to Optuna as failed trials. Early-stopped trials are told their last reported value.

    The study is created at the first ``suggest``, so its direction is the mode in force then:
    the constructor's, or Tune's (``set_search_properties``), or ``"max"``. It is saved with the
    searcher, so a restored search keeps its direction.

    Args:
        vocabulary: Candidate classes (entries breaking the class-text rule are dropped, with a
            warning that counts them).
        max_classes: ``C_max``, the largest suggested set.
        num_trials: Budget; ``suggest`` returns ``Searcher.FINISHED`` after this many.
        metric: Metric reported by the trainable. None: Tune's, else ``"val_accuracy"``.
        mode: ``"max"``, ``"min"`` or None (Tune's, else ``"max"``): the study's direction.
        seed: Seeds TPE and the truncation order; same seed + same results -> same suggestions.
        n_startup_trials: Random trials before TPE starts modelling.
        space: ``"flags"`` or ``"slots"``.

    .. warning::
        Needs the optional dependency: ``pip install 'a2o[optuna]'``. With many words and few
        trials TPE is close to random search.

    .. warning::
        Tune passes ``TuneConfig``'s ``metric``/``mode`` only with a non-empty ``param_space``:
        with an empty one, ``mode="min"`` must be given here (otherwise the study maximises,
        logged once at INFO).

    Example:

    .. code-block:: python

        import ray
        from ray import tune
        from searchers.optuna_search import OptunaTPESearcher

        def trainable(config):
            tune.report({"val_accuracy": len({"ball", "net"} & set(config["classes"])) / 2, "epoch": 1})

        searcher = OptunaTPESearcher(["ball", "net", "hand", "floor"], max_classes=3, num_trials=6,
                                     metric="val_accuracy", mode="max")
        ray.init(address="local", num_cpus=2, include_dashboard=False)
        tune.Tuner(trainable, tune_config=tune.TuneConfig(
            search_alg=searcher, num_samples=6, metric="val_accuracy", mode="max")).fit()
    """

    def __init__(self, vocabulary: Sequence[str], *, max_classes: int = 12, num_trials: int = 8,
                 metric: Optional[str] = None, mode: Optional[str] = None, seed: int = 0,
                 n_startup_trials: int = 5, space: str = "flags"):
        super().__init__(metric=metric, mode=check_mode(mode))
        if space not in SPACES:
            raise ValueError(f"OptunaTPESearcher space {space!r}: use one of {SPACES}")
        self.space = space
        require("optuna", "optuna")
        self.vocabulary = usable_words(vocabulary)
        if not self.vocabulary:
            raise ValueError("vocabulary has no usable class: set search.vocabulary to a list of short nouns")
        if max_classes < 1 or num_trials < 1:
            raise ValueError("need max_classes >= 1 and num_trials >= 1")
        self.max_classes = int(max_classes)
        self.num_trials = int(num_trials)
        self.seed = int(seed)
        self.n_startup_trials = int(n_startup_trials)
        self._order = list(self.vocabulary)
        random.Random(self.seed).shuffle(self._order)
        self._study = None  # created at the first suggest, in the mode in force then
        self._numbers: dict[str, int] = {}  # running trial id -> optuna trial number
        self.tried: list[ClassSet] = []
        self.log = TrialLog()

    @property
    def study(self):
        """The ``optuna.Study`` (None before the first suggestion)."""
        return self._study


    def set_search_properties(self, metric: Optional[str], mode: Optional[str], config: dict, **spec) -> bool:
        check_mode(mode)
        if mode and self._study is not None and mode != self._mode:
            logger.warning("%s: the study already runs in mode %r; Tune's mode %r is ignored",
                           type(self).__name__, self._mode, mode)
            mode = None
        self._metric, self._mode = metric or self._metric, mode or self._mode
        return True

    def _classes(self, flags: dict[str, bool]) -> list[str]:
        chosen = [w for w in self._order if flags[f"use:{w}"]]
        return chosen[: self.max_classes] or self._order[:1]

    def suggest(self, trial_id: str) -> Optional[dict[str, Any]]:
        _, mode = self._metric_and_mode()
        if len(self.tried) >= self.num_trials:
            return Searcher.FINISHED
        if self._study is None:
            optuna = require("optuna", "optuna")
            sampler = optuna.samplers.TPESampler(seed=self.seed, n_startup_trials=self.n_startup_trials)
            self._study = optuna.create_study(direction="maximize" if mode == "max" else "minimize", sampler=sampler)
        trial = self._study.ask()
        if self.space == "slots":
            choices = [NONE_WORD, *self._order]
            picked = [trial.suggest_categorical(f"slot{i}", choices) for i in range(1, self.max_classes + 1)]
            words = list(dict.fromkeys(w for w in picked if w != NONE_WORD)) or self._order[:1]
        else:
            flags = {f"use:{w}": trial.suggest_categorical(f"use:{w}", [False, True]) for w in self.vocabulary}
            words = self._classes(flags)
        class_set = ClassSet(tuple(words))  # vocabulary words passed the rule
        self.tried.append(class_set)
        self._numbers[trial_id] = trial.number
        self.log.start(trial_id, class_set, source="optuna")
        return {"classes": list(class_set)}


    def on_trial_complete(self, trial_id: str, result: Optional[Mapping[str, Any]] = None, error: bool = False) -> None:
        record = self.log.complete(trial_id, result, error=error, metric=self._metric_and_mode()[0])
        number = self._numbers.pop(trial_id, None)
        if record is None or number is None:
            return  # not a trial this searcher is running (a restore, a re-run): ignored
        from optuna.trial import TrialState

        if record.scored:
            self._study.tell(number, record.val_accuracy)
        else:
            self._study.tell(number, state=TrialState.FAIL)

