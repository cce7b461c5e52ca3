"""Every registered searcher runs the shipped contract (searchers/testing.py).

Each (searcher, check) pair is its own test. LLM searchers get the scripted client
(``ScriptedLLMFactory``: a seeded draw over a small word list, a function of the request), so
"same seed + same replies -> same suggestions" holds end to end. A small reference searcher runs
the same checks first: it shows the contract can be met, so a failure below is the searcher's.

The Tune-level checks run a real ``tune.Tuner`` on the session's local Ray cluster (the
``ray_local`` fixture); a few cases run by default (see DEFAULT_TUNER_CASES), the full matrix
under ``-m slow``.
"""

from __future__ import annotations

import importlib.util
import math
import pickle
import random
from typing import Any, Optional

import pytest
from ray.tune.search import Searcher

from searchers import LLM_SEARCHERS, SEARCHER_CLASSES, create_searcher
from searchers.testing import (
    CHECKS,
    WORDS,
    ContractSpec,
    ScriptedLLM,
    ScriptedLLMFactory,
    check_mode_min_mirrors_max,
    check_tuner_concurrency_limiter,
    check_tuner_restore_min,
    hash_proxy,
)

ACTIONS = ("serve", "volley", "smash")
SPEC = ContractSpec(max_classes=5, num_trials=5, action_names=ACTIONS)
# each trial costs Tune seconds; a metric other than the searchers' fallback ("val_accuracy"), so a
# searcher that keeps a default metric (which ConcurrencyLimiter copies) fails the run
TUNER_SPEC = ContractSpec(max_classes=5, num_trials=4, action_names=ACTIONS, metric="score")
OOD_HISTORY = [{"classes": ["ball", "net"], "val_accuracy": 0.4, "classwise_accuracy": {"dunk": 0.5}},
               {"classes": ["hand", "court"], "val_accuracy": 0.2}]
HAS_OPTUNA = importlib.util.find_spec("optuna") is not None


class ReferenceSearcher(Searcher):
    """The control: random vocabulary subsets, meeting the contract in a few lines."""

    def __init__(self, vocabulary, *, max_classes: int, num_trials: int, metric: Optional[str] = None,
                 mode: Optional[str] = None, seed: int = 0):
        super().__init__(metric=metric, mode=mode)
        self.vocabulary, self.max_classes, self.num_trials = list(vocabulary), max_classes, num_trials
        self._rng = random.Random(seed)
        self._suggested: list[frozenset] = []
        self._live: dict[str, Any] = {}
        self.history: list[dict[str, Any]] = []

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        self._metric, self._mode = metric or self._metric, mode or self._mode
        return True

    def suggest(self, trial_id: str):
        if len(self._suggested) >= self.num_trials:
            return Searcher.FINISHED
        while True:
            classes = self._rng.sample(self.vocabulary, self._rng.randint(1, self.max_classes))
            if frozenset(classes) not in self._suggested:
                break
        self._suggested.append(frozenset(classes))
        self._live[trial_id] = {"classes": classes, "value": None}
        return {"classes": classes}

    def _value(self, result) -> Any:
        return (result or {}).get(self.metric or "val_accuracy")

    def on_trial_result(self, trial_id: str, result) -> None:
        if trial_id in self._live and self._value(result) is not None:
            self._live[trial_id]["value"] = self._value(result)

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
        live = self._live.pop(trial_id, None)
        if live is None:
            return
        value = self._value(result) if self._value(result) is not None else live["value"]
        finite = isinstance(value, float) and math.isfinite(value) and not error
        self.history.append({"classes": live["classes"], "val_accuracy": value if finite else None,
                             "status": "error" if error else ("ok" if finite else "invalid")})

    def best(self):
        scored = [e for e in self.history if e["val_accuracy"] is not None]
        sign = -1.0 if self.mode == "min" else 1.0
        return max(scored, key=lambda e: sign * e["val_accuracy"]) if scored else None

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as fh:
            pickle.dump(self.__dict__, fh)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as fh:
            self.__dict__.update(pickle.load(fh))


SCRIPTED = ScriptedLLMFactory(seed=7)
# For the mirror check: replies blind to the prompt (it shows the values, which differ by sign)
# and drawn from few words, so duplicates force the fallback, the part of an LLM searcher that
# reads ``mode``.
BLIND_NARROW = ScriptedLLMFactory(words=WORDS[:3], seed=7, min_words=2, max_words=2, follow_prompt=False)


def factory_for(name: str, *, llm: ScriptedLLMFactory = SCRIPTED, spec: ContractSpec = SPEC):
    """A zero-argument-by-default factory of fresh, identical searchers (``metric``/``mode`` overridable)."""
    if name.startswith("optuna") and not HAS_OPTUNA:
        pytest.skip("optuna is not installed (pip install 'a2o[optuna]')")

    def factory(**overrides: Any):
        common = {"max_classes": spec.max_classes, "num_trials": spec.num_trials, "seed": 0, **overrides}
        if name == "reference":
            return ReferenceSearcher(WORDS, **common)
        if name == "optuna":  # TPE models from the third trial on, so results steer the budget's rest
            return create_searcher(name, vocabulary=list(WORDS), n_startup_trials=2, **common)
        if name == "optuna-slots":  # the practitioner's space of benchmarks/searchers.py
            return create_searcher("optuna", vocabulary=list(WORDS), n_startup_trials=2, space="slots", **common)
        if name.removesuffix("-screened") not in LLM_SEARCHERS:
            return create_searcher(name, vocabulary=list(WORDS), **common)
        extra: dict[str, Any] = {"vocabulary": list(WORDS)}
        if name == "ood":
            extra["ood_history"] = OOD_HISTORY
        if name == "hybrid":
            extra.update(lr_range=(1e-5, 1e-3), weight_decay_range=(1e-4, 1e-1))
        if name == "icrl-screened":  # K = 3 candidates per iteration, scored by a stand-in proxy
            extra.update(screen_candidates=3, screen=hash_proxy, response_format="json_schema")
        return create_searcher(name.removesuffix("-screened"), llm=llm,
                               action_names=list(ACTIONS), **extra, **common)

    return factory


NAMES = ["reference", *sorted(SEARCHER_CLASSES), "optuna-slots", "icrl-screened"]


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__.removeprefix("check_"))
@pytest.mark.parametrize("name", NAMES)
def test_contract(name, check):
    check(factory_for(name, llm=BLIND_NARROW if check is check_mode_min_mirrors_max else SCRIPTED), SPEC)


def test_scripted_llm_is_a_function_of_the_request():
    messages = [{"role": "user", "content": "propose classes"}]
    first, second = ScriptedLLM(seed=3), ScriptedLLMFactory(seed=3)()
    replies = [client.complete(messages, response_format=None, seed=11).text for client in (first, second)]
    assert replies[0] == replies[1] and 2 <= len(replies[0].splitlines()) <= 5
    assert set(replies[0].splitlines()) <= set(WORDS)
    other = ScriptedLLM(seed=3).complete([{"role": "user", "content": "something else"}], seed=11).text
    blind = ScriptedLLM(seed=3, follow_prompt=False)
    assert other != replies[0]  # follows the prompt (for this fixed seed the draws differ)
    assert blind.complete(messages, seed=11).text == blind.complete([{"role": "user", "content": "x"}], seed=11).text
    scripted = ScriptedLLM(script=["ball\nnet"])
    assert scripted.complete(messages, seed=0).text == "ball\nnet" and len(scripted.requests) == 1
    assert '"classes"' in ScriptedLLM().complete(messages, response_format={"type": "json_schema"}, seed=0).text
    assert pickle.loads(pickle.dumps(ScriptedLLMFactory(seed=3))) == ScriptedLLMFactory(seed=3)


# ---------------------------------------------------------------------------- a real tune.Tuner

# The default tier runs the cases that matter most for A2O (its param_space is empty) and keeps
# the file near a minute: an LLM searcher's Tuner run costs ~10 s (Tune re-polls a None suggestion
# on its next loop tick), a vocabulary searcher's ~3 s. Everything else: -m slow.
DEFAULT_TUNER_CASES = {("random", "empty"), ("random", "constant"), ("icrl", "empty"), ("icrl-screened", "empty")}
DEFAULT_RESTORE_CASES = {"random"}


def _tier(cases: set, *key):
    return [] if (key if len(key) > 1 else key[0]) in cases else [pytest.mark.slow]


@pytest.mark.parametrize(
    "name, space",
    [pytest.param(n, s, marks=_tier(DEFAULT_TUNER_CASES, n, s), id=f"{n}-{s}")
     for n in NAMES for s in ("empty", "constant")],
)
def test_tuner_concurrency_limiter(name, space, ray_local, tmp_path):
    param_space = {} if space == "empty" else {"epochs": 1}
    check_tuner_concurrency_limiter(factory_for(name, spec=TUNER_SPEC), TUNER_SPEC, storage_path=str(tmp_path),
                                    param_space=param_space)


@pytest.mark.parametrize("name", [pytest.param(n, marks=_tier(DEFAULT_RESTORE_CASES, n)) for n in NAMES])
def test_tuner_restore_min(name, ray_local, tmp_path):
    check_tuner_restore_min(factory_for(name, spec=TUNER_SPEC), TUNER_SPEC, storage_path=str(tmp_path))
