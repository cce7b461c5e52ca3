"""Prompt templates and the text blocks the LLM searchers put into them.

Templates are ``string.Template`` files (``$field``) under ``searchers/prompts/``; a user template
(``llm.prompt_template``) may use any subset of the fields listed in
:mod:`searchers.prompts`. Rendering is deterministic: the same history gives the same prompt, so
the replay cache and "same seed + same replies -> same suggestions" hold. Trial ids are random,
so they never appear in a prompt.
"""

from __future__ import annotations

import math
import string
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from typing import Any, Optional

from a2o.errors import ConfigError
from a2o.records import TrialRecord

__all__ = [
    "load_template",
    "render",
    "format_actions",
    "format_history",
    "format_pending",
    "format_instructions",
    "NO_HISTORY",
    "USES_INSTRUCTIONS",
]

BUILTIN = ("icrl_paper", "icrl_small", "pool_enumerate", "pool_combine")


def load_template(name: str = "icrl_paper", path: Optional[str] = None) -> str:
    """Text of a built-in template (``name``) or of a user file (``path``, wins when given)."""
    if path:
        try:
            with open(path, encoding="utf-8") as fh:
                return fh.read()
        except OSError as exc:
            raise ConfigError(f"llm.prompt_template: cannot read '{path}' ({exc.strerror})") from None
    if name not in BUILTIN:
        raise ConfigError(f"llm.prompt: unknown prompt template '{name}'; built-in ones are {list(BUILTIN)}")
    return resources.files("searchers.prompts").joinpath(f"{name}.txt").read_text(encoding="utf-8")


def render(template: str, **fields: Any) -> str:
    """Fill ``$fields``; unknown ``$names`` in a user template stay as written."""
    text = string.Template(template).safe_substitute({k: str(v) for k, v in fields.items()})
    lines = [line.rstrip() for line in text.splitlines()]
    return "\n".join(lines).strip() + "\n"


def format_actions(action_names: Sequence[str]) -> str:
    return "\n".join(f"- {name}" for name in action_names)


def _acc(value: Optional[float]) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.3f}"


def _classwise(classwise: Mapping[str, float]) -> str:
    return ", ".join(f"{label}: {_acc(acc)}" for label, acc in sorted(classwise.items()))


def confused_pairs(record: TrialRecord, top: int = 3) -> list[tuple[str, str, float]]:
    """The ``top`` most confused action pairs of a record: ``(true, predicted, share of true's clips)``.

    Off-diagonal cells of the validation confusion matrix, each as a share of its row (the true
    action's clips), largest first; ties go to the earlier label pair. Empty when the record has
    no matrix or no labels for it (older records), or when nothing was confused.
    """
    matrix, labels = record.confusion, record.confusion_labels
    if not matrix or len(labels) != len(matrix):
        return []
    cells = []
    for i, row in enumerate(matrix):
        total = sum(row)
        for j, count in enumerate(row):
            if i != j and count > 0 and total > 0:
                cells.append((-count / total, i, j))
    cells.sort()
    return [(labels[i], labels[j], -share) for share, i, j in cells[:top]]


def _confusions(pairs: Sequence[tuple[str, str, float]]) -> str:
    return ", ".join(f"{true} mistaken for {predicted} {share:.0%}" for true, predicted, share in pairs)


def _entry_lines(index: int, record: TrialRecord, epochs_per_trial: Optional[int],
                 detection_feedback: bool = False, confusion_feedback: bool = True) -> list[str]:
    lines = [f"Iteration {index}: classes = {', '.join(record.class_set) or '(none)'}"]
    if record.hyperparameters:
        lines.append("  hyperparameters: " + ", ".join(f"{k}={v:.3g}" for k, v in sorted(record.hyperparameters.items())))
    if record.status == "error":
        lines.append("  ERRORED: the trial failed; there is no accuracy for this set (treat it as untested).")
        return lines
    if record.status == "invalid":
        lines.append("  INVALID: the trial reported a non-finite accuracy; there is no usable reward.")
        return lines
    lines.append(f"  overall accuracy: {_acc(record.val_accuracy)}")
    if record.status == "early_stopped":
        of = f" of {epochs_per_trial}" if epochs_per_trial else ""
        lines.append(
            f"  STOPPED EARLY by the scheduler at epoch {record.epochs}{of}: it ranked low among "
            "trials at that epoch, and the accuracy above is from that epoch."
        )
    if record.classwise_accuracy:
        lines.append(f"  class-wise accuracy: {_classwise(record.classwise_accuracy)}")
    pairs = confused_pairs(record) if confusion_feedback else []
    if pairs:
        lines.append(f"  most confused: {_confusions(pairs)}")
    if detection_feedback and record.class_coverage:
        from a2o.detect.coverage import unseen_classes

        unseen = unseen_classes(record.class_coverage)
        if unseen:
            lines.append(f"  the detector found these in no clip (dead inputs, replace them): {', '.join(unseen)}")
    return lines


def format_history(
    history: Sequence[TrialRecord],
    *,
    injected: Sequence[TrialRecord] = (),
    injected_label: str = "another dataset",
    epochs_per_trial: Optional[int] = None,
    detection_feedback: bool = False,
    confusion_feedback: bool = True,
) -> str:
    """The iteration history block: one entry per finished trial, oldest first.

    Each entry: the classes, overall and class-wise accuracy (the paper's fields), the 3 most
    confused action pairs (``confusion_feedback``) and, with ``detection_feedback``, the classes the
    detector found in no clip.

    ``injected`` records (another dataset's search, the OOD baseline) come first, in their own
    block. Trial ids are never shown: they are random, and the prompt must be a function of the
    history alone.
    """
    blocks: list[str] = []
    if injected:
        blocks.append(
            f"From an earlier search on {injected_label} (different actions; use it as prior "
            "knowledge of which kinds of cues help, not as results for this task):"
        )
        for i, record in enumerate(injected, 1):
            blocks.extend(_entry_lines(i, record, None))
        blocks.append("")
        blocks.append("This task so far:")
    if not history:
        blocks.append("No iterations yet: propose a first set.")
        return "\n".join(blocks)
    for i, record in enumerate(history, 1):
        blocks.extend(_entry_lines(i, record, epochs_per_trial, detection_feedback, confusion_feedback))
    return "\n".join(blocks)


NO_HISTORY = (
    "History is not shown in this setting: propose the set you expect to work best from "
    "the task description alone."
)
"""The history block of the static-prompt baseline (``ICRLSearcher(show_history=False)``)."""


def format_pending(pending: Iterable[Sequence[str]]) -> str:
    """Proposals still running, so the LLM proposes something different (max_concurrent > 1)."""
    rows = [", ".join(classes) for classes in pending]
    if not rows:
        return ""
    body = "\n".join(f"- {row}" for row in rows)
    return (
        "\nAlready running (results not in yet). Propose a set different from each of these:\n"
        f"{body}\n"
    )


USES_INSTRUCTIONS = (
    "First, for each action, name the object a person holds or uses to do it: a short visible noun, "
    "never the action itself. Then choose the set from those objects.\n"
    'Reply with only a JSON object of the form {"uses": [{"action": "...", "object": "..."}, ...], '
    '"classes": ["...", "..."]}, one object class per string in "classes".'
)


def format_instructions(response_format: str) -> str:
    if response_format == "json_schema":
        return (
            'Reply with only a JSON object of the form {"classes": ["...", "..."]}, one object '
            "class per string."
        )
    return "Write one object class per line and nothing else: no bullets, numbers, headers or blank lines."
