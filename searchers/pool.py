"""Prompt pool: the LLM enumerates relevant objects once, then proposes combinations (paper baseline)."""

from __future__ import annotations

import functools
import logging
import random
from collections.abc import Mapping, Sequence
from typing import Any, Optional

from ray.tune.search import Searcher

from a2o.detect.classes import ClassSet
from a2o.errors import LLMReplyError
from searchers import prompting
from searchers.base import LLMSetSearcher
from searchers.fallback import fallback_class_set
from searchers.llm_client import classes_response_format
from searchers.parsing import parse_reply
from searchers.proposer import Exchange, Job, LLMArg, Proposal, Proposer, Request
from searchers.trials import TrialLog, check_mode
from searchers.words import usable_words

__all__ = ["PromptPoolSearcher"]

logger = logging.getLogger(__name__)


class PromptPoolSearcher(LLMSetSearcher):
    """The paper's *Prompt pool* baseline.

    The first LLM call asks for a pool of up to ``pool_size`` objects relevant to the actions
    (template ``pool_enumerate``). Each suggestion then asks the LLM for a combination of about
    ``target_classes`` members of that pool (template ``pool_combine``), without any accuracy
    history; members outside the pool are dropped. An empty pool is asked again at the next
    suggestion (and that suggestion falls back, visibly, like ICRL's). Once enumerated, the pool
    also leads the fallback's words.

    Args:
        llm: As :class:`~searchers.icrl.ICRLSearcher`.
        action_names: As :class:`~searchers.icrl.ICRLSearcher`.
        pool_size: Most objects in the enumerated pool.
        task_description, max_classes, num_trials, target_classes, max_reasks, metric, mode, seed,
        initial_classes, vocabulary, response_format, epochs_per_trial, max_fallback_share: As
            :class:`~searchers.icrl.ICRLSearcher` (the pool templates are fixed: no ``prompt``).

    .. warning::
        The pool is fixed after the first call; a weak pool bounds every later proposal.

    .. warning::
        Tune passes ``TuneConfig``'s ``metric``/``mode`` only with a non-empty ``param_space``;
        otherwise pass them here, or the searcher uses ``"val_accuracy"``/``"max"`` (logged).

    Example:

    .. code-block:: python

        import ray
        from ray import tune
        from searchers.llm_client import LLMClientSpec
        from searchers.pool import PromptPoolSearcher

        def trainable(config):
            tune.report({"val_accuracy": 0.1 * len(config["classes"]), "epoch": 1})

        searcher = PromptPoolSearcher(LLMClientSpec(base_url="http://127.0.0.1:8080/v1"),
                                      action_names=["kick", "throw"], num_trials=4,
                                      metric="val_accuracy", mode="max")
        ray.init(address="local", num_cpus=2, include_dashboard=False)
        tune.Tuner(trainable, tune_config=tune.TuneConfig(
            search_alg=searcher, num_samples=4, metric="val_accuracy", mode="max")).fit()
    """

    def __init__(
        self,
        llm: LLMArg,
        action_names: Sequence[str],
        *,
        pool_size: int = 32,
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
        response_format: str = "text",
        epochs_per_trial: Optional[int] = None,
        max_fallback_share: Optional[float] = None,
    ):
        super().__init__(metric=metric, mode=check_mode(mode))
        if not action_names:
            raise ValueError("action_names must list the target actions shown to the LLM")
        if max_classes < 1 or num_trials < 1 or pool_size < 1:
            raise ValueError("need max_classes >= 1, num_trials >= 1 and pool_size >= 1")
        if response_format not in ("text", "json_schema"):
            raise ValueError(f"response_format must be 'text' or 'json_schema', got {response_format!r}")
        self.action_names = tuple(str(a) for a in action_names)
        self.task_description = task_description
        self.max_classes = int(max_classes)
        self.num_trials = int(num_trials)
        self.target_classes = min(int(target_classes or min(8, max_classes)), self.max_classes)
        self.pool_size = int(pool_size)
        self.seed = int(seed)
        self.response_format = response_format
        self.initial_classes = ClassSet.parse(initial_classes or [], action_names=self.action_names,
                                              max_classes=self.max_classes, where="initial_classes")
        self.vocabulary = usable_words(vocabulary or [], action_names=self.action_names)
        self.pool: Optional[list[str]] = None
        self.enumerate_template = prompting.load_template("pool_enumerate")
        self.combine_template = prompting.load_template("pool_combine")

        self.proposer = Proposer(llm, max_reasks=max_reasks, label=type(self).__name__,
                                 max_fallback_share=max_fallback_share)
        self.log = TrialLog(epochs_per_trial=epochs_per_trial)
        self.tried: list[ClassSet] = []  # every suggested set, in order (running ones included)
        self._rng = random.Random(self.seed)  # the fallback's stream

    # ---------------------------------------------------------------- what is asked
    def _job(self) -> Job:
        """Enumerate the pool (first time, or after an empty one), then ask for a combination."""
        fields = {
            "task_description": self.task_description or "Video action recognition.",
            "action_names": prompting.format_actions(self.action_names),
            "num_actions": len(self.action_names),
            "target_count": self.target_classes,
            "max_classes": self.max_classes,
            "history": "",
            "pending": prompting.format_pending(self.log.pending()),
            "format_instructions": prompting.format_instructions(self.response_format),
        }
        json_schema = self.response_format == "json_schema"
        combine_template, action_names, max_classes = self.combine_template, self.action_names, self.max_classes
        seed, tried = self.seed + len(self.tried), frozenset(c.as_frozenset() for c in self.tried)

        def combine(pool: Sequence[str]) -> Request:
            prompt = prompting.render(combine_template, **fields, pool=prompting.format_actions(pool))
            return Request(
                messages=({"role": "user", "content": prompt},), seed=seed, tried=tried,
                parse=functools.partial(parse_reply, action_names=action_names, max_classes=max_classes,
                                        allowed=tuple(pool)),
                response_format=classes_response_format(max_classes) if json_schema else None,
                format_instructions=fields["format_instructions"],
            )

        if self.pool is not None:
            return combine(self.pool)
        enumerate_prompt = prompting.render(self.enumerate_template, **dict(fields, max_classes=self.pool_size))
        pool_size, pool_seed = self.pool_size, self.seed

        def enumerate_then_combine(exchange: Exchange) -> Optional[ClassSet]:
            try:
                text = exchange.complete([{"role": "user", "content": enumerate_prompt}], seed=pool_seed,
                                         response_format=classes_response_format(pool_size) if json_schema else None)
            except LLMReplyError as exc:
                exchange.reason = f"the object pool request failed: {exc}"
                return None
            pool = parse_reply(text, action_names=action_names, max_classes=pool_size).class_set
            if not pool:
                exchange.reason = "the object pool reply contained no usable object class"
                return None
            exchange.extra["pool"] = list(pool)
            return exchange.ask(combine(pool))

        return enumerate_then_combine

    def _keep_pool(self, extra: Mapping[str, Any]) -> None:
        if "pool" in extra and self.pool is None:
            self.pool = list(extra["pool"])
            self.vocabulary = self.pool + [w for w in self.vocabulary if w not in self.pool]

    def _fallback(self) -> ClassSet:
        return fallback_class_set(
            records=self.history, best=self.best(),
            start=self.initial_classes or (self.tried[-1] if self.tried else ()), tried=self.tried,
            vocabulary=self.vocabulary, action_names=self.action_names, mode=self._metric_and_mode()[1],
            rng=self._rng, max_classes=self.max_classes, target_classes=self.target_classes,
        )

    # ---------------------------------------------------------------- the Searcher contract
    def suggest(self, trial_id: str) -> Optional[dict[str, Any]]:
        self._metric_and_mode()
        if len(self.tried) >= self.num_trials:
            return Searcher.FINISHED
        if not self.tried and self.initial_classes:
            proposal = Proposal(self.initial_classes, "initial")
            self.proposer.record(proposal)
        else:
            if not self.proposer.busy:
                logger.info("proposal %d of %d: asking the LLM (%s)", len(self.tried) + 1, self.num_trials,
                            "combine from the pool" if self.pool is not None else "enumerate the pool, then combine")
            proposal = self.proposer.poll(self._job, fallback=self._fallback, absorb=self._keep_pool)
            if proposal is None:
                return None
        self.tried.append(proposal.class_set)
        self.log.start(trial_id, proposal.class_set, source=proposal.source)
        return {"classes": list(proposal.class_set), "proposal_source": proposal.source}

