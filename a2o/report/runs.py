"""Finding and reading the ``results.json`` of one run, or of every run under a parent folder.

A run directory is the local storage root of ``a2o search`` (or one run of
``benchmarks.searchers``): it holds ``results.json`` (layout in :mod:`a2o.service`). A parent
folder (e.g. the benchmark's ``--out``) holds several, at any depth up to :data:`MAX_DEPTH`.
Trial rows are read once, here, as :class:`a2o.service.TrialRow` (a ``TrialRecord`` plus the
service's columns), which also reads the unversioned rows of older runs.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from a2o.errors import A2OError, DataError
from a2o.records import TrialRow

__all__ = [
    "RunRecord",
    "Confusion",
    "find_runs",
    "group_label",
    "class_diff",
    "best_so_far",
    "MeanBand",
    "mean_band",
    "best_trial_confusion",
    "final_confusions",
    "MAX_DEPTH",
]

MAX_DEPTH = 4
RESULTS_NAME = "results.json"


@dataclass(frozen=True)
class RunRecord:
    """One run's results, as read from its ``results.json``."""

    name: str
    """Path of the run directory relative to the report root (its folder name for a single run)."""
    path: str
    """Absolute path of the run directory."""
    results: dict[str, Any]
    """The parsed results.json (run-level fields: config, final, searcher_stats, ...)."""
    trials: tuple[TrialRow, ...] = ()
    """Its readable trial rows, in search order."""
    best_trial: TrialRow | None = None
    """The row the search chose (results.json ``best_trial``), None when every trial failed."""
    notes: tuple[str, ...] = ()
    """Rows that could not be read (a class text breaking the rule, a newer record version), and why."""
    world_tag: str = ""
    """`` (world)`` when the report holds runs of several datasets (set by :func:`find_runs`), so
    that runs on different worlds never average into one curve."""

    @classmethod
    def read(cls, name: str, directory: str) -> RunRecord:
        """The run in ``directory``; raises DataError when its results.json is not one.

        results.json is untrusted input: a row that :meth:`TrialRow.from_dict` refuses is left out
        of the report, and :attr:`notes` says which and why (its text is escaped where shown).
        """
        results = _read(os.path.join(directory, RESULTS_NAME))
        trials, notes = [], []
        for position, row in enumerate(results["trials"]):
            trial = _row(row, position, notes, f"trial row {position + 1}")
            if trial is not None:
                trials.append(trial)
        best = results.get("best_trial")
        best_trial = _row(best, 0, notes, "best_trial") if isinstance(best, dict) and best else None
        return cls(name, directory, results, tuple(trials), best_trial, tuple(notes))

    @property
    def group(self) -> str:
        return group_label(self.results) + self.world_tag

    @property
    def world(self) -> str:
        """The dataset the run searched on (the A2O-Synth world, else the data root)."""
        data = ((self.results.get("config") or {}).get("data") or {})
        return str((self.results.get("benchmark") or {}).get("world") or data.get("synth_preset")
                   or data.get("root") or "")

    def best_classes(self) -> list[str]:
        """The winning set: what the final model trained on, else the best trial's ([] when none)."""
        final = self.results.get("final") or {}
        if final.get("classes"):
            return [str(c) for c in final["classes"]]
        return list(self.best_trial.record.class_set) if self.best_trial is not None else []

    def best_val(self) -> float | None:
        values = [t.record.val_accuracy for t in self.trials if t.record.scored]
        return max(values) if values else None

    def test_accuracy(self) -> float | None:
        final = self.results.get("final") or {}
        test = final.get("test") or {}
        value = test.get("accuracy")
        return float(value) if _finite(value) else None


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _row(data: Any, position: int, notes: list[str], where: str) -> TrialRow | None:
    try:
        if not isinstance(data, dict):
            raise TypeError(f"expected an object, got {type(data).__name__}")
        return TrialRow.from_dict(data, position=position)
    except (A2OError, ValueError, TypeError, AttributeError) as exc:
        notes.append(f"{where} skipped: {exc}")
        return None


def group_label(results: dict[str, Any]) -> str:
    """``searcher`` or ``searcher+asha``: runs with the same label are seeds of one method."""
    searcher = str(results.get("searcher") or "?")
    scheduler = str(results.get("scheduler") or "fifo")
    label = searcher if scheduler == "fifo" else f"{searcher}+{scheduler}"
    llm = (results.get("benchmark") or {}).get("llm")
    return f"{label} [{llm}]" if llm and llm != "local" else label


def _read(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path} as JSON ({exc}): is it a results.json of `a2o search`?") from None
    if not isinstance(data, dict) or not isinstance(data.get("trials"), list):
        raise DataError(f"{path} has no 'trials' list: it is not a results.json of `a2o search`")
    return data


def find_runs(root: str) -> list[RunRecord]:
    """Every run under ``root``: ``root`` itself when it holds results.json, else its sub-folders.

    Raises:
        DataError: ``root`` is not a folder, or no results.json was found under it.
    """
    root = os.path.abspath(root)
    if not os.path.isdir(root):
        raise DataError(f"{root} is not a directory: pass a run directory (with results.json) or a parent of runs")
    if os.path.isfile(os.path.join(root, RESULTS_NAME)):
        return [RunRecord.read(os.path.basename(root) or root, root)]
    runs = []
    for directory, subdirs, files in os.walk(root):
        depth = os.path.relpath(directory, root).count(os.sep) + 1
        # Skip what a run keeps beside its results (Tune state, frames, maps, the report itself).
        subdirs[:] = sorted(d for d in subdirs if d not in {"tune", "frames", "maps", "train", "report", "best", "models"})
        if depth > MAX_DEPTH:
            subdirs[:] = []
        if RESULTS_NAME in files and directory != root:
            runs.append(RunRecord.read(os.path.relpath(directory, root), directory))
            subdirs[:] = []
    if not runs:
        raise DataError(f"no {RESULTS_NAME} under {root}: run `a2o search` (or benchmarks.searchers) first")
    if len({run.world for run in runs}) > 1:  # e.g. the OOD-history source run beside the comparison
        runs = [dataclasses.replace(run, world_tag=f" ({run.world})") for run in runs]
    return runs


def class_diff(previous: list[str] | None, current: list[str]) -> tuple[list[str], list[str]]:
    """(added, removed) classes of ``current`` relative to ``previous`` (everything added at first)."""
    if previous is None:
        return list(current), []
    before, after = set(previous), set(current)
    return [c for c in current if c not in before], [c for c in previous if c not in after]


def best_so_far(values: list[float | None]) -> list[float | None]:
    """Running maximum of the finite values (None until the first finite one)."""
    out, best = [], None
    for value in values:
        if _finite(value) and (best is None or value > best):
            best = float(value)
        out.append(best)
    return out


@dataclass(frozen=True)
class MeanBand:
    """Per trial index (0-based): the mean of several runs' curves and a confidence interval of it."""

    mean: tuple[float, ...]
    """Mean over the runs with a value at that index."""
    low: tuple[float, ...]
    """Lower bound of the interval; NaN where fewer than two runs have a value."""
    high: tuple[float, ...]
    """Upper bound of the interval; NaN where fewer than two runs have a value."""
    count: tuple[int, ...]
    """How many runs have a value at that index (the n of the interval)."""
    confidence: float
    """Confidence level of the interval (0.95 = 95 %)."""


def mean_band(curves: Sequence[Sequence[float | None]], confidence: float = 0.95) -> MeanBand:
    """Mean of ``curves`` at each index with the Student-t confidence interval of that mean.

    At index i: mean ± t_{(1+confidence)/2, n-1} · sd / √n over the n curves that reached index i
    and have a finite value there (sd with ddof = 1, :func:`a2o.train.stats.summarize`). Curves may
    differ in length: a shorter run simply stops counting, so n can fall along the curve. The
    result is as long as the longest curve, cut after its last index with any value. Where n = 1
    the mean is that run's value and the bounds are NaN (one run says nothing about spread); where
    every value is equal the interval collapses to the mean. The bounds are not clipped to 0–1.

    Why a t-interval of the mean and not min–max: with 3–5 seeds the min–max band grows with the
    number of seeds and says nothing about how well the mean is known; the t-interval does.
    """
    from a2o.train.stats import summarize

    length = max((len(curve) for curve in curves), default=0)
    rows: list[tuple[float, float, float, int]] = []  # (mean, low, high, n) per index
    for index in range(length):
        values = [float(c[index]) for c in curves if index < len(c) and _finite(c[index])]
        if values:
            stats = summarize(values, confidence)
            rows.append((stats.mean, stats.ci_low, stats.ci_high, stats.n))
        else:
            rows.append((math.nan, math.nan, math.nan, 0))
    while rows and rows[-1][3] == 0:
        rows.pop()
    means, lows, highs, counts = (tuple(column) for column in zip(*rows, strict=True)) if rows else ((),) * 4
    return MeanBand(means, lows, highs, counts, confidence)


# ---------------------------------------------------------------------------------------------
# Confusion matrices: where a run already keeps them (nothing is recomputed).


@dataclass(frozen=True)
class Confusion:
    """One evaluation's confusion matrix: rows = true action, columns = predicted, in ``labels`` order."""

    matrix: list[list[int]]
    labels: list[str]
    split: str
    """"val" or "test"."""
    source: str
    """Where it was read from (shown in the report)."""

    @property
    def clips(self) -> int:
        return int(sum(sum(row) for row in self.matrix))

    @property
    def accuracy(self) -> float | None:
        total = self.clips
        return sum(self.matrix[i][i] for i in range(len(self.matrix))) / total if total else None


def _matrix(value: Any, size: int | None = None) -> list[list[int]] | None:
    """``value`` as a square list of lists of non-negative ints (of ``size`` when given), else None."""
    if not isinstance(value, list) or not value or not all(isinstance(row, list) for row in value):
        return None
    if any(len(row) != len(value) for row in value) or (size is not None and len(value) != size):
        return None
    try:
        matrix = [[int(x) for x in row] for row in value]
    except (TypeError, ValueError):
        return None
    return matrix if all(x >= 0 for row in matrix for x in row) else None


def _agrees(confusion: Confusion, accuracy: Any) -> bool:
    """Does the matrix give the accuracy the run recorded (same evaluation), or is none recorded?"""
    if not _finite(accuracy):
        return True
    return confusion.accuracy is not None and abs(confusion.accuracy - float(accuracy)) < 1e-6


def _storage_dirs(run: RunRecord) -> list[str]:
    """Local folders that may hold the run's tune/, train/ and best/: the run folder, then storage.root."""
    dirs = [run.path]
    root = str(((run.results.get("config") or {}).get("storage") or {}).get("root") or "")
    root = root.removeprefix("file://")
    if root and "://" not in root and os.path.isabs(root) and os.path.abspath(root) != run.path:
        dirs.append(os.path.abspath(root))
    return dirs


def _run_labels(run: RunRecord) -> list[str]:
    final = run.results.get("final") or {}
    return [str(label) for label in (final.get("labels") or [])]


def _read_json(path: str) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _from_recognizer(path: str, labels: list[str], split: str) -> Confusion | None:
    """The val confusion a checkpoint's recognizer.json keeps (``extra.confusion``, last epoch)."""
    meta = _read_json(path)
    if meta is None:
        return None
    own = [str(label) for label in (meta.get("labels") or [])]
    labels = labels or own
    matrix = _matrix((meta.get("extra") or {}).get("confusion"), len(labels) if labels else None)
    if matrix is None or (own and own != labels):
        return None
    return Confusion(matrix, labels, split, path)


def best_trial_confusion(run: RunRecord) -> tuple[Confusion | None, str]:
    """The val confusion matrix of the run's best trial, and where it came from (or why there is none).

    ``results.json`` carries it (``best_trial.confusion``, the trial's last reported epoch); runs
    written before trial rows held it have the trial's last checkpoint
    (``train/<trial name>/checkpoint_*/model/recognizer.json``, ``extra.confusion``). A matrix whose
    accuracy differs from the trial's recorded val accuracy is not used.
    """
    best = run.best_trial.record if run.best_trial is not None else None
    trial_id = best.trial_id if best is not None else ""
    if not trial_id:
        return None, "the run has no best trial"
    labels = _run_labels(run)
    candidates: list[tuple[Confusion, str]] = []
    recorded = [list(row) for row in best.confusion] if best.confusion is not None else None
    matrix = _matrix(recorded, len(labels) if labels else None)
    if matrix is not None and labels:
        source = "results.json: best_trial.confusion"
        candidates.append((Confusion(matrix, labels, "val", source), source))
    for root in _storage_dirs(run):
        pattern = os.path.join(glob.escape(root), "train", f"*{glob.escape(trial_id)}*", "checkpoint_*", "model", "recognizer.json")
        for path in sorted(glob.glob(pattern), reverse=True):
            confusion = _from_recognizer(path, labels, "val")
            if confusion is not None:
                candidates.append((confusion, path))
    rejected = []
    for confusion, source in candidates:
        if _agrees(confusion, best.val_accuracy):
            return confusion, source
        rejected.append(source)
    if rejected:
        return None, (f"the confusion matrices found for trial {trial_id} ({', '.join(rejected)}) do not give its "
                      f"val accuracy {best.val_accuracy}")
    return None, (f"no confusion matrix recorded for trial {trial_id} (looked in results.json and "
                  "train/…/checkpoint_*/model/recognizer.json)")


def final_confusions(run: RunRecord) -> tuple[dict[str, Confusion], list[str]]:
    """The final model's confusion matrices, {"val": …, "test": …} (those the run has), and notes.

    test: ``results.json`` final.test.confusion_matrix (the clip × view evaluation on the test
    split); val: ``final.val_confusion_matrix`` when results.json has it, else the final model's
    ``best/model/recognizer.json`` (``extra.confusion``, its last epoch on val), else its checkpoint
    under ``train/final/``.
    """
    final = run.results.get("final") or {}
    found: dict[str, Confusion] = {}
    notes: list[str] = []
    if not final:
        return found, notes
    labels = _run_labels(run)
    test = final.get("test") or {}
    matrix = _matrix(test.get("confusion_matrix"), len(labels) if labels else None)
    if matrix is not None and labels:
        confusion = Confusion(matrix, labels, "test", "results.json: final.test.confusion_matrix")
        samples = test.get("num_samples")
        if isinstance(samples, int) and samples != confusion.clips:
            notes.append(f"the test confusion matrix counts {confusion.clips} clips, but {samples} were evaluated")
        found["test"] = confusion
    elif test:
        notes.append("results.json has no usable test confusion matrix")
    matrix = _matrix(final.get("val_confusion_matrix"), len(labels) if labels else None)
    if matrix is not None and labels:
        found["val"] = Confusion(matrix, labels, "val", "results.json: final.val_confusion_matrix")
    else:
        paths = []
        for root in _storage_dirs(run):
            paths.append(os.path.join(root, "best", "model", "recognizer.json"))
            pattern = os.path.join(glob.escape(root), "train", "final", "checkpoint_*", "model", "recognizer.json")
            paths += sorted(glob.glob(pattern), reverse=True)
        for path in paths:
            confusion = _from_recognizer(path, labels, "val")
            if confusion is not None and _agrees(confusion, final.get("val_accuracy")):
                found["val"] = confusion
                break
        else:
            notes.append("no val confusion matrix of the final model found (best/model/recognizer.json)")
    return found, notes
