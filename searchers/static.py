"""Static prompts: the LLM sees only the task description, T independent proposals (paper baseline)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from searchers.icrl import ICRLSearcher
from searchers.proposer import LLMArg

__all__ = ["static_prompt_searcher"]


def static_prompt_searcher(llm: LLMArg, action_names: Sequence[str], **kwargs: Any) -> ICRLSearcher:
    """The paper's *Static prompts* baseline: ICRL with the history removed from the prompt.

    Every proposal is asked with the same fixed task ``c`` (dataset, action names, output format)
    and no history, so the T proposals are independent samples; each request carries its own
    seed (``seed + index``) so samples differ and the replay cache keeps them apart. Parsing,
    re-asks on unusable or already-tried sets, the logged fallback and the contract are those of
    :class:`~searchers.icrl.ICRLSearcher` (built with ``show_history=False``), whose arguments this
    takes unchanged (``vocabulary`` only feeds the fallback).

    .. warning::
        A re-ask after a duplicate names the repeated set, which is the only feedback the LLM
        gets; results never reach the prompt.

    Example:

    .. code-block:: python

        import ray
        from ray import tune
        from searchers.llm_client import LLMClientSpec
        from searchers.static import static_prompt_searcher

        def trainable(config):
            tune.report({"val_accuracy": min(1.0, len(config["classes"]) / 10), "epoch": 1})

        searcher = static_prompt_searcher(LLMClientSpec(base_url="http://127.0.0.1:8080/v1"),
                                          action_names=["dribble", "shoot"], num_trials=4,
                                          metric="val_accuracy", mode="max")
        ray.init(address="local", num_cpus=2, include_dashboard=False)
        tune.Tuner(trainable, tune_config=tune.TuneConfig(
            search_alg=searcher, num_samples=4, metric="val_accuracy", mode="max")).fit()
    """
    return ICRLSearcher(llm, action_names, show_history=False, **kwargs)
