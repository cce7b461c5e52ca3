"""What every searcher keeps about its trials: the running ones and the finished records.

A :class:`TrialLog` is the searcher-side half of Tune's trial protocol. It remembers each
suggested trial until Tune completes it, keeps the trial's last reported result, and turns the
completion into an :class:`a2o.records.TrialRecord`, the one shape of a finished trial. Results
for trial ids it never suggested (a restore, a re-run of an errored trial) are ignored.

:func:`metric_and_mode` is the one place the searchers' metric/mode defaults are decided.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

from a2o.detect.classes import ClassSet
from a2o.records import TrialRecord

__all__ = ["DEFAULT_METRIC", "DEFAULT_MODE", "TrialLog", "check_mode", "metric_and_mode"]

logger = logging.getLogger(__name__)

DEFAULT_METRIC = "val_accuracy"
"""The metric an A2O trainable reports, used when neither the constructor nor Tune named one."""
DEFAULT_MODE = "max"
"""The mode used when neither the constructor nor Tune named one."""


def check_mode(mode: Optional[str]) -> Optional[str]:
    """``mode`` when it is None, ``"max"`` or ``"min"``; raises ``ValueError`` otherwise."""
    if mode not in (None, "max", "min"):
        raise ValueError(f"mode must be 'max', 'min' or None, got {mode!r}")
    return mode


def metric_and_mode(metric: Optional[str], mode: Optional[str], owner: str) -> tuple[str, str]:
    """The metric and mode to use now: the given ones, else the defaults (logged once, at INFO).

    Tune calls ``set_search_properties`` only when the ``param_space`` is non-empty, so a searcher
    built without ``metric``/``mode`` may never hear ``TuneConfig``'s. The caller stores the
    returned pair, so the log line is written once and the pair is part of the saved state.
    """
    if metric is None or mode is None:
        logger.info(
            "%s: %s not set by the constructor or by Tune (Tune passes TuneConfig's metric/mode only "
            "with a non-empty param_space); using %s", owner,
            " and ".join(name for name, value in (("metric", metric), ("mode", mode)) if value is None),
            f"metric={metric or DEFAULT_METRIC!r}, mode={mode or DEFAULT_MODE!r}",
        )
    return metric or DEFAULT_METRIC, mode or DEFAULT_MODE


@dataclass
class _Running:
    class_set: ClassSet
    source: str
    hyperparameters: dict[str, float]
    last_result: Optional[dict[str, Any]] = None


@dataclass
class TrialLog:
    """Running trials (by Tune trial id) and finished :class:`TrialRecord` s, oldest first.

    Args:
        epochs_per_trial: Epochs a trial runs when not stopped; a trial that ends before it is
            recorded ``early_stopped``. When None, the most epochs any trial has reached is the
            reference (earlier records are re-marked as that grows).
    """

    epochs_per_trial: Optional[int] = None
    records: list[TrialRecord] = field(default_factory=list)
    running: dict[str, _Running] = field(default_factory=dict)

    def start(self, trial_id: str, class_set: ClassSet, *, source: str = "",
              hyperparameters: Optional[Mapping[str, float]] = None) -> None:
        """Remember a suggested trial until Tune completes it."""
        self.running[trial_id] = _Running(class_set, source, dict(hyperparameters or {}))

    def pending(self) -> list[ClassSet]:
        """Class sets of the trials still running, in the order they were suggested."""
        return [trial.class_set for trial in self.running.values()]

    def result(self, trial_id: str, result: Optional[Mapping[str, Any]]) -> None:
        """Keep a running trial's latest result; unknown ids and empty results are ignored."""
        trial = self.running.get(trial_id)
        if trial is not None and result:
            trial.last_result = dict(result)

    def complete(self, trial_id: str, result: Optional[Mapping[str, Any]], *, error: bool,
                 metric: str) -> Optional[TrialRecord]:
        """Record a finished trial; None (and nothing recorded) for an id that is not running.

        The completion's own result wins over the last intermediate one; a trial without a
        finite ``metric`` is recorded ``invalid``, an errored one ``error`` (never scored).
        """
        trial = self.running.pop(trial_id, None)
        if trial is None:
            logger.debug("completion of unknown trial %s ignored", trial_id)
            return None
        record = TrialRecord.from_result(
            trial.class_set, result or trial.last_result, metric=metric, error=error,
            source=trial.source, hyperparameters=trial.hyperparameters, trial_id=trial_id,
        )
        if record.status == "invalid":
            value = (result or trial.last_result or {}).get(metric)
            logger.warning("Trial %s reported a non-finite %s (%r); recorded as invalid", trial_id, metric, value)
        self.records.append(record)
        self._mark_early_stops()
        return self.records[-1]

    def _mark_early_stops(self) -> None:
        """Mark trials that ended before the full epoch budget (a scheduler such as ASHA stopped them).

        Tune reports ``done=True`` for scheduler-stopped trials too, so the epoch reached is the only
        signal: it is compared with ``epochs_per_trial`` or, when that is unknown, with the most
        epochs any trial has reached so far.
        """
        epochs = [r.epochs for r in self.records if r.epochs is not None]
        reference = self.epochs_per_trial or (max(epochs) if epochs else None)
        if reference is None:
            return
        for index, record in enumerate(self.records):
            if record.status in ("ok", "early_stopped") and record.epochs is not None:
                status = "early_stopped" if record.epochs < reference else "ok"
                if status != record.status:
                    self.records[index] = record.with_status(status)

    def best(self, mode: str) -> Optional[TrialRecord]:
        """Best scored record, finished trials before early-stopped ones; None when none scored."""
        sign = 1.0 if mode == "max" else -1.0
        for status in ("ok", "early_stopped"):
            scored = [r for r in self.records if r.status == status and r.scored]
            if scored:
                return max(scored, key=lambda r: sign * r.val_accuracy)
        return None
