"""``TrialRecord``: the one shape of a finished trial (and ``TrialRow``, its line in results.json).

Searchers keep their history as records, the service writes them into ``results.json`` (one per
trial, with a few service-only columns beside them), the report reads them back, and the
OOD-history baseline loads another run's records. ``to_dict``/``from_dict`` carry a format version;
``from_dict`` also reads the unversioned rows that runs written before it hold.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from a2o.detect.classes import ClassSet

__all__ = ["TrialRecord", "TrialRow", "TRIAL_STATUSES", "RECORD_VERSION", "finite_or_none"]

RECORD_VERSION = 2  # 2: confusion_labels, class_coverage
TRIAL_STATUSES = ("ok", "early_stopped", "error", "invalid")
"""ok: ran its epochs, finite metric; early_stopped: a scheduler (ASHA) ended it, the metric is
that of its last epoch; error: it raised, no metric; invalid: it reported a non-finite metric."""


def finite_or_none(value: Any) -> float | None:
    """``float(value)`` when it is a finite real number, else None (NaN, inf, None, text, bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


@dataclass(frozen=True)
class TrialRecord:
    """A finished trial: what was tried, what it scored, and how it ended."""

    class_set: ClassSet
    """The classes the trial trained with, in channel order."""
    status: str = "ok"
    """One of :data:`TRIAL_STATUSES`."""
    val_accuracy: float | None = None
    """Overall validation accuracy (the searched metric); None unless status is ok/early_stopped."""
    classwise_accuracy: Mapping[str, float] = field(default_factory=dict)
    """Per-action validation accuracy, action name -> accuracy."""
    confusion: tuple[tuple[int, ...], ...] | None = None
    """Validation confusion matrix of the last epoch (rows true, columns predicted), label order."""
    confusion_labels: tuple[str, ...] = ()
    """The action of each row/column of ``confusion`` (empty when unknown: older rows)."""
    class_coverage: Mapping[str, float] = field(default_factory=dict)
    """Class -> share of sampled train clips where the detector found it (:mod:`a2o.detect.coverage`)."""
    source: str = ""
    """Who proposed the set: 'initial', 'llm', 'fallback:unusable', 'fallback:unreachable',
    'random', 'optuna', ... ('' when unknown)."""
    epochs: int | None = None
    """Epochs the trial reached."""
    wall_time_s: float | None = None
    """Wall time of the trial, seconds (detection included)."""
    hyperparameters: Mapping[str, float] = field(default_factory=dict)
    """Hyperparameters the searcher set besides the classes (``lr``, ``weight_decay``)."""
    trial_id: str = ""
    """Tune's trial id, when known (never shown to an LLM: ids are random)."""

    def __post_init__(self) -> None:
        if self.status not in TRIAL_STATUSES:
            raise ValueError(f"TrialRecord.status must be one of {TRIAL_STATUSES}, got {self.status!r}")
        if not isinstance(self.class_set, ClassSet):
            raise TypeError("TrialRecord.class_set must be a ClassSet (build it with ClassSet.parse)")

    @classmethod
    def from_result(cls, class_set: ClassSet, result: Mapping[str, Any] | None, *, metric: str = "val_accuracy",
                    error: bool = False, source: str = "", hyperparameters: Mapping[str, float] | None = None,
                    trial_id: str = "") -> TrialRecord:
        """A record from a trial's last reported result (None or {} when it reported nothing)."""
        result = result or {}
        value = finite_or_none(result.get(metric))
        status = "error" if error else ("ok" if value is not None else "invalid")
        classwise = result.get("classwise_accuracy")
        confusion = result.get("confusion")
        epoch = result.get("epoch", result.get("training_iteration"))
        wall = finite_or_none(result.get("time_total_s"))
        return cls(
            class_set=class_set,
            status=status,
            val_accuracy=value if status == "ok" else None,
            classwise_accuracy=_finite_map(classwise),
            confusion=_matrix(confusion),
            confusion_labels=_labels(result.get("confusion_labels")),
            class_coverage=_finite_map(result.get("class_coverage")),
            source=source,
            epochs=int(epoch) if finite_or_none(epoch) is not None else None,
            wall_time_s=wall,
            hyperparameters=dict(hyperparameters or {}),
            trial_id=trial_id,
        )

    def with_status(self, status: str) -> TrialRecord:
        return replace(self, status=status)

    @property
    def scored(self) -> bool:
        """True when the record has a usable metric (ok or early_stopped with a finite value)."""
        return self.status in ("ok", "early_stopped") and self.val_accuracy is not None

    # ---- serialisation
    def to_dict(self) -> dict[str, Any]:
        return {
            "record_version": RECORD_VERSION,
            "classes": list(self.class_set),
            "status": self.status,
            "val_accuracy": self.val_accuracy,
            "classwise_accuracy": dict(self.classwise_accuracy),
            "confusion": [list(row) for row in self.confusion] if self.confusion is not None else None,
            "confusion_labels": list(self.confusion_labels),
            "class_coverage": dict(self.class_coverage),
            "source": self.source,
            "epochs": self.epochs,
            "wall_time_s": self.wall_time_s,
            "hyperparameters": dict(self.hyperparameters),
            "trial_id": self.trial_id,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrialRecord:
        """A record from :meth:`to_dict` output, or from an older unversioned row.

        Older rows (results.json before records, searcher histories, Tune-like rows with
        ``config`` and ``metrics``) name fields differently: ``epoch``/``epochs``,
        ``proposal_source``/``source``, ``time_s``, flat ``lr``/``weight_decay``. Class texts are
        checked by :meth:`ClassSet.parse`: a record file is untrusted input.

        Raises:
            ValueError: a newer ``record_version`` than this code reads.
            ClassTextError: a class text breaks the rule.
        """
        version = data.get("record_version", 0)
        if not isinstance(version, int) or version > RECORD_VERSION:
            raise ValueError(f"trial record version {version!r} is newer than this A2O reads ({RECORD_VERSION}); upgrade a2o")
        config = data.get("config") if isinstance(data.get("config"), Mapping) else {}
        metrics = data.get("metrics") or data.get("last_result") or data
        if not isinstance(metrics, Mapping):
            metrics = data
        classes = data.get("classes") or config.get("classes") or metrics.get("classes") or []
        value = finite_or_none(metrics.get("val_accuracy"))
        status = data.get("status")
        if status not in TRIAL_STATUSES:
            status = "error" if data.get("error") else ("ok" if value is not None else "invalid")
        if status in ("ok", "early_stopped") and value is None:
            status = "invalid"
        epochs = data.get("epochs", data.get("epoch", metrics.get("epoch")))
        hyper = data.get("hyperparameters")
        if not isinstance(hyper, Mapping):
            hyper = {k: data.get(k, config.get(k)) for k in ("lr", "weight_decay")}
        return cls(
            class_set=ClassSet.parse(list(classes), where="trial record classes"),
            status=status,
            val_accuracy=value if status in ("ok", "early_stopped") else None,
            classwise_accuracy=_finite_map(metrics.get("classwise_accuracy")),
            confusion=_matrix(data.get("confusion", metrics.get("confusion"))),
            confusion_labels=_labels(data.get("confusion_labels", metrics.get("confusion_labels"))),
            class_coverage=_finite_map(data.get("class_coverage", metrics.get("class_coverage"))),
            source=str(data.get("source", data.get("proposal_source", config.get("proposal_source", ""))) or ""),
            epochs=int(epochs) if finite_or_none(epochs) is not None else None,
            wall_time_s=finite_or_none(data.get("wall_time_s", data.get("time_s"))),
            hyperparameters={k: float(v) for k, v in hyper.items() if finite_or_none(v) is not None},
            trial_id=str(data.get("trial_id") or ""),
        )


def _labels(value: Any) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)):
        return ()
    return tuple(str(label) for label in value)


def _finite_map(value: Any) -> dict[str, float]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): float(v) for k, v in value.items() if finite_or_none(v) is not None}


def _matrix(value: Any) -> tuple[tuple[int, ...], ...] | None:
    if not isinstance(value, (list, tuple)) or not value:
        return None
    try:
        rows = tuple(tuple(int(x) for x in row) for row in value)
    except (TypeError, ValueError):
        return None
    return rows if all(len(row) == len(rows) for row in rows) else None


@dataclass(frozen=True)
class TrialRow:
    """One trial as ``results.json`` lists it: its :class:`TrialRecord`, plus what only the
    service knows (its place in the search, per-epoch curve, map cache counts, error text).

    A row's JSON is the record's own (versioned) dict with these columns beside it, so anything
    that reads records reads a row. :meth:`from_dict` also reads rows written before records
    (``proposal_source``, ``time_s``, flat ``lr``) and rows of ``benchmarks.searchers``.
    """

    iteration: int
    """1-based position of the trial in the search."""
    record: TrialRecord
    val_accuracy_per_epoch: tuple[float, ...] = ()
    maps_computed: int = 0
    """(video, class) maps the trial computed; the rest of its maps were reused."""
    maps_reused: int = 0
    error: str | None = None
    """First line of the trial's error (at most 300 characters), None when it did not fail."""
    screen: dict[str, Any] | None = None
    """Screened ICRL: how the set was picked (candidates, its proxy score, the proxy's seconds; the
    record's ``wall_time_s`` includes those seconds)."""

    def to_dict(self) -> dict[str, Any]:
        row = {
            **self.record.to_dict(),
            "iteration": self.iteration,
            "val_accuracy_per_epoch": list(self.val_accuracy_per_epoch),
            "maps_computed": self.maps_computed,
            "maps_reused": self.maps_reused,
            "error": self.error,
        }
        if self.screen:
            row["screen"] = dict(self.screen)
        return row

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, position: int = 0) -> TrialRow:
        """A row of ``results.json``; ``position`` (0-based) stands in for a missing iteration.

        Raises:
            ValueError: a newer record version; ClassTextError: a class text breaks the rule.
        """
        curve = data.get("val_accuracy_per_epoch") or []
        error = data.get("error")
        return cls(
            iteration=int(data.get("iteration") or position + 1),
            record=TrialRecord.from_dict(data),
            val_accuracy_per_epoch=tuple(float(v) for v in curve if isinstance(v, (int, float))),
            maps_computed=int(data.get("maps_computed") or 0),
            maps_reused=int(data.get("maps_reused") or 0),
            error=str(error) if error else None,
            screen=dict(data["screen"]) if isinstance(data.get("screen"), dict) else None,
        )
