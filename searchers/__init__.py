"""Ray Tune searchers over object-class sets: ICRL, its paper baselines, and users' baselines.

=========  =======================================================  ===============================
name       built by                                                 what it is
=========  =======================================================  ===============================
icrl       :class:`searchers.icrl.ICRLSearcher`                     the A2O agent (history in prompt)
static     :func:`searchers.static.static_prompt_searcher`          paper: no history, T samples
pool       :class:`searchers.pool.PromptPoolSearcher`               paper: enumerate, then combine
ood        :func:`searchers.ood.ood_history_searcher`               paper: another dataset's history
hybrid     :func:`searchers.hybrid.hybrid_searcher`                 paper: {lr, wd} + ICRL
random     :class:`searchers.random_search.RandomSubsetSearcher`    random vocabulary subsets
optuna     :class:`searchers.optuna_search.OptunaTPESearcher`       TPE over vocabulary flags
=========  =======================================================  ===============================

``static``, ``ood`` and ``hybrid`` are :class:`~searchers.icrl.ICRLSearcher` with options
(``show_history=False``, ``injected_history``, ``hyperparameters``). Every searcher keeps its
finished trials as :class:`a2o.records.TrialRecord` s in ``history``; the LLM searchers count
their LLM traffic in ``stats``. ``metric`` and ``mode`` default to None (Tune's, else
``"val_accuracy"``/``"max"``; see each class).

Modules are imported on first use, so ``import searchers`` pulls in neither Ray nor openai.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any, Optional

__all__ = ["SEARCHER_CLASSES", "LLM_SEARCHERS", "create_searcher", "searcher_from_config"]

SEARCHER_CLASSES: dict[str, tuple[str, str]] = {  # name -> (module, class or factory function)
    "icrl": ("searchers.icrl", "ICRLSearcher"),
    "static": ("searchers.static", "static_prompt_searcher"),
    "pool": ("searchers.pool", "PromptPoolSearcher"),
    "ood": ("searchers.ood", "ood_history_searcher"),
    "hybrid": ("searchers.hybrid", "hybrid_searcher"),
    "random": ("searchers.random_search", "RandomSubsetSearcher"),
    "optuna": ("searchers.optuna_search", "OptunaTPESearcher"),
}
LLM_SEARCHERS = ("icrl", "static", "pool", "ood", "hybrid")

logger = logging.getLogger(__name__)


def create_searcher(name: str, **kwargs: Any):
    """Build the searcher registered as ``name`` with its class's (or factory's) keyword arguments.

    Raises:
        ValueError: ``name`` is not registered (the message lists the valid names).
    """
    if name not in SEARCHER_CLASSES:
        raise ValueError(f"unknown searcher '{name}'; valid names: {sorted(SEARCHER_CLASSES)}")
    module_name, attribute = SEARCHER_CLASSES[name]
    build = getattr(importlib.import_module(module_name), attribute)
    if name in LLM_SEARCHERS:
        llm = kwargs.pop("llm")
        action_names = kwargs.pop("action_names")
        return build(llm, action_names, **kwargs)
    return build(kwargs.pop("vocabulary"), **kwargs)


def searcher_from_config(
    search: Any,
    llm: Any,
    *,
    action_names: list[str],
    llm_base_url: Optional[str] = None,
    replay_cache_path: Optional[str] = None,
    epochs_per_trial: Optional[int] = None,
    options: Optional[dict[str, Any]] = None,
):
    """Searcher from ``SearchConfig`` and ``LLMConfig`` sections (for entry points).

    Args:
        search: :class:`a2o.config.SearchConfig`.
        llm: :class:`a2o.config.LLMConfig`.
        action_names: The dataset's target action names.
        llm_base_url: The endpoint when ``llm.base_url`` is ``'local'`` (the embedded server's URL).
        replay_cache_path: Replay-cache file in the run's storage (used when ``llm.replay_cache``).
        epochs_per_trial: ``train.epochs``, so early-stopped trials are marked in the prompt.
        options: Further keyword arguments of the searcher's class that the config does not
            carry (``space`` of Optuna, ``lr_range`` of hybrid, the screening proxy ``screen``);
            entry points and benchmarks set them.

    An empty ``search.vocabulary`` means the shipped generic noun list
    (:func:`searchers.vocabulary.generic_vocabulary`), for the vocabulary searchers and for the
    LLM searchers' fallback alike; which list is used is logged once, at INFO.
    """
    common = {"max_classes": search.max_classes, "num_trials": search.num_trials, "seed": search.seed}
    vocabulary = _resolve_vocabulary(search.vocabulary)
    common.update(options or {})
    if search.searcher in ("random", "optuna"):
        return create_searcher(search.searcher, vocabulary=vocabulary, **common)
    from searchers.llm_client import LLMClientSpec

    spec = LLMClientSpec.from_config(llm, base_url=llm_base_url, cache_path=replay_cache_path)
    response_format = llm.response_format
    if response_format == "auto":
        response_format = "json_schema" if llm.base_url == "local" else "text"
    kwargs: dict[str, Any] = dict(
        common,
        llm=spec,
        action_names=action_names,
        task_description=search.task_description,
        max_reasks=search.max_reasks,
        max_fallback_share=getattr(search, "max_fallback_share", None),
        initial_classes=search.initial_classes or None,
        vocabulary=vocabulary,
        response_format=response_format,
        epochs_per_trial=epochs_per_trial,
    )
    if search.searcher != "pool":
        kwargs.update(prompt=llm.prompt, prompt_template=llm.prompt_template or None,
                      detection_feedback=search.detection_feedback,
                      confusion_feedback=search.confusion_feedback)
        if getattr(search, "fill_from_uses", False):
            kwargs["fill_from_uses"] = True
    if getattr(search, "screen_candidates", 1) > 1:  # the proxy comes in options["screen"]
        from a2o.errors import ConfigError
        from searchers.screening import tokens_needed

        need = tokens_needed(search.screen_candidates, min(8, search.max_classes), len(action_names))
        if llm.max_tokens < need:
            raise ConfigError(
                f"llm.max_tokens={llm.max_tokens} is too small for search.screen_candidates={search.screen_candidates} "
                f"sets of about {min(8, search.max_classes)} objects (a reply needs about {need} tokens): set "
                f"llm.max_tokens: {need} or more, or lower search.screen_candidates"
            )
        kwargs["screen_candidates"] = search.screen_candidates
    if search.searcher == "ood":
        kwargs["ood_history"] = search.ood_history
    return create_searcher(search.searcher, **kwargs)


def _resolve_vocabulary(configured: list) -> list[str]:
    """``search.vocabulary``, or the generic list when it is empty; logs which one."""
    if configured:
        logger.info("vocabulary: search.vocabulary, %d entries", len(configured))
        return list(configured)
    from searchers.vocabulary import GENERIC_NOUNS_PATH, generic_vocabulary

    words = generic_vocabulary()
    logger.info("vocabulary: generic list, %d nouns (%s)", len(words), GENERIC_NOUNS_PATH)
    return words
