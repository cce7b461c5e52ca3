"""OOD history: ICRL started with another dataset's search history injected (paper baseline)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Union

from a2o.errors import ClassTextError, DataError
from a2o.records import TrialRecord
from searchers.icrl import ICRLSearcher
from searchers.proposer import LLMArg

__all__ = ["load_history", "ood_history_searcher", "records_from_rows"]


def records_from_rows(rows: Sequence[Any], where: str = "search.ood_history") -> list[TrialRecord]:
    """:class:`TrialRecord` s from another run's trial rows (records as they are, dicts read by
    :meth:`TrialRecord.from_dict`: flat rows, Tune-like ``config``/``metrics`` rows, legacy rows).

    Raises:
        DataError: a row names a class that breaks the class-text rule, or a newer record version.
    """
    records = []
    for index, row in enumerate(rows):
        if isinstance(row, TrialRecord):
            records.append(row)
        elif isinstance(row, Mapping):
            try:
                records.append(TrialRecord.from_dict(row))
            except (ClassTextError, ValueError) as exc:
                raise DataError(f"{where}: trial row {index}: {exc}") from None
    return records


def load_history(path: str) -> list[TrialRecord]:
    """Records of another run's results JSON.

    Accepts a list of rows, or a mapping holding one under ``"history"`` or ``"trials"`` (an A2O
    ``results.json``). A row is a record (``to_dict``), flat (``classes``, ``val_accuracy``,
    ``classwise_accuracy``, ``status``) or Tune-like (``config.classes`` plus ``metrics``/``last_result``).
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
    return records_from_rows(data, where=f"search.ood_history '{path}'")


def ood_history_searcher(llm: LLMArg, action_names: Sequence[str], *,
                         ood_history: Union[str, Sequence[Any]],
                         ood_label: str = "another dataset", **kwargs: Any) -> ICRLSearcher:
    """The paper's *OOD-history* baseline: ICRL whose first prompt already holds a history
    from a search on a different dataset.

    The injected records are shown in their own block, labelled as coming from another dataset,
    before this run's own history; they never count as tried sets of this run but do feed the
    fallback's choice of a base set when this run has no result yet.

    Args:
        llm: As :class:`~searchers.icrl.ICRLSearcher`.
        action_names: As :class:`~searchers.icrl.ICRLSearcher` (this dataset's actions).
        ood_history: The other run's history: the path of its results JSON (see
            :func:`load_history`), or its rows (:class:`TrialRecord` s or dicts with ``classes``,
            ``val_accuracy``, optional ``classwise_accuracy``).
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
        from searchers.ood import ood_history_searcher

        def trainable(config):
            tune.report({"val_accuracy": 0.1 * len(config["classes"]), "epoch": 1})

        other = [{"classes": ["ball", "hand"], "val_accuracy": 0.42}]
        searcher = ood_history_searcher(LLMClientSpec(base_url="http://127.0.0.1:8080/v1"),
                                        action_names=["pour", "stir"], ood_history=other, num_trials=3,
                                        metric="val_accuracy", mode="max")
        ray.init(address="local", num_cpus=2, include_dashboard=False)
        tune.Tuner(trainable, tune_config=tune.TuneConfig(
            search_alg=searcher, num_samples=3, metric="val_accuracy", mode="max")).fit()
    """
    history = load_history(ood_history) if isinstance(ood_history, str) else records_from_rows(ood_history)
    if not history:
        raise ValueError("ood_history is empty: pass another run's history (or use searcher 'icrl')")
    return ICRLSearcher(llm, action_names, injected_history=history, injected_label=ood_label, **kwargs)
