"""What A2O's searchers share once they keep a :class:`~searchers.trials.TrialLog`: the finished
history, Tune's metric/mode, result handling and save/restore (:class:`LoggedSearcher`, random and
Optuna); the LLM searchers add their :class:`~searchers.proposer.Proposer`'s stats and keep the live
LLM client across a restore (:class:`LLMSetSearcher`, ICRL and Prompt pool).
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from typing import Any, Optional

from ray.tune.search import Searcher

from a2o.records import TrialRecord
from searchers.trials import check_mode, metric_and_mode

__all__ = ["LoggedSearcher", "LLMSetSearcher"]


class LoggedSearcher(Searcher):
    """A Tune ``Searcher`` over class sets whose subclass sets ``self.log`` (a ``TrialLog``)."""

    log: Any  # searchers.trials.TrialLog

    @property
    def history(self) -> list[TrialRecord]:
        """Finished trials, oldest first."""
        return self.log.records

    def best(self) -> Optional[TrialRecord]:
        """Best finished record (finished trials before early-stopped ones), or None."""
        return self.log.best(self._metric_and_mode()[1])

    def _metric_and_mode(self) -> tuple[str, str]:
        self._metric, self._mode = metric_and_mode(self._metric, self._mode, type(self).__name__)
        return self._metric, self._mode

    def set_search_properties(self, metric: Optional[str], mode: Optional[str], config: dict, **spec) -> bool:
        """Tune's metric/mode (from ``TuneConfig``) replace the constructor's; always accepted."""
        if metric:
            self._metric = metric
        if mode:
            self._mode = check_mode(mode)
        return True

    def on_trial_result(self, trial_id: str, result: Optional[Mapping[str, Any]]) -> None:
        self.log.result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: Optional[Mapping[str, Any]] = None, error: bool = False) -> None:
        self.log.complete(trial_id, result, error=error, metric=self._metric_and_mode()[0])

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as fh:
            pickle.dump(self.__dict__, fh)  # an LLM searcher's proposer leaves out its client and thread

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as fh:
            self.__dict__.update(pickle.load(fh))


class LLMSetSearcher(LoggedSearcher):
    """A :class:`LoggedSearcher` whose subclass also sets ``self.proposer`` (a ``Proposer``)."""

    proposer: Any  # searchers.proposer.Proposer

    @property
    def stats(self) -> dict[str, Any]:
        """LLM calls, re-asks, fallbacks, tokens and latency (``searcher_stats`` in results.json)."""
        return self.proposer.stats

    def restore(self, checkpoint_path: str) -> None:
        """Load state saved by :meth:`save`; keeps this instance's LLM client if it has one."""
        with open(checkpoint_path, "rb") as fh:
            state = pickle.load(fh)
        live = self.proposer
        live.shutdown()
        self.__dict__.update(state)
        self.proposer.take_llm_from(live)
