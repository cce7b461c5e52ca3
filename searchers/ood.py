"""OOD history: ICRL started with another dataset's search history injected (paper baseline)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Union

from a2o.errors import DataError
from searchers.icrl import ICRLSearcher

__all__ = ["OODHistorySearcher", "load_history"]


def _record(item: Mapping[str, Any]) -> dict[str, Any]:
    """One history entry from a results record (flat, or Tune-like with config/metrics)."""
    config = item.get("config") if isinstance(item.get("config"), Mapping) else {}
    metrics = item.get("metrics") or item.get("last_result") or item
    classes = item.get("classes") or config.get("classes") or metrics.get("classes") or []
    return {
        "classes": list(classes),
        "val_accuracy": metrics.get("val_accuracy"),
        "classwise_accuracy": metrics.get("classwise_accuracy") or {},
        "status": item.get("status", "ok") if item.get("status") in ("ok", "error", "invalid",
                                                                     "early_stopped") else "ok",
    }


def load_history(path: str) -> list[dict[str, Any]]:
    """History entries from another run's results JSON.

    Accepts a list of records, or a mapping holding one under ``"history"`` or ``"trials"``. A
    record is flat (``classes``, ``val_accuracy``, ``classwise_accuracy``) or Tune-like
    (``config.classes`` plus ``metrics``/``last_result``).
    """
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"search.ood_history: cannot read '{path}' as JSON ({exc}); pass another run's "
                        "results.json") from None
    if isinstance(data, Mapping):
        data = data.get("history", data.get("trials"))
    if not isinstance(data, list):
        raise DataError(f"search.ood_history: '{path}' holds no list of trials (expected a list, or "
                        "a mapping with 'history' or 'trials')")
    return [_record(item) for item in data if isinstance(item, Mapping)]


class OODHistorySearcher(ICRLSearcher):
    """The paper's *OOD-history* baseline: ICRL whose first prompt already holds a history
    from a search on a different dataset.

    The injected entries are shown in their own block, labelled as coming from another dataset,
    before this run's own history; they never count as tried sets of this run but do feed the
    fallback's choice of a base set when this run has no result yet.

    Args:
        llm: As :class:`~searchers.icrl.ICRLSearcher`.
        action_names: As :class:`~searchers.icrl.ICRLSearcher` (this dataset's actions).
        ood_history: The other run's history: a list of entries (``classes``, ``val_accuracy``,
            optional ``classwise_accuracy``) or the path of its results JSON
            (see :func:`load_history`).
        ood_label: How the prompt names the other dataset, e.g. ``"Something-Something v2"``.
        **kwargs: Every other :class:`~searchers.icrl.ICRLSearcher` argument.

    .. warning::
        The other dataset's class-wise accuracy refers to *its* actions; the prompt says so, but a
        small model may still copy its classes verbatim.

    Example:

    .. code-block:: python

        import ray
        from ray import tune
        from searchers.llm_client import LLMClientSpec
        from searchers.ood import OODHistorySearcher

        def trainable(config):
            tune.report({"val_accuracy": 0.1 * len(config["classes"]), "epoch": 1})

        other = [{"classes": ["ball", "hand"], "val_accuracy": 0.42}]
        searcher = OODHistorySearcher(LLMClientSpec(base_url="http://127.0.0.1:8080/v1"),
                                      action_names=["pour", "stir"], ood_history=other, num_trials=3)
        ray.init(address="local", num_cpus=2, include_dashboard=False)
        tune.Tuner(trainable, tune_config=tune.TuneConfig(
            search_alg=searcher, num_samples=3, metric="val_accuracy", mode="max")).fit()
    """

    def __init__(self, llm: Any, action_names: Sequence[str], *,
                 ood_history: Union[str, Sequence[Mapping[str, Any]]],
                 ood_label: str = "another dataset", **kwargs: Any):
        history = load_history(ood_history) if isinstance(ood_history, str) else list(ood_history)
        if not history:
            raise ValueError("ood_history is empty: pass another run's history (or use searcher 'icrl')")
        super().__init__(llm, action_names, injected_history=history, injected_label=ood_label, **kwargs)
