"""ICRL: an LLM agent proposes object-class sets from the history of (set, reward) pairs.

This is the A2O search policy (Sekii & Sato): the LLM sees a fixed task description ``c`` (dataset,
target action names, output format) plus the iteration history -- each completed trial's class set,
overall and class-wise validation accuracy -- and proposes the next set of at most ``C_max`` short
object-class texts. No LLM weights change; the history is the only thing that "learns".
"""

from __future__ import annotations

import logging
import math
import pickle
import random
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from ray.tune.search import Searcher

from a2o.errors import LLMReplyError, LLMUnavailableError
from searchers import prompting
from searchers.fallback import fallback_edit
from searchers.llm_client import ChatClient, LLMClientSpec, classes_response_format, uses_response_format
from searchers.parsing import normalize_phrase, parse_class_reply, sanitize_class_text

__all__ = ["ICRLSearcher", "DEFAULT_VOCABULARY"]

logger = logging.getLogger(__name__)

# Generic, dataset-agnostic fallback words (objects, body parts, scene elements). Only used when a
# fallback edit needs a class that neither the vocabulary nor the history provides.
DEFAULT_VOCABULARY = (
    "person", "hand", "face", "arm", "leg", "foot", "head", "ball", "floor", "table", "chair",
    "door", "cup", "bottle", "phone", "box", "book", "bag", "paper", "wall", "grass", "water",
    "court", "net", "car", "bicycle", "knife", "towel",
)

LLMArg = Union[LLMClientSpec, Callable[[], ChatClient], ChatClient, None]


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class _Job:
    """What the background thread needs: a snapshot taken on the driver's main thread."""

    messages: list[dict[str, str]]
    seed: int
    tried: frozenset  # frozenset of frozensets already suggested
    extra: dict = field(default_factory=dict)


@dataclass
class _Outcome:
    classes: Optional[list[str]]  # None -> fallback
    source: str  # "llm" | "fallback:unusable" | "fallback:unreachable"
    reason: str = ""
    llm_calls: int = 0
    reasks: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    extra: dict = field(default_factory=dict)


class ICRLSearcher(Searcher):
    """In-context RL over object-class sets, with an OpenAI-compatible LLM as the policy.

    Each suggestion is ``{"classes": [...], "proposal_source": ...}`` where ``proposal_source`` is
    ``"initial"``, ``"llm"``, ``"fallback:unusable"`` or ``"fallback:unreachable"``. The trainable
    reports ``val_accuracy`` (and ``classwise_accuracy``, ``epoch``) per epoch.

    ``suggest()`` never blocks Tune: the first call starts the LLM request on a background thread
    and returns ``None``; Tune asks again and gets the proposal once the reply is parsed. A reply
    with no usable class, or one repeating a set already tried, is re-asked (up to ``max_reasks``)
    with the reason appended to the conversation. After that -- or at once when the endpoint is
    unreachable -- the searcher logs a warning and suggests a *fallback*: an edit of the best set
    so far (swap its weakest-looking class for an unused vocabulary word, or drop/add one). It
    never crashes the experiment for an LLM problem.

    Args:
        llm: The LLM client: an :class:`~searchers.llm_client.LLMClientSpec` (preferred: it is
            pickled and rebuilt after ``Tuner.restore``), a zero-argument factory returning a
            client, or a client object with ``complete(messages, *, response_format, seed)``. The
            client itself is never pickled.
        action_names: Target action names, shown to the LLM; proposals equal to one are dropped.
        task_description: Extra dataset description for the fixed task ``c``.
        max_classes: ``C_max``, the most classes in one proposal.
        num_trials: Budget ``T``; ``suggest`` returns ``Searcher.FINISHED`` after this many.
        target_classes: The soft count ("about N"); default ``min(8, max_classes)``.
        max_reasks: Re-asks after an unusable or duplicate reply before the fallback.
        metric: Metric reported by the trainable (the reward).
        mode: ``"max"`` or ``"min"``.
        seed: Seeds the fallback edits and the per-request LLM seed (``seed + index``).
        initial_classes: Optional first class set, suggested without asking the LLM.
        vocabulary: Words the fallback may add; the history's classes and a small generic list
            are also used.
        prompt: Built-in template, ``"paper"`` (strong models) or ``"small"`` (small local models).
        prompt_template: Path of a user template file (``string.Template``), overriding ``prompt``.
            Read once here and kept in the searcher state.
        response_format: ``"text"`` (plain lines) or ``"json_schema"`` (constrained JSON list).
        epochs_per_trial: Epochs a trial runs when not stopped (``train.epochs``); a trial ending
            before it is marked "stopped early" in the history. When ``None``, the most epochs any
            trial has reached is the reference.
        injected_history: History entries from another run shown before this run's history (the
            OOD-history baseline). Entries are dicts with ``classes``, ``val_accuracy`` and
            optionally ``classwise_accuracy``.
        injected_label: How the prompt names the source of ``injected_history``.

    .. warning::
        The API key is read from the environment variable named by the client spec when the client
        is built; it is never part of the searcher's pickled state, logs or suggestions.

    .. warning::
        Pass ``metric`` and ``mode`` here: Tune only calls ``set_search_properties`` when the
        ``param_space`` is non-empty.

    Example:

    .. code-block:: python

        import ray
        from ray import tune
        from searchers.icrl import ICRLSearcher
        from searchers.llm_client import LLMClientSpec

        relevant = {"ball", "racket", "net"}

        def trainable(config):
            for epoch in (1, 2):
                acc = len(relevant & set(config["classes"])) / len(relevant)
                tune.report({"val_accuracy": acc * epoch / 2, "epoch": epoch,
                             "classwise_accuracy": {"serve": acc}, "classes": config["classes"]})

        searcher = ICRLSearcher(
            LLMClientSpec(base_url="http://127.0.0.1:8080/v1", cache_path="/tmp/a2o_replay.jsonl"),
            action_names=["serve", "volley"], max_classes=6, num_trials=4, epochs_per_trial=2)
        ray.init(address="local", num_cpus=2, include_dashboard=False)
        tuner = tune.Tuner(trainable, tune_config=tune.TuneConfig(
            search_alg=searcher, num_samples=4, metric="val_accuracy", mode="max"))
        print(tuner.fit().get_best_result().config["classes"])
    """

    def __init__(
        self,
        llm: LLMArg,
        action_names: Sequence[str],
        *,
        task_description: str = "",
        max_classes: int = 12,
        num_trials: int = 8,
        target_classes: Optional[int] = None,
        max_reasks: int = 2,
        metric: str = "val_accuracy",
        mode: str = "max",
        seed: int = 0,
        initial_classes: Optional[Sequence[str]] = None,
        vocabulary: Optional[Sequence[str]] = None,
        prompt: str = "paper",
        prompt_template: Optional[str] = None,
        response_format: str = "text",
        epochs_per_trial: Optional[int] = None,
        injected_history: Optional[Sequence[Mapping[str, Any]]] = None,
        injected_label: str = "another dataset",
    ):
        super().__init__(metric=metric, mode=mode)
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        if not action_names:
            raise ValueError("action_names must list the target actions shown to the LLM")
        if max_classes < 1 or num_trials < 1 or max_reasks < 0:
            raise ValueError("need max_classes >= 1, num_trials >= 1 and max_reasks >= 0")
        if response_format not in ("text", "json_schema"):
            raise ValueError(f"response_format must be 'text' or 'json_schema', got {response_format!r}")
        self.action_names = [str(a) for a in action_names]
        self.task_description = task_description
        self.max_classes = int(max_classes)
        self.num_trials = int(num_trials)
        self.target_classes = min(int(target_classes or min(8, max_classes)), self.max_classes)
        self.max_reasks = int(max_reasks)
        self.seed = int(seed)
        self.response_format = response_format
        self.epochs_per_trial = epochs_per_trial
        self.injected_label = injected_label
        self.template = prompting.load_template(f"icrl_{prompt}", prompt_template)
        # The small prompt with structured output asks for action -> object pairs before the set
        # (see llm_client.uses_response_format): small models otherwise echo the action names.
        self.ask_uses = prompt == "small" and prompt_template is None and response_format == "json_schema"
        self.initial_classes = self._clean(initial_classes or [])
        self.vocabulary = self._clean(vocabulary or [], limit=None)
        self.injected_history = [self._entry_from_record(r) for r in (injected_history or [])]

        self.history: list[dict[str, Any]] = []  # completed trials, oldest first
        self.stats: dict[str, Any] = {
            "suggestions": 0, "llm_calls": 0, "reasks": 0, "fallbacks": 0, "llm_errors": 0,
            "cache_hits": 0, "prompt_tokens": 0, "completion_tokens": 0, "llm_time_s": 0.0,
            "per_suggestion": [],
        }
        self._live: dict[str, dict[str, Any]] = {}  # trial_id -> suggested config + latest result
        self._tried: list[list[str]] = []  # every suggested set, in order
        self._rng = random.Random(self.seed)
        self._llm_factory: Optional[Callable[[], ChatClient]] = None
        self._client: Optional[ChatClient] = None
        self._set_llm(llm)
        self._executor: Optional[ThreadPoolExecutor] = None
        self._future: Optional[Future] = None

    # ---------------------------------------------------------------- client and pickling
    def _set_llm(self, llm: LLMArg) -> None:
        if llm is None:
            return
        if isinstance(llm, LLMClientSpec):
            self._llm_factory = llm
        elif hasattr(llm, "complete"):
            self._client = llm
            spec = getattr(llm, "spec", None)
            self._llm_factory = spec if isinstance(spec, LLMClientSpec) else None
        elif callable(llm):
            self._llm_factory = llm
        else:
            raise TypeError("llm must be an LLMClientSpec, a client factory or a client with complete()")

    def _get_client(self) -> ChatClient:
        if self._client is None:
            if self._llm_factory is None:
                raise LLMUnavailableError(
                    "this searcher has no LLM client (it was restored from a client that cannot be "
                    "rebuilt): pass llm as an LLMClientSpec so it can be rebuilt after a restore."
                )
            self._client = self._llm_factory()
        return self._client

    _RUNTIME = ("_client", "_executor", "_future")

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for name in self._RUNTIME:
            state[name] = None
        try:  # a factory that cannot be pickled (a lambda) is dropped, not fatal
            pickle.dumps(state["_llm_factory"])
        except Exception:  # noqa: BLE001 - any pickling failure means "not rebuildable"
            state["_llm_factory"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as fh:
            pickle.dump(self.__getstate__(), fh)

    def restore(self, checkpoint_path: str) -> None:
        """Load state saved by :meth:`save`; keeps this instance's client if it has one."""
        with open(checkpoint_path, "rb") as fh:
            state = pickle.load(fh)
        factory, client = self._llm_factory, self._client
        self._shutdown_executor()
        self.__setstate__(state)
        if client is not None or factory is not None:
            self._client, self._llm_factory = client, factory or self._llm_factory

    def _shutdown_executor(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        self._executor, self._future = None, None

    def set_search_properties(self, metric: Optional[str], mode: Optional[str], config: dict, **spec) -> bool:
        if metric:
            self._metric = metric
        if mode:
            self._mode = mode
        return True

    # ---------------------------------------------------------------- small helpers
    def _clean(self, classes: Sequence[str], limit: Optional[int] = -1) -> list[str]:
        limit = self.max_classes if limit == -1 else limit
        text = "\n".join(str(c) for c in classes)
        return parse_class_reply(text, action_names=self.action_names, max_classes=limit or 10**6)

    def _entry_from_record(self, record: Mapping[str, Any]) -> dict[str, Any]:
        value = record.get("val_accuracy", record.get(self.metric))
        status = record.get("status", "ok")
        if status == "ok" and not _finite(value):
            status = "invalid"
        return {
            "classes": [str(c) for c in record.get("classes") or []],
            "val_accuracy": float(value) if _finite(value) else None,
            "classwise_accuracy": {str(k): float(v) for k, v in (record.get("classwise_accuracy") or {}).items()
                                   if _finite(v)},
            "epoch": record.get("epoch"),
            "status": status,
        }

    def _score(self, value: float) -> float:
        return value if self.mode == "max" else -value

    def best(self) -> Optional[dict[str, Any]]:
        """Best completed history entry (finished trials before early-stopped ones), or None."""
        for statuses in (("ok",), ("early_stopped",)):
            valid = [e for e in self.history if e["status"] in statuses and _finite(e["val_accuracy"])]
            if valid:
                return max(valid, key=lambda e: self._score(e["val_accuracy"]))
        return None

    def _pending_sets(self) -> list[list[str]]:
        return [live["config"]["classes"] for live in self._live.values()]

    # ---------------------------------------------------------------- prompt (hooks for baselines)
    def _history_text(self) -> str:
        return prompting.format_history(
            self.history, injected=self.injected_history, injected_label=self.injected_label,
            epochs_per_trial=self.epochs_per_trial,
        )

    def _prompt_fields(self) -> dict[str, Any]:
        return {
            "task_description": self.task_description or "Video action recognition.",
            "action_names": prompting.format_actions(self.action_names),
            "num_actions": len(self.action_names),
            "target_count": self.target_classes,
            "max_classes": self.max_classes,
            "history": self._history_text(),
            "pending": prompting.format_pending(self._pending_sets()),
            "format_instructions": (
                prompting.USES_INSTRUCTIONS if self.ask_uses else prompting.format_instructions(self.response_format)
            ),
        }

    def build_prompt(self) -> str:
        """The prompt the next LLM request would carry (deterministic in the state)."""
        return prompting.render(self.template, **self._prompt_fields())

    def _response_format(self) -> Optional[dict[str, Any]]:
        if self.ask_uses:
            return uses_response_format(self.max_classes, len(self.action_names))
        if self.response_format == "json_schema":
            return classes_response_format(self.max_classes)
        return None

    def _prepare_job(self) -> _Job:
        return _Job(
            messages=[{"role": "user", "content": self.build_prompt()}],
            seed=self.seed + len(self._tried),
            tried=frozenset(frozenset(s) for s in self._tried),
        )

    def _parse(self, text: str, job: _Job) -> list[str]:
        return parse_class_reply(text, action_names=self.action_names, max_classes=self.max_classes)

    # ---------------------------------------------------------------- background LLM work
    def _ask(self, job: _Job, outcome: _Outcome) -> None:
        """Ask with bounded re-asks; fills ``outcome`` (runs on the background thread)."""
        client = self._get_client()
        messages = list(job.messages)
        for attempt in range(self.max_reasks + 1):
            if attempt:
                outcome.reasks += 1
            try:
                reply = client.complete(messages, response_format=self._response_format(), seed=job.seed)
            except LLMReplyError as exc:
                outcome.reason = str(exc)
                continue
            outcome.llm_calls += 1
            outcome.cache_hits += int(getattr(reply, "cached", False))
            outcome.prompt_tokens += reply.prompt_tokens
            outcome.completion_tokens += reply.completion_tokens
            outcome.latency_s += reply.latency_s
            classes = self._parse(reply.text, job)
            if not classes:
                outcome.reason = "the reply contained no usable object class"
                feedback = (
                    "Your reply contained no usable object class. Answer again with a different set: "
                    + prompting.format_instructions(self.response_format)
                    + " Each class is a short visual noun of one to four words."
                )
            elif frozenset(classes) in job.tried:
                outcome.reason = "the reply repeated a set that was already tried"
                feedback = (
                    f"The set [{', '.join(classes)}] was already tried or is running. Propose a "
                    "different set: swap at least one class. "
                    + prompting.format_instructions(self.response_format)
                )
            else:
                outcome.classes, outcome.source = classes, "llm"
                return
            messages = messages + [
                {"role": "assistant", "content": reply.text},
                {"role": "user", "content": feedback},
            ]
        outcome.source = "fallback:unusable"

    def _run_job(self, job: _Job) -> _Outcome:
        outcome = _Outcome(classes=None, source="fallback:unusable")
        try:
            self._ask(job, outcome)
        except LLMUnavailableError as exc:
            outcome.classes, outcome.source, outcome.reason = None, "fallback:unreachable", str(exc)
        return outcome

    def _absorb(self, outcome: _Outcome) -> None:
        """Main-thread hook: baselines store extra results of the background work here."""

    # ---------------------------------------------------------------- the Searcher contract
    def suggest(self, trial_id: str) -> Optional[dict[str, Any]]:
        if len(self._tried) >= self.num_trials:
            return Searcher.FINISHED
        if not self._tried and self.initial_classes:
            return self._register(trial_id, list(self.initial_classes), "initial", _Outcome(None, "initial"))
        if self._future is None:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="a2o-llm")
            self._future = self._executor.submit(self._run_job, self._prepare_job())
            logger.info("proposal %d of %d: asking the LLM (%d completed trials in the prompt)",
                        len(self._tried) + 1, self.num_trials, len(self.history))
            return None
        if not self._future.done():
            return None
        future, self._future = self._future, None
        try:
            outcome = future.result()
        except Exception as exc:  # noqa: BLE001 - a bug in a client must not kill the experiment
            logger.exception("LLM proposal failed unexpectedly; using the fallback")
            outcome = _Outcome(None, "fallback:unusable", reason=f"{type(exc).__name__}")
        self._absorb(outcome)
        classes = outcome.classes
        if classes is None:
            classes = self._fallback_edit()
            self.stats["fallbacks"] += 1
            if outcome.source == "fallback:unreachable":
                self.stats["llm_errors"] += 1
            logger.warning(
                "ICRL fallback (%s) for suggestion %d: %s; suggesting an edit of the best set: %s",
                outcome.source, len(self._tried) + 1, outcome.reason or "no usable reply", classes,
            )
        return self._register(trial_id, classes, outcome.source, outcome)

    def _config(self, classes: list[str], source: str) -> dict[str, Any]:
        return {"classes": list(classes), "proposal_source": source}

    def _register(self, trial_id: str, classes: list[str], source: str, outcome: _Outcome) -> dict[str, Any]:
        config = self._config(classes, source)
        self._tried.append(list(classes))
        self._live[trial_id] = {"config": config, "last_result": None}
        self.stats["suggestions"] += 1
        for key in ("llm_calls", "reasks", "cache_hits", "prompt_tokens", "completion_tokens"):
            self.stats[key] += getattr(outcome, key)
        self.stats["llm_time_s"] += outcome.latency_s
        self.stats["per_suggestion"].append({
            "index": len(self._tried), "source": source, "llm_calls": outcome.llm_calls,
            "reasks": outcome.reasks, "prompt_tokens": outcome.prompt_tokens,
            "completion_tokens": outcome.completion_tokens, "latency_s": round(outcome.latency_s, 4),
        })
        return config

    def _slim(self, result: Mapping[str, Any]) -> dict[str, Any]:
        classwise = result.get("classwise_accuracy") or {}
        return {
            "value": result.get(self.metric),
            "classwise_accuracy": dict(classwise) if isinstance(classwise, Mapping) else {},
            "epoch": result.get("epoch", result.get("training_iteration")),
        }

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._live and result:
            self._live[trial_id]["last_result"] = self._slim(result)

    def on_trial_complete(self, trial_id: str, result: Optional[dict] = None, error: bool = False) -> None:
        live = self._live.pop(trial_id, None)
        if live is None:
            logger.debug("on_trial_complete for unknown trial %s ignored", trial_id)
            return
        last = self._slim(result) if result else (live["last_result"] or {})
        value = last.get("value")
        if error:
            status = "error"
        elif not _finite(value):
            status = "invalid"
        else:
            status = "ok"  # early stops are marked by _mark_early_stops below
        entry = {
            "classes": list(live["config"]["classes"]),
            "val_accuracy": float(value) if _finite(value) and status != "error" else None,
            "classwise_accuracy": {str(k): float(v) for k, v in last.get("classwise_accuracy", {}).items()
                                   if _finite(v)},
            "epoch": last.get("epoch"),
            "status": status,
            "source": live["config"].get("proposal_source", ""),
        }
        hparams = {k: v for k, v in live["config"].items() if k in ("lr", "weight_decay")}
        if hparams:
            entry["hyperparameters"] = hparams
        if status == "invalid":
            logger.warning("Trial %s reported a non-finite %s (%r); recorded as invalid", trial_id,
                           self.metric, value)
        self.history.append(entry)
        self._mark_early_stops()

    def _mark_early_stops(self) -> None:
        """Mark trials that ended before the full epoch budget (a scheduler such as ASHA stopped them).

        Tune reports ``done=True`` for scheduler-stopped trials too, so the epoch reached is the only
        signal: it is compared with ``epochs_per_trial`` or, when that is unknown, with the most
        epochs any trial has reached so far (earlier entries are re-marked as that grows).
        """
        epochs = [e["epoch"] for e in self.history if _finite(e.get("epoch"))]
        reference = self.epochs_per_trial or (max(epochs) if epochs else None)
        if reference is None:
            return
        for e in self.history:
            if e["status"] in ("ok", "early_stopped") and _finite(e.get("epoch")):
                e["status"] = "early_stopped" if e["epoch"] < reference else "ok"

    # ---------------------------------------------------------------- fallback
    def _class_strength(self) -> dict[str, float]:
        """Mean reward of the valid trials containing each class (a crude credit assignment)."""
        sums: dict[str, list[float]] = {}
        for entry in self.history + self.injected_history:
            if entry["status"] in ("ok", "early_stopped") and _finite(entry["val_accuracy"]):
                for c in entry["classes"]:
                    sums.setdefault(c, []).append(self._score(entry["val_accuracy"]))
        return {c: sum(v) / len(v) for c, v in sums.items()}

    def _fallback_edit(self) -> list[str]:
        best = self.best()
        if best is None and self.injected_history:
            valid = [e for e in self.injected_history if _finite(e["val_accuracy"])]
            best = max(valid, key=lambda e: self._score(e["val_accuracy"])) if valid else None
        base = list(best["classes"]) if best else list(self.initial_classes or (self._tried[-1] if self._tried else []))
        actions = {normalize_phrase(a) for a in self.action_names}
        words: list[str] = []
        for source in (self.vocabulary, *[e["classes"] for e in self.history + self.injected_history],
                       DEFAULT_VOCABULARY):
            for w in source:
                w = sanitize_class_text(w)
                if w and w not in words and w not in actions:
                    words.append(w)
        return fallback_edit(base, words, tried={frozenset(t) for t in self._tried},
                             strength=self._class_strength(), rng=self._rng,
                             max_classes=self.max_classes, target_classes=self.target_classes)
