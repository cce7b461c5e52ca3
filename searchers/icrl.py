"""ICRL: an LLM agent proposes object-class sets from the history of (set, reward) pairs.

This is the A2O search policy (Sekii & Sato): the LLM sees a fixed task description ``c`` (dataset,
target action names, output format) plus the iteration history -- each finished trial's class set,
overall and class-wise validation accuracy -- and proposes the next set of at most ``C_max`` short
object-class texts. No LLM weights change; the history is the only thing that "learns".

The LLM traffic (background request, re-asks, fallback, counts) is the :class:`~searchers.proposer.Proposer`'s;
the trials are the :class:`~searchers.trials.TrialLog`'s. Two paper baselines are this class with
options: *static prompts* (``show_history=False``, :func:`searchers.static.static_prompt_searcher`)
and *OOD history* (``injected_history``, :func:`searchers.ood.ood_history_searcher`); the
*{lr, wd} + ICRL* baseline adds a ``hyperparameters`` sampler (:func:`searchers.hybrid.hybrid_searcher`).
"""

from __future__ import annotations

import functools
import logging
import random
from collections.abc import Sequence
from typing import Any, Optional, Protocol

from ray.tune.search import Searcher

from a2o.detect.classes import ClassSet
from a2o.records import TrialRecord
from searchers import prompting
from searchers.base import LLMSetSearcher
from searchers.fallback import fallback_class_set
from searchers.llm_client import classes_response_format, uses_response_format
from searchers.parsing import parse_reply, parse_reply_filled
from searchers.proposer import Job, LLMArg, Proposal, Proposer, Request
from searchers.screening import (
    CandidateRequest,
    Screener,
    candidates_instructions,
    candidates_response_format,
)
from searchers.trials import TrialLog, check_mode
from searchers.words import usable_words

__all__ = ["HyperparameterSampler", "ICRLSearcher"]

logger = logging.getLogger(__name__)


class HyperparameterSampler(Protocol):
    """Values a searcher adds to each suggestion besides the classes (picklable, own seeded state)."""

    def sample(self) -> dict[str, float]: ...


class ICRLSearcher(LLMSetSearcher):
    """In-context RL over object-class sets, with an OpenAI-compatible LLM as the policy.

    Each suggestion is ``{"classes": [...], "proposal_source": ...}`` where ``proposal_source`` is
    ``"initial"``, ``"llm"``, ``"fallback:unusable"`` or ``"fallback:unreachable"``. The trainable
    reports the metric (``val_accuracy``; also ``classwise_accuracy``, ``epoch``) per epoch.

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
        metric: Metric reported by the trainable (the reward). None: Tune's (``TuneConfig``),
            else ``"val_accuracy"``.
        mode: ``"max"``, ``"min"`` or None: Tune's, else ``"max"``.
        seed: Seeds the fallback edits and the per-request LLM seed (``seed + index``).
        initial_classes: Optional first class set, suggested without asking the LLM (checked
            with the class-text rule: a bad text raises).
        vocabulary: Words the fallback may add (entries breaking the class-text rule are dropped
            and counted in a warning); the history's classes and a small generic list are also used.
        prompt: Built-in template, ``"paper"`` (strong models) or ``"small"`` (small local models).
        prompt_template: Path of a user template file (``string.Template``), overriding ``prompt``.
            Read once here and kept in the searcher state.
        response_format: ``"text"`` (plain lines) or ``"json_schema"`` (constrained JSON list).
        epochs_per_trial: Epochs a trial runs when not stopped (``train.epochs``); a trial ending
            before it is marked "stopped early" in the history. When ``None``, the most epochs any
            trial has reached is the reference.
        show_history: False hides the history and the running sets from the prompt: every
            proposal is an independent sample of the fixed task (the static-prompt baseline).
        injected_history: Records of another run shown before this run's history (the OOD
            baseline); they also feed the fallback, but never count as tried here.
        injected_label: How the prompt names the source of ``injected_history``.
        hyperparameters: Adds its ``sample()`` to every suggestion; the history shows the values
            next to the classes (the {lr, wd} + ICRL baseline).
        detection_feedback: The history also names the classes the detector found in almost no
            clip (a trial's ``class_coverage``, :mod:`a2o.detect.coverage`): an absent object is a
            dead channel, which the accuracy alone does not reveal. Off by default (opt-in until the
            searcher comparison shows it helps).
        fill_from_uses: With the small prompt's ``uses`` pairs (structured output), a reply's set is
            filled up to the target count with the objects of its own pairs that it left out
            (:func:`searchers.parsing.parse_reply_filled`). Off by default (opt-in until the
            comparison measures it: ``icrl-uses`` in benchmarks/searchers.py).
        confusion_feedback: Each history entry names the 3 most confused action pairs of the trial
            ("stirring mistaken for whisking 35%"), beyond the paper's class-wise accuracy.
        screen_candidates: K > 1 asks the LLM for K different sets per iteration, scores each with
            ``screen`` and sends the best-scoring one to the trial; all K and their proxy scores
            join the history (:mod:`searchers.screening`). 1 (default): off.
        max_fallback_share: Stop with :class:`~a2o.errors.FallbackLimitError` once 2+ proposals, and
            more than this share of them, were fallbacks (:class:`~searchers.proposer.Proposer`). None: never.
        screen: The proxy, ``class_set -> score`` (higher is better), e.g.
            :meth:`a2o.train.proxy.MapProxy.score`. Required when ``screen_candidates > 1``.

    .. warning::
        The API key is read from the environment variable named by the client spec when the client
        is built; it is never part of the searcher's pickled state, logs or suggestions.

    .. warning::
        Tune passes ``TuneConfig``'s ``metric``/``mode`` (``set_search_properties``) only when the
        ``param_space`` is non-empty. With an empty one, pass them here: otherwise the searcher
        uses ``"val_accuracy"``/``"max"`` (logged once, at INFO), so ``mode="min"`` needs either
        this argument or a non-empty ``param_space``.

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
            action_names=["serve", "volley"], max_classes=6, num_trials=4, epochs_per_trial=2,
            metric="val_accuracy", mode="max")
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
        metric: Optional[str] = None,
        mode: Optional[str] = None,
        seed: int = 0,
        initial_classes: Optional[Sequence[str]] = None,
        vocabulary: Optional[Sequence[str]] = None,
        prompt: str = "paper",
        prompt_template: Optional[str] = None,
        response_format: str = "text",
        epochs_per_trial: Optional[int] = None,
        max_fallback_share: Optional[float] = None,
        show_history: bool = True,
        injected_history: Sequence[TrialRecord] = (),
        injected_label: str = "another dataset",
        hyperparameters: Optional[HyperparameterSampler] = None,
        detection_feedback: bool = False,
        confusion_feedback: bool = True,
        screen_candidates: int = 1,
        screen: Optional[Any] = None,
        fill_from_uses: bool = False,
    ):
        super().__init__(metric=metric, mode=check_mode(mode))
        if not action_names:
            raise ValueError("action_names must list the target actions shown to the LLM")
        if max_classes < 1 or num_trials < 1:
            raise ValueError("need max_classes >= 1 and num_trials >= 1")
        if response_format not in ("text", "json_schema"):
            raise ValueError(f"response_format must be 'text' or 'json_schema', got {response_format!r}")
        self.action_names = tuple(str(a) for a in action_names)
        self.task_description = task_description
        self.max_classes = int(max_classes)
        self.num_trials = int(num_trials)
        self.target_classes = min(int(target_classes or min(8, max_classes)), self.max_classes)
        self.seed = int(seed)
        self.response_format = response_format
        self.template = prompting.load_template(f"icrl_{prompt}", prompt_template)
        # The small prompt with structured output asks for action -> object pairs before the set
        # (see llm_client.uses_response_format): small models otherwise echo the action names.
        self.ask_uses = prompt == "small" and prompt_template is None and response_format == "json_schema"
        self.initial_classes = ClassSet.parse(initial_classes or [], action_names=self.action_names,
                                              max_classes=self.max_classes, where="initial_classes")
        self.vocabulary = usable_words(vocabulary or [], action_names=self.action_names)
        self.show_history = show_history
        self.injected_history = tuple(injected_history)
        self.injected_label = injected_label
        self.hyperparameters = hyperparameters
        self.detection_feedback = bool(detection_feedback)
        self.confusion_feedback = bool(confusion_feedback)
        self.fill_from_uses = bool(fill_from_uses)

        if int(screen_candidates) > 1 and not show_history:
            raise ValueError("screening needs the history (show_history=True): the LLM learns from the proxy scores")
        self.screener = Screener(int(screen_candidates), screen) if int(screen_candidates) > 1 else None

        self.proposer = Proposer(llm, max_reasks=max_reasks, label=type(self).__name__,
                                 max_fallback_share=max_fallback_share)
        self.log = TrialLog(epochs_per_trial=epochs_per_trial)
        self.tried: list[ClassSet] = []  # every suggested set, in order (running ones included)
        self._rng = random.Random(self.seed)  # the fallback's stream

    # ---------------------------------------------------------------- what the service reads
    @property
    def epochs_per_trial(self) -> Optional[int]:
        return self.log.epochs_per_trial

    # ---------------------------------------------------------------- the prompt
    def build_prompt(self) -> str:
        """The prompt the next LLM request would carry (deterministic in the state)."""
        if self.show_history:
            history = prompting.format_history(self.history, injected=self.injected_history,
                                               injected_label=self.injected_label,
                                               epochs_per_trial=self.epochs_per_trial,
                                               detection_feedback=getattr(self, "detection_feedback", False),
                                               confusion_feedback=getattr(self, "confusion_feedback", True))
            pending = prompting.format_pending(self.log.pending())
            screener = getattr(self, "screener", None)
            if screener is not None:
                history += screener.history_block()
        else:
            history, pending = prompting.NO_HISTORY, ""
        instructions = self._instructions()
        return prompting.render(
            self.template,
            task_description=self.task_description or "Video action recognition.",
            action_names=prompting.format_actions(self.action_names),
            num_actions=len(self.action_names),
            target_count=self.target_classes,
            max_classes=self.max_classes,
            history=history,
            pending=pending,
            format_instructions=instructions,
        )

    def _instructions(self) -> str:
        screener = getattr(self, "screener", None)
        if screener is not None:
            return candidates_instructions(screener.k, response_format=self.response_format, uses=self.ask_uses,
                                           target_count=self.target_classes)
        return prompting.USES_INSTRUCTIONS if self.ask_uses else prompting.format_instructions(self.response_format)

    def request(self) -> Request:
        """The next LLM request, snapshotted: prompt, seed, tried sets, reply parser, schema."""
        screener = getattr(self, "screener", None)
        if screener is not None and self.response_format == "json_schema":
            schema: Optional[dict[str, Any]] = candidates_response_format(
                screener.k, self.max_classes, num_actions=len(self.action_names) if self.ask_uses else 0,
                min_classes=max(1, self.target_classes // 2))
        elif screener is not None:
            schema = None
        elif self.ask_uses:
            schema = uses_response_format(self.max_classes, len(self.action_names))
        else:
            schema = classes_response_format(self.max_classes) if self.response_format == "json_schema" else None
        return Request(
            messages=({"role": "user", "content": self.build_prompt()},),
            seed=self.seed + len(self.tried),
            tried=frozenset(c.as_frozenset() for c in self.tried),
            parse=(functools.partial(parse_reply_filled, action_names=self.action_names, max_classes=self.max_classes,
                                     fill_to=self.target_classes)
                   if getattr(self, "fill_from_uses", False) and self.ask_uses
                   else functools.partial(parse_reply, action_names=self.action_names, max_classes=self.max_classes)),
            response_format=schema,
            format_instructions=(self._instructions() if screener is not None
                                 else prompting.format_instructions(self.response_format)),
        )

    def _job(self) -> Job:
        """The background job of the next proposal: one set, or K candidates when screening."""
        request = self.request()
        if getattr(self, "screener", None) is None:
            return request
        return CandidateRequest(request, self.screener.k, self.action_names, self.max_classes)

    def _fallback(self) -> ClassSet:
        return fallback_class_set(
            records=self.history, injected=self.injected_history, best=self.best(),
            start=self.initial_classes or (self.tried[-1] if self.tried else ()), tried=self.tried,
            vocabulary=self.vocabulary, action_names=self.action_names, mode=self._metric_and_mode()[1],
            rng=self._rng, max_classes=self.max_classes, target_classes=self.target_classes,
        )

    # ---------------------------------------------------------------- the Searcher contract
    def suggest(self, trial_id: str) -> Optional[dict[str, Any]]:
        self._metric_and_mode()
        if len(self.tried) >= self.num_trials:
            return Searcher.FINISHED
        screener = getattr(self, "screener", None)
        screened: dict[str, Any] = {}
        if screener is not None and screener.busy:  # candidates in, scoring them (also after a restore)
            picked = screener.poll()
            if picked is None:
                return None
            class_set, screened, proposal = picked
            if class_set.as_frozenset() in {c.as_frozenset() for c in self.tried}:  # cannot happen: guarded
                logger.error("screening picked a set already tried; using the fallback instead")
                class_set, screened = self._fallback(), {**screened, "duplicate_replaced": True}
            proposal = Proposal(class_set, proposal.source if proposal is not None else "llm")
        elif not self.tried and self.initial_classes:
            proposal = Proposal(self.initial_classes, "initial")
            self.proposer.record(proposal)
        else:
            if not self.proposer.busy:
                logger.info("proposal %d of %d: asking the LLM (%d finished trials in the prompt)",
                            len(self.tried) + 1, self.num_trials, len(self.history))
            proposal = self.proposer.poll(self._job, fallback=self._fallback)
            if proposal is None:
                return None
            candidates = proposal.extra.get("candidates") if proposal.source == "llm" else None
            if screener is not None and candidates:
                screener.start(len(self.tried) + 1, [ClassSet(tuple(c)) for c in candidates], proposal)
                return self.suggest(trial_id)  # starts scoring the first candidate
        hyperparameters = self.hyperparameters.sample() if self.hyperparameters is not None else {}
        self.tried.append(proposal.class_set)
        self.log.start(trial_id, proposal.class_set, source=proposal.source, hyperparameters=hyperparameters)
        suggestion = {"classes": list(proposal.class_set), "proposal_source": proposal.source, **hyperparameters}
        if screened:
            suggestion["screen"] = screened
        return suggestion

    # ---------------------------------------------------------------- screening, stats and restore
    @property
    def stats(self) -> dict[str, Any]:
        """The proposer's LLM counts, plus the screening counts when screening is on."""
        screener = getattr(self, "screener", None)
        if screener is None:
            return self.proposer.stats
        return {**self.proposer.stats, "screening": {**screener.stats, "k": screener.k}}

    def screened(self) -> list[dict[str, Any]]:
        """Every screened candidate with its proxy score (empty when screening is off)."""
        screener = getattr(self, "screener", None)
        return screener.records() if screener is not None else []

    def restore(self, checkpoint_path: str) -> None:
        """:meth:`LLMSetSearcher.restore`; a screening iteration in progress keeps its unscored
        candidates, and this instance's proxy is used."""
        live = getattr(self, "screener", None)
        if live is not None:
            live.shutdown()
        super().restore(checkpoint_path)
        if getattr(self, "screener", None) is not None:
            self.screener.take_proxy_from(live)

