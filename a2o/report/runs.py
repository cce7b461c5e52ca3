"""Finding and reading the ``results.json`` of one run, or of every run under a parent folder.

A run directory is the local storage root of ``a2o search`` (or one run of
``benchmarks.searchers``): it holds ``results.json`` (layout in :mod:`a2o.service`). A parent
folder (e.g. the benchmark's ``--out``) holds several, at any depth up to :data:`MAX_DEPTH`.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any

from a2o.errors import DataError

__all__ = ["RunRecord", "find_runs", "group_label", "class_diff", "best_so_far", "MAX_DEPTH"]

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
    """The parsed results.json."""

    @property
    def trials(self) -> list[dict[str, Any]]:
        return list(self.results.get("trials") or [])

    @property
    def group(self) -> str:
        return group_label(self.results)

    def best_val(self) -> float | None:
        values = [t["val_accuracy"] for t in self.trials if _finite(t.get("val_accuracy"))]
        return max(values) if values else None

    def test_accuracy(self) -> float | None:
        final = self.results.get("final") or {}
        test = final.get("test") or {}
        value = test.get("accuracy")
        return float(value) if _finite(value) else None


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


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
        return [RunRecord(os.path.basename(root) or root, root, _read(os.path.join(root, RESULTS_NAME)))]
    runs = []
    for directory, subdirs, files in os.walk(root):
        depth = os.path.relpath(directory, root).count(os.sep) + 1
        # Skip what a run keeps beside its results (Tune state, frames, maps, the report itself).
        subdirs[:] = sorted(d for d in subdirs if d not in {"tune", "frames", "maps", "train", "report", "best", "models"})
        if depth > MAX_DEPTH:
            subdirs[:] = []
        if RESULTS_NAME in files and directory != root:
            runs.append(RunRecord(os.path.relpath(directory, root), directory, _read(os.path.join(directory, RESULTS_NAME))))
            subdirs[:] = []
    if not runs:
        raise DataError(f"no {RESULTS_NAME} under {root}: run `a2o search` (or benchmarks.searchers) first")
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
