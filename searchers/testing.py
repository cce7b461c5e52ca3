"""The searcher contract, shipped: checks any Ray Tune searcher over object-class sets can run.

Like Optuna's ``optuna/testing/pytest_samplers.py``, this module is importable by a third-party
searcher's own tests. Each ``check_*`` function takes a *factory* and a :class:`ContractSpec`,
drives fresh searchers the way Tune does, and raises ``AssertionError`` with a message naming the
broken rule. The factory builds a fresh searcher on every call and accepts keyword overrides
``metric`` and ``mode`` (forwarded to the searcher's constructor); everything else (vocabulary,
LLM client, ``seed``, ``max_classes``, ``num_trials``) it fixes, so two calls give two identical
searchers.

Example (pytest):

.. code-block:: python

    import pytest
    from searchers.testing import CHECKS, ContractSpec

    SPEC = ContractSpec(max_classes=5, num_trials=4)

    def factory(**overrides):
        return MySearcher(["ball", "net", "hand", "cup"], max_classes=5, num_trials=4, seed=0,
                          **overrides)

    @pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
    def test_contract(check):
        check(factory, SPEC)

LLM searchers need a client: :class:`ScriptedLLM` is a deterministic one (its reply is a seeded
draw over a small word list, a function of the request), and :class:`ScriptedLLMFactory` builds
one from a picklable recipe so a searcher unpickled by ``Tuner.restore`` can rebuild it.

The two Tune-level checks (:data:`TUNER_CHECKS`) run a real ``tune.Tuner`` and need a running
Ray session (``ray.init(address="local", ...)``); the caller starts it.

What "A2O searcher" adds to Tune's ``Searcher`` contract, and what these checks therefore read:

- every suggestion is a JSON-serialisable dict whose ``"classes"`` is a non-empty ``list`` of
  ``str`` accepted by :meth:`a2o.detect.classes.ClassSet.parse` (no duplicates, no action name,
  at most ``max_classes``), never the same set (order-free) as an earlier suggestion;
- ``suggest`` may return ``None`` while it works in the background; Tune (and
  :func:`suggest_until_ready`) asks again;
- ``suggest`` returns ``Searcher.FINISHED`` once ``num_trials`` configs were suggested;
- optional, checked when present: ``best()`` (the best completed trial, a mapping or an object
  with ``val_accuracy``), ``history`` (completed trials, oldest first, same entry forms) and
  ``study`` (an ``optuna.Study``).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ray.tune.search import Searcher

from a2o.detect.classes import ClassSet

__all__ = [
    "CHECKS",
    "TUNER_CHECKS",
    "WORDS",
    "ContractSpec",
    "ScriptedLLM",
    "ScriptedLLMFactory",
    "ScriptedReply",
    "assert_valid_suggestion",
    "check_errored_trial",
    "check_finished_after_budget",
    "check_missing_results",
    "check_mode_min_from_constructor",
    "check_mode_min_from_set_search_properties",
    "check_mode_min_mirrors_max",
    "check_non_finite_metrics",
    "check_same_seed_same_suggestions",
    "check_save_restore_mid_search",
    "check_stray_results_ignored",
    "check_suggestions_valid_and_new",
    "check_tuner_concurrency_limiter",
    "check_tuner_restore_min",
    "make_result",
    "run_searcher_contract",
    "suggest_until_ready",
]

SearcherFactory = Callable[..., Searcher]

WORDS = (
    "ball", "net", "racket", "hand", "foot", "floor", "court", "grass",
    "cup", "table", "door", "bag", "shoe", "towel", "chair", "book",
)
"""The scripted LLM's default word list: short nouns that pass the class-text rule."""


# ---------------------------------------------------------------------------- scripted LLM


@dataclass(frozen=True)
class ScriptedReply:
    """One reply of :class:`ScriptedLLM`, shaped like ``searchers.llm_client.LLMReply``."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    cached: bool = False


class ScriptedLLM:
    """A deterministic chat client: ``complete(messages, *, response_format, seed)``.

    The first replies come from ``script`` in order; after that each reply is a sample of
    ``min_words..max_words`` words from ``words``, drawn by a ``random.Random`` seeded with the
    client's ``seed``, the request's ``seed``, the number of messages (so a re-ask gets another
    reply) and, when ``follow_prompt``, a digest of the messages. The reply is therefore a
    function of the request alone: two clients built alike answer the same conversation alike,
    whatever thread or process asks. With ``response_format`` set the reply is the JSON object
    ``{"classes": [...]}``. Every request is recorded in ``requests``.

    Args:
        words: The vocabulary replies are drawn from.
        seed: The client's own seed.
        script: Replies returned first, verbatim, one per request.
        min_words: Fewest words in a drawn reply.
        max_words: Most words in a drawn reply.
        follow_prompt: Whether the reply depends on the messages' text (``False``: only on the
            seeds and the conversation length, for checks that compare runs whose prompts differ).
        delay_s: Sleep before answering (a slow LLM).
    """

    def __init__(self, words: Sequence[str] = WORDS, *, seed: int = 0, script: Sequence[str] = (),
                 min_words: int = 2, max_words: int = 5, follow_prompt: bool = True, delay_s: float = 0.0):
        if not words or not 1 <= min_words <= max_words:
            raise ValueError("ScriptedLLM needs words and 1 <= min_words <= max_words")
        self.words = list(words)
        self.seed = int(seed)
        self.script = list(script)
        self.min_words, self.max_words = int(min_words), min(int(max_words), len(self.words))
        self.follow_prompt = follow_prompt
        self.delay_s = float(delay_s)
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:  # picklable, like a real client's spec
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def complete(self, messages: Sequence[Mapping[str, str]], *,
                 response_format: Optional[Mapping[str, Any]] = None, seed: Optional[int] = None) -> ScriptedReply:
        messages = [dict(m) for m in messages]
        with self._lock:
            self.requests.append({"messages": messages, "response_format": response_format, "seed": seed})
            scripted = self.script.pop(0) if self.script else None
        if self.delay_s:
            time.sleep(self.delay_s)
        if scripted is not None:
            text = scripted
        else:
            key = f"{self.seed}|{seed}|{len(messages)}"
            if self.follow_prompt:
                key += "|" + hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()
            rng = random.Random(key)
            drawn = rng.sample(self.words, rng.randint(self.min_words, self.max_words))
            k = _candidates_asked(response_format)
            if k:  # screening (searchers.screening): k sets in one reply
                sets = [drawn] + [rng.sample(self.words, rng.randint(self.min_words, self.max_words))
                                  for _ in range(k - 1)]
                text = json.dumps({"candidates": sets})
            else:
                text = json.dumps({"classes": drawn}) if response_format else "\n".join(drawn)
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages)
        return ScriptedReply(text=text, prompt_tokens=prompt_tokens, completion_tokens=len(text.split()),
                             latency_s=self.delay_s)


def _candidates_asked(response_format: Optional[Mapping[str, Any]]) -> int:
    """K when ``response_format`` is the screening schema (``candidates_response_format``), else 0."""
    schema = (response_format or {}).get("json_schema") or {}
    if schema.get("name") != "candidate_sets":
        return 0
    return int(schema["schema"]["properties"]["candidates"]["maxItems"])


def hash_proxy(class_set: Sequence[str]) -> float:
    """A deterministic, picklable stand-in proxy for screening checks: a score in [0, 1) that is a
    function of the set's texts alone (order-free)."""
    digest = hashlib.sha256("|".join(sorted(class_set)).encode()).hexdigest()
    return int(digest[:8], 16) / 2 ** 32


@dataclass(frozen=True)
class ScriptedLLMFactory:
    """A picklable zero-argument factory of :class:`ScriptedLLM` (pass it as a searcher's ``llm``).

    A searcher keeps a factory, not a client, in its pickled state, so after ``Tuner.restore``
    (which unpickles the searcher) it can build an identical client again.
    """

    words: tuple[str, ...] = WORDS
    seed: int = 0
    script: tuple[str, ...] = ()
    min_words: int = 2
    max_words: int = 5
    follow_prompt: bool = True
    delay_s: float = 0.0

    def __call__(self) -> ScriptedLLM:
        return ScriptedLLM(self.words, seed=self.seed, script=self.script, min_words=self.min_words,
                           max_words=self.max_words, follow_prompt=self.follow_prompt, delay_s=self.delay_s)


# ---------------------------------------------------------------------------- driving a searcher


@dataclass(frozen=True)
class ContractSpec:
    """What the factory's searchers were built with, so the checks know what to expect."""

    max_classes: int
    """``C_max`` the factory passes: no suggestion has more classes."""
    num_trials: int
    """The budget the factory passes; at least 4 (the checks need room for a few trials)."""
    action_names: tuple[str, ...] = ()
    """Target action names; a suggested class equal to one is a contract violation."""
    metric: str = "val_accuracy"
    """The metric name results carry (and that ``set_search_properties`` is given)."""
    poll_timeout_s: float = 10.0
    """How long :func:`suggest_until_ready` waits for a searcher working in the background."""
    poll_interval_s: float = 0.002
    """Sleep between two polls."""

    def __post_init__(self) -> None:
        if self.max_classes < 1:
            raise ValueError(f"ContractSpec.max_classes must be >= 1, got {self.max_classes}")
        if self.num_trials < 4:
            raise ValueError(f"ContractSpec.num_trials must be >= 4 for the checks, got {self.num_trials}")


def make_result(spec: ContractSpec, value: Any, *, epoch: int = 1) -> dict[str, Any]:
    """A result dict as an A2O trainable reports it; ``value`` goes under ``spec.metric``."""
    classwise = {name: 0.5 for name in spec.action_names}
    return {spec.metric: value, "classwise_accuracy": classwise, "epoch": epoch, "training_iteration": epoch}


def suggest_until_ready(searcher: Searcher, trial_id: str, spec: ContractSpec) -> Any:
    """Ask like Tune does (again while the answer is ``None``) until a config or ``FINISHED``."""
    deadline = time.monotonic() + spec.poll_timeout_s
    while True:
        config = searcher.suggest(trial_id)
        if config is not None:
            return config
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{type(searcher).__name__}.suggest({trial_id!r}) still returned None after "
                f"{spec.poll_timeout_s}s of polling (a background proposal never finished)"
            )
        time.sleep(spec.poll_interval_s)


def assert_valid_suggestion(config: Any, spec: ContractSpec, tried: Sequence[frozenset], where: str) -> frozenset:
    """Assert ``config`` is a valid, new suggestion; returns its order-free class set."""
    assert config != Searcher.FINISHED, f"{where}: got FINISHED before the budget of {spec.num_trials} was spent"
    assert isinstance(config, dict), f"{where}: a suggestion must be a dict, got {type(config).__name__}"
    try:
        json.dumps(config)
    except (TypeError, ValueError) as exc:
        raise AssertionError(f"{where}: the config is not JSON-serialisable ({exc}): {config!r}") from None
    classes = config.get("classes")
    assert isinstance(classes, list) and classes, f"{where}: 'classes' must be a non-empty list, got {classes!r}"
    assert all(isinstance(c, str) for c in classes), f"{where}: every class must be a str, got {classes!r}"
    try:
        ClassSet.parse(classes, action_names=spec.action_names, max_classes=spec.max_classes, where=where)
    except ValueError as exc:
        raise AssertionError(f"{where}: 'classes' fails ClassSet.parse: {exc}") from None
    members = frozenset(classes)
    assert members not in tried, f"{where}: {sorted(members)} was already suggested in this search"
    return members


class _Run:
    """One searcher driven by a check: numbered trial ids, every suggestion validated."""

    def __init__(self, searcher: Searcher, spec: ContractSpec, label: str, prefix: str = "trial"):
        self.searcher, self.spec, self.label, self.prefix = searcher, spec, label, prefix
        self.tried: list[frozenset] = []
        self.configs: list[dict[str, Any]] = []

    def next_id(self) -> str:
        return f"{self.prefix}_{len(self.configs):03d}"

    def suggest(self) -> tuple[str, dict[str, Any]]:
        trial_id = self.next_id()
        config = suggest_until_ready(self.searcher, trial_id, self.spec)
        where = f"{self.label}: suggestion {len(self.configs) + 1} ({trial_id})"
        self.tried.append(assert_valid_suggestion(config, self.spec, self.tried, where))
        self.configs.append(config)
        return trial_id, config

    def finish(self, trial_id: str, value: Any, *, error: bool = False) -> None:
        result = make_result(self.spec, value)
        self.searcher.on_trial_result(trial_id, result)
        self.searcher.on_trial_complete(trial_id, result=None if error else result, error=error)

    def trial(self, value: Any) -> dict[str, Any]:
        trial_id, config = self.suggest()
        self.finish(trial_id, value)
        return config

    def to_budget(self, values: Callable[[int], float] = lambda i: 0.1 + 0.07 * i) -> None:
        while len(self.configs) < self.spec.num_trials:
            self.trial(values(len(self.configs)))

    def assert_finished(self) -> None:
        answer = suggest_until_ready(self.searcher, self.next_id(), self.spec)
        assert answer == Searcher.FINISHED, (
            f"{self.label}: after {len(self.configs)} suggestions (the budget) suggest() must return "
            f"Searcher.FINISHED, got {answer!r}"
        )


def _classes(configs: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    return [list(c["classes"]) for c in configs]


def _value_of(entry: Any, metric: str) -> Any:
    if entry is None:
        return None
    if isinstance(entry, Mapping):
        return entry.get("val_accuracy", entry.get(metric))
    return getattr(entry, "val_accuracy", getattr(entry, metric, None))


def _best_value(searcher: Searcher, spec: ContractSpec) -> tuple[bool, Any]:
    """``(exposed, value)`` of the searcher's own ``best()``, when it has one."""
    best = getattr(searcher, "best", None)
    if not callable(best):
        return False, None
    return True, _value_of(best(), spec.metric)


def _assert_best_is(searcher: Searcher, spec: ContractSpec, expected: float, label: str) -> None:
    exposed, value = _best_value(searcher, spec)
    if exposed:
        assert value == expected, f"{label}: best() must be the trial with {spec.metric}={expected}, got {value!r}"
    study = getattr(searcher, "study", None)
    if study is not None and hasattr(study, "best_value"):
        assert study.best_value == expected, (
            f"{label}: the public optuna study's best_value must be {expected}, got {study.best_value!r}"
        )


def _assert_min_mode(searcher: Searcher, spec: ContractSpec, label: str) -> None:
    assert searcher.mode == "min", f"{label}: searcher.mode must be 'min', got {searcher.mode!r}"
    study = getattr(searcher, "study", None)
    direction = getattr(study, "direction", None)
    if direction is not None:
        assert getattr(direction, "name", str(direction)).upper() == "MINIMIZE", (
            f"{label}: the public optuna study must minimise in mode 'min', its direction is {direction}"
        )


MIN_RUN_VALUES = (0.6, 0.2, 0.9)
"""Values of the first trials of the mode checks: 0.2 is the best in mode "min"."""


# ---------------------------------------------------------------------------- the checks


def check_suggestions_valid_and_new(factory: SearcherFactory, spec: ContractSpec) -> None:
    """Every suggestion up to the budget is a valid class set never suggested before."""
    run = _Run(factory(), spec, "suggest -> complete to the budget")
    run.to_budget()


def check_finished_after_budget(factory: SearcherFactory, spec: ContractSpec) -> None:
    """``FINISHED`` after ``num_trials`` suggestions, even with trials still running, and it stays."""
    run = _Run(factory(), spec, "budget")
    pending = []
    while len(run.configs) < spec.num_trials:
        trial_id, _ = run.suggest()
        if len(run.configs) % 2:
            pending.append(trial_id)  # every other trial is still running when the budget ends
        else:
            run.finish(trial_id, 0.5)
    run.assert_finished()
    for trial_id in pending:
        run.finish(trial_id, 0.4)
    run.assert_finished()


def check_non_finite_metrics(factory: SearcherFactory, spec: ContractSpec) -> None:
    """NaN, +inf and -inf metrics: no crash, never "best", the search goes on to the budget."""
    for bad in (math.nan, math.inf, -math.inf):
        run = _Run(factory(), spec, f"metric {bad!r}")
        run.trial(0.3)
        trial_id, _ = run.suggest()
        try:
            run.finish(trial_id, bad)
        except Exception as exc:  # noqa: BLE001 - turned into the check's message
            raise AssertionError(f"metric {bad!r}: reporting it raised {type(exc).__name__}: {exc}") from exc
        exposed, best = _best_value(run.searcher, spec)
        if exposed:
            assert best == 0.3, f"metric {bad!r}: best() must stay the finite 0.3, got {best!r}"
        run.to_budget()
        run.assert_finished()


def check_missing_results(factory: SearcherFactory, spec: ContractSpec) -> None:
    """``None`` results and results without the metric: no crash, the search goes on."""
    run = _Run(factory(), spec, "missing results")
    searcher = run.searcher
    calls = [
        ("on_trial_result(id, None)", lambda t: searcher.on_trial_result(t, None)),
        ("on_trial_result(id, {})", lambda t: searcher.on_trial_result(t, {})),
        ("on_trial_result(id, result without the metric)", lambda t: searcher.on_trial_result(t, {"epoch": 1})),
        ("on_trial_complete(id, result=None)", lambda t: searcher.on_trial_complete(t, result=None)),
    ]
    trial_id, _ = run.suggest()
    for what, call in calls:
        try:
            call(trial_id)
        except Exception as exc:  # noqa: BLE001 - turned into the check's message
            raise AssertionError(f"{what} raised {type(exc).__name__}: {exc}") from exc
    trial_id, _ = run.suggest()
    try:
        searcher.on_trial_complete(trial_id, result={"epoch": 1, "training_iteration": 1})
    except Exception as exc:  # noqa: BLE001
        raise AssertionError(f"on_trial_complete(id, result without the metric) raised "
                             f"{type(exc).__name__}: {exc}") from exc
    exposed, best = _best_value(searcher, spec)
    if exposed:
        assert best is None, f"missing results: with no metric reported best() must be None, got value {best!r}"
    run.to_budget()
    run.assert_finished()


def check_errored_trial(factory: SearcherFactory, spec: ContractSpec) -> None:
    """``on_trial_complete(error=True)``, with or without a result: recorded, never best, search goes on."""
    run = _Run(factory(), spec, "errored trial")
    run.trial(0.2)
    trial_id, _ = run.suggest()
    run.finish(trial_id, 0.9, error=True)  # reported 0.9, then crashed: must not count
    trial_id, _ = run.suggest()
    try:
        run.searcher.on_trial_complete(trial_id, result=make_result(spec, 0.95), error=True)
    except Exception as exc:  # noqa: BLE001
        raise AssertionError(f"on_trial_complete(error=True) with a result raised {type(exc).__name__}: {exc}") from exc
    exposed, best = _best_value(run.searcher, spec)
    if exposed:
        assert best == 0.2, f"errored trial: an errored trial must never be best; best() is {best!r}, expected 0.2"
    run.to_budget()
    run.assert_finished()


def check_stray_results_ignored(factory: SearcherFactory, spec: ContractSpec) -> None:
    """Results for completed or unknown trial ids change nothing: a twin without them suggests the same."""
    plain, stray = _Run(factory(), spec, "without stray results"), _Run(factory(), spec, "with stray results")
    for run in (plain, stray):
        run.trial(0.3)
        run.trial(0.4)
    done_id = "trial_000"
    strays = [
        ("on_trial_result for a completed trial", lambda: stray.searcher.on_trial_result(done_id, make_result(spec, 0.99))),
        ("on_trial_result for an unknown trial", lambda: stray.searcher.on_trial_result("never_suggested", make_result(spec, 0.98))),
        ("on_trial_complete for an unknown trial",
         lambda: stray.searcher.on_trial_complete("never_suggested", result=make_result(spec, 0.97))),
        ("on_trial_complete again for a completed trial",
         lambda: stray.searcher.on_trial_complete(done_id, result=make_result(spec, 0.96))),
    ]
    for what, call in strays:
        try:
            call()
        except Exception as exc:  # noqa: BLE001
            raise AssertionError(f"{what} raised {type(exc).__name__}: {exc}") from exc
    exposed, best = _best_value(stray.searcher, spec)
    if exposed:
        assert best == 0.4, f"stray results: best() must still be 0.4 (strays are ignored), got {best!r}"
    plain.to_budget()
    stray.to_budget()
    assert _classes(stray.configs) == _classes(plain.configs), (
        "stray results changed later suggestions: "
        f"without strays {_classes(plain.configs)}, with strays {_classes(stray.configs)}"
    )
    stray.assert_finished()


def check_save_restore_mid_search(factory: SearcherFactory, spec: ContractSpec) -> None:
    """Save with a trial running, restore into a FRESH instance, finish both: they go on alike."""
    original = _Run(factory(), spec, "original")
    original.trial(0.3)
    original.trial(0.6)
    pending_id, _ = original.suggest()  # still running at save time
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "searcher.pkl")
        original.searcher.save(path)
        fresh_searcher = factory()
        fresh_searcher.restore(path)
    fresh = _Run(fresh_searcher, spec, "restored into a fresh instance")
    fresh.tried, fresh.configs = list(original.tried), list(original.configs)  # what it must remember
    for run in (original, fresh):
        run.finish(pending_id, 0.4)  # the running trial completes after the restore
        run.to_budget()
    assert _classes(fresh.configs) == _classes(original.configs), (
        "after restore the fresh instance must continue exactly like the original: "
        f"original {_classes(original.configs)[3:]}, restored {_classes(fresh.configs)[3:]}"
    )
    fresh.assert_finished()
    original.assert_finished()


def check_same_seed_same_suggestions(factory: SearcherFactory, spec: ContractSpec) -> None:
    """Same seed + same replies + same results (errors and NaN included) -> same suggestions."""
    outcomes = [0.2, math.nan, 0.7, "error", 0.5]
    runs = [_Run(factory(), spec, f"run {i}") for i in (1, 2)]
    for run in runs:
        while len(run.configs) < spec.num_trials:
            trial_id, _ = run.suggest()
            outcome = outcomes[(len(run.configs) - 1) % len(outcomes)]
            run.finish(trial_id, 0.0 if outcome == "error" else outcome, error=outcome == "error")
    assert _classes(runs[0].configs) == _classes(runs[1].configs), (
        f"same seed, replies and results gave different suggestions: {_classes(runs[0].configs)} vs "
        f"{_classes(runs[1].configs)}"
    )


def _mode_min_run(searcher: Searcher, spec: ContractSpec, factory: SearcherFactory, label: str) -> None:
    run = _Run(searcher, spec, label)
    for value in MIN_RUN_VALUES:
        run.trial(value)
    _assert_min_mode(searcher, spec, label)
    _assert_best_is(searcher, spec, min(MIN_RUN_VALUES), label)

    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "searcher.pkl")
        searcher.save(path)
        fresh = factory()  # built with the default mode: the saved state must bring "min" back
        fresh.restore(path)
    _assert_min_mode(fresh, spec, f"{label}, after restore into a fresh instance")
    _assert_best_is(fresh, spec, min(MIN_RUN_VALUES), f"{label}, after restore into a fresh instance")
    restored = _Run(fresh, spec, f"{label}, after restore")
    restored.tried, restored.configs = list(run.tried), list(run.configs)
    restored.to_budget()
    restored.assert_finished()


def check_mode_min_from_constructor(factory: SearcherFactory, spec: ContractSpec) -> None:
    """``mode="min"`` passed to the constructor is honoured, and survives save/restore."""
    _mode_min_run(factory(metric=spec.metric, mode="min"), spec, factory, "mode='min' from the constructor")


def check_mode_min_from_set_search_properties(factory: SearcherFactory, spec: ContractSpec) -> None:
    """``set_search_properties(metric, "min", config)`` (what Tune calls) is honoured and saved."""
    searcher = factory()
    accepted = searcher.set_search_properties(spec.metric, "min", {})
    assert accepted is True, f"set_search_properties(metric, 'min', {{}}) must return True, got {accepted!r}"
    assert searcher.metric == spec.metric, (
        f"set_search_properties: searcher.metric must be {spec.metric!r}, got {searcher.metric!r}"
    )
    _mode_min_run(searcher, spec, factory, "mode='min' from set_search_properties")


def check_mode_min_mirrors_max(factory: SearcherFactory, spec: ContractSpec) -> None:
    """Mode "min" on values ``-v`` suggests exactly what mode "max" suggests on ``v``.

    Mode "min" is given once to the constructor and once through ``set_search_properties``.
    For searchers whose choices depend on results only through their order (TPE, random, the
    LLM searchers' fallback), a searcher that ignored ``mode`` would chase the worst trials. LLM
    searchers need a client whose replies do not read the prompt
    (``ScriptedLLM(follow_prompt=False)``), since the prompt shows the values themselves.
    """
    values = [0.15, 0.8, 0.35, 0.6, 0.05, 0.7, 0.45, 0.25]
    runs = {}
    for how, sign in (("max", 1.0), ("min", -1.0), ("min via set_search_properties", -1.0)):
        if how.endswith("set_search_properties"):
            searcher = factory()
            searcher.set_search_properties(spec.metric, "min", {})
        else:
            searcher = factory(metric=spec.metric, mode=how)
        run = _Run(searcher, spec, f"mode {how!r}")
        run.to_budget(lambda i, sign=sign: sign * values[i % len(values)])
        runs[how] = _classes(run.configs)
    for how in ("min", "min via set_search_properties"):
        assert runs[how] == runs["max"], (
            f"mode {how} on negated values must suggest what mode 'max' does on the values: "
            f"max {runs['max']}, {how} {runs[how]}"
        )


CHECKS: tuple[Callable[[SearcherFactory, ContractSpec], None], ...] = (
    check_suggestions_valid_and_new,
    check_finished_after_budget,
    check_non_finite_metrics,
    check_missing_results,
    check_errored_trial,
    check_stray_results_ignored,
    check_save_restore_mid_search,
    check_same_seed_same_suggestions,
    check_mode_min_from_constructor,
    check_mode_min_from_set_search_properties,
    check_mode_min_mirrors_max,
)
"""The in-process checks, in reading order (no Ray session needed)."""


# ---------------------------------------------------------------------------- Tune-level checks


def _class_set_trainable(metric: str, fail_flag: Optional[str] = None, fail_call: int = -1):
    """A function trainable: ``metric`` is a fixed pseudo-random value of the class set.

    While the file ``fail_flag`` exists, its ``fail_call``-th call (0-based, counted in
    ``fail_flag + ".calls"``; trials run one at a time) raises instead.
    """

    def trainable(config):  # nested: pickled by value, so Ray workers need not import this module
        import hashlib
        import os

        from ray import tune

        if fail_flag is not None:
            calls_path = fail_flag + ".calls"
            calls = int(open(calls_path).read()) if os.path.exists(calls_path) else 0
            with open(calls_path, "w") as fh:
                fh.write(str(calls + 1))
            if calls == fail_call and os.path.exists(fail_flag):
                raise RuntimeError("this trial fails on purpose (searchers.testing)")
        digest = hashlib.sha256("|".join(sorted(config["classes"])).encode()).hexdigest()
        tune.report({metric: int(digest[:8], 16) / 2**32, "epoch": 1})

    return trainable


def _history_values(searcher: Searcher, spec: ContractSpec) -> Optional[list]:
    history = getattr(searcher, "history", None)
    if history is None or callable(history):
        return None
    return [_value_of(entry, spec.metric) for entry in history]


def check_tuner_concurrency_limiter(factory: SearcherFactory, spec: ContractSpec, *, storage_path: str,
                                    param_space: Optional[dict] = None) -> None:
    """A real ``tune.Tuner`` with ``ConcurrencyLimiter(searcher, 1)``; metric and mode="min" only in ``TuneConfig``.

    Every trial must terminate without error, the searcher's budget must end the experiment
    (``num_samples`` is larger), no class set may repeat, and every result must reach the searcher
    (its ``history``, when exposed, has one entry per trial). Tune calls ``set_search_properties``
    only when ``param_space`` is non-empty; run with ``{}`` and with a constant (``{"epochs": 1}``)
    to pin both paths: non-empty, the searcher must end in mode "min" with the metric, record
    every value and (``best()``) prefer the lowest; empty, Tune told it nothing, so it is not in
    mode "min" (it may resolve its own default), and when its ``metric`` is ``spec.metric`` it
    must record the values too.
    """
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    param_space = dict(param_space or {})
    searcher = factory()
    default_mode = searcher.mode
    tuner = tune.Tuner(
        _class_set_trainable(spec.metric),
        param_space=param_space,
        tune_config=tune.TuneConfig(search_alg=ConcurrencyLimiter(searcher, max_concurrent=1),
                                    num_samples=spec.num_trials + 2, metric=spec.metric, mode="min",
                                    reuse_actors=True),  # one actor for every trial: seconds, not tens
        run_config=tune.RunConfig(storage_path=storage_path, name=f"limiter_{len(param_space)}", verbose=0),
    )
    label = f"Tuner + ConcurrencyLimiter, metric/mode only in TuneConfig, param_space={param_space}"
    results = tuner.fit()
    assert not results.errors, f"{label}: trials errored: {results.errors}"
    assert len(results) == spec.num_trials, (
        f"{label}: the searcher's budget ({spec.num_trials}) must end the experiment, got {len(results)} trials"
    )
    reported = [r.metrics.get(spec.metric) for r in results]
    assert all(isinstance(v, float) for v in reported), f"{label}: a trial did not report {spec.metric}: {reported}"
    sets = [frozenset(r.config["classes"]) for r in results]
    assert len(set(sets)) == len(sets), f"{label}: a class set was suggested twice: {sets}"
    if param_space:
        _assert_min_mode(searcher, spec, f"{label} (Tune called set_search_properties)")
        assert searcher.metric == spec.metric, (
            f"{label}: set_search_properties gave metric {spec.metric!r}, the searcher has {searcher.metric!r}"
        )
        _assert_best_is(searcher, spec, min(reported), label)
    else:
        assert searcher.mode != "min" or default_mode == "min", (
            f"{label}: Tune does not call set_search_properties for an empty param_space, so mode 'min' "
            f"cannot have come from TuneConfig; the searcher (built with mode {default_mode!r}) says 'min'"
        )
    seen = _history_values(searcher, spec)
    if seen is not None:
        assert len(seen) == len(reported), (
            f"{label}: every completed trial must reach the searcher: {len(reported)} trials, "
            f"history has {len(seen)} entries"
        )
        if searcher.metric == spec.metric:
            assert sorted(seen, key=str) == sorted(reported, key=str), (
                f"{label}: the searcher's history must hold every trial's {spec.metric}: "
                f"reported {sorted(reported)}, history {seen}"
            )


def check_tuner_restore_min(factory: SearcherFactory, spec: ContractSpec, *, storage_path: str) -> None:
    """A ``mode="min"`` experiment with one errored trial, then Tune's two ways back.

    Run 1 (``ConcurrencyLimiter(searcher, 1)``, its second trial raises) must end at the
    searcher's budget. The searcher state Tune saved must restore (``restore_from_dir``) into a
    fresh, default-mode instance that is in mode "min", whose ``best()`` (when exposed) is the
    lowest reported value, whose ``history`` (when exposed) holds every finite result, and that
    answers ``FINISHED``. Then ``Tuner.restore(..., resume_errored=True)`` re-runs the errored
    trial (its result arrives for a trial the searcher completed as errored: ignored) and must
    end with every trial terminated, no new trial past the budget, and the state still "min".

    Ray note: an experiment ended by a stopper's ``stop_all``, ``fail_fast`` or SIGINT is saved as
    "search finished", so ``Tuner.restore`` resumes the unfinished trials but asks the searcher
    for nothing new; a crashed driver is the only mid-search restore, and that is what
    :func:`check_save_restore_mid_search` covers in process.
    """
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    flag = Path(storage_path) / "fail.flag"
    flag.parent.mkdir(parents=True, exist_ok=True)
    flag.touch()
    trainable = _class_set_trainable(spec.metric, fail_flag=str(flag), fail_call=1)
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=ConcurrencyLimiter(factory(metric=spec.metric, mode="min"), 1),
                                    num_samples=spec.num_trials + 2, metric=spec.metric, mode="min",
                                    reuse_actors=True),
        run_config=tune.RunConfig(storage_path=storage_path, name="restore_min", verbose=0),
    )
    first = tuner.fit()
    experiment = str(Path(storage_path) / "restore_min")
    label = "Tuner in mode 'min' with one errored trial"
    assert len(first) == spec.num_trials, f"{label}: expected {spec.num_trials} trials (the budget), got {len(first)}"
    assert len(first.errors) == 1, f"{label}: expected exactly the one planted error, got {first.errors}"
    reported = [r.metrics.get(spec.metric) for r in first if r.error is None]
    assert all(isinstance(v, float) for v in reported), f"{label}: a trial has no {spec.metric}: {reported}"

    for when in ("after run 1", "after Tuner.restore(resume_errored=True)"):
        restored = factory()
        restored.restore_from_dir(experiment)
        where = f"{label}: searcher state saved by Tune {when}, restored into a fresh instance"
        _assert_min_mode(restored, spec, where)
        _assert_best_is(restored, spec, min(reported), where)
        seen = _history_values(restored, spec)
        if seen is not None:
            finite = sorted(v for v in seen if isinstance(v, float) and math.isfinite(v))
            assert finite == sorted(reported), (
                f"{where}: its history must hold every finite {spec.metric}: reported {sorted(reported)}, "
                f"history {seen}"
            )
        answer = suggest_until_ready(restored, "after_budget", spec)
        assert answer == Searcher.FINISHED, f"{where}: the budget is spent, suggest() must be FINISHED, got {answer!r}"
        if when == "after run 1":
            flag.unlink()
            second = tune.Tuner.restore(experiment, trainable, resume_errored=True).fit()
            again = "Tuner.restore(resume_errored=True)"
            assert not second.errors, f"{again}: the re-run trial must succeed, got {second.errors}"
            assert len(second) == spec.num_trials, (
                f"{again}: no trial may be added past the budget ({spec.num_trials}), got {len(second)}"
            )
            sets = [frozenset(r.config["classes"]) for r in second]
            assert len(set(sets)) == len(sets), f"{again}: a class set was suggested twice: {sets}"


TUNER_CHECKS = (check_tuner_concurrency_limiter, check_tuner_restore_min)
"""The checks that run a real ``tune.Tuner`` (need ``ray.init`` and a ``storage_path``)."""


def run_searcher_contract(factory: SearcherFactory, spec: ContractSpec, *,
                          checks: Sequence[Callable[[SearcherFactory, ContractSpec], None]] = CHECKS) -> None:
    """Run ``checks`` (default: every in-process check) in order; the first failure raises."""
    for check in checks:
        check(factory, spec)
