"""Prompt pool: the LLM enumerates relevant objects once, then proposes combinations (paper baseline)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

from searchers import prompting
from searchers.icrl import ICRLSearcher, _Job, _Outcome
from searchers.llm_client import classes_response_format
from searchers.parsing import parse_class_reply

__all__ = ["PromptPoolSearcher"]


class PromptPoolSearcher(ICRLSearcher):
    """The paper's *Prompt pool* baseline.

    The first LLM call asks for a pool of up to ``pool_size`` objects relevant to the actions
    (template ``pool_enumerate``). Each suggestion then asks the LLM for a combination of about
    ``target_classes`` members of that pool (template ``pool_combine``), without any accuracy
    history; members outside the pool are dropped. An empty pool is asked again at the next
    suggestion (and that suggestion falls back, visibly, like ICRL's).

    Args:
        llm: As :class:`~searchers.icrl.ICRLSearcher`.
        action_names: As :class:`~searchers.icrl.ICRLSearcher`.
        pool_size: Most objects in the enumerated pool.
        **kwargs: Every other :class:`~searchers.icrl.ICRLSearcher` argument (``prompt`` and
            ``prompt_template`` do not apply: the pool templates are fixed).

    .. warning::
        The pool is fixed after the first call; a weak pool bounds every later proposal.

    Example:

    .. code-block:: python

        import ray
        from ray import tune
        from searchers.llm_client import LLMClientSpec
        from searchers.pool import PromptPoolSearcher

        def trainable(config):
            tune.report({"val_accuracy": 0.1 * len(config["classes"]), "epoch": 1})

        searcher = PromptPoolSearcher(LLMClientSpec(base_url="http://127.0.0.1:8080/v1"),
                                      action_names=["kick", "throw"], num_trials=4)
        ray.init(address="local", num_cpus=2, include_dashboard=False)
        tune.Tuner(trainable, tune_config=tune.TuneConfig(
            search_alg=searcher, num_samples=4, metric="val_accuracy", mode="max")).fit()
    """

    def __init__(self, llm: Any, action_names: Sequence[str], *, pool_size: int = 32, **kwargs: Any):
        kwargs.pop("prompt", None)
        kwargs.pop("prompt_template", None)
        super().__init__(llm, action_names, **kwargs)
        if pool_size < 1:
            raise ValueError("pool_size must be >= 1")
        self.pool_size = int(pool_size)
        self.pool: Optional[list[str]] = None
        self._enumerate_template = prompting.load_template("pool_enumerate")
        self._combine_template = prompting.load_template("pool_combine")

    def _history_text(self) -> str:
        return ""

    def _combine_prompt(self, fields: dict[str, Any], pool: list[str]) -> str:
        return prompting.render(self._combine_template, **fields, pool=prompting.format_actions(pool))

    def _prepare_job(self) -> _Job:
        fields = self._prompt_fields()
        job = _Job(messages=[], seed=self.seed + len(self._tried),
                   tried=frozenset(frozenset(s) for s in self._tried))
        if self.pool is None:
            enum_fields = dict(fields, max_classes=self.pool_size)
            job.extra["enumerate"] = [{"role": "user", "content": prompting.render(
                self._enumerate_template, **enum_fields)}]
            job.extra["fields"] = fields
        else:
            job.messages = [{"role": "user", "content": self._combine_prompt(fields, self.pool)}]
            job.extra["pool"] = list(self.pool)
        return job

    def _parse(self, text: str, job: _Job) -> list[str]:
        return parse_class_reply(text, action_names=self.action_names, max_classes=self.max_classes,
                                 allowed=job.extra["pool"])

    def _ask(self, job: _Job, outcome: _Outcome) -> None:
        if "enumerate" in job.extra:
            reply = self._get_client().complete(
                job.extra["enumerate"], seed=self.seed,
                response_format=classes_response_format(self.pool_size)
                if self.response_format == "json_schema" else None,
            )
            outcome.llm_calls += 1
            outcome.cache_hits += int(getattr(reply, "cached", False))
            outcome.prompt_tokens += reply.prompt_tokens
            outcome.completion_tokens += reply.completion_tokens
            outcome.latency_s += reply.latency_s
            pool = parse_class_reply(reply.text, action_names=self.action_names, max_classes=self.pool_size)
            if not pool:
                outcome.reason = "the object pool reply contained no usable object class"
                return
            outcome.extra["pool"] = pool
            job.extra["pool"] = pool
            job.messages = [{"role": "user", "content": self._combine_prompt(job.extra["fields"], pool)}]
        super()._ask(job, outcome)

    def _absorb(self, outcome: _Outcome) -> None:
        if "pool" in outcome.extra and self.pool is None:
            self.pool = list(outcome.extra["pool"])
            self.vocabulary = self.pool + [w for w in self.vocabulary if w not in self.pool]
