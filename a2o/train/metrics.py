"""Classification metrics of one evaluation: accuracy, class-wise accuracy, confusion matrix,
and multi-clip x multi-view ensembling.

Inputs are array-likes (numpy arrays, lists, or CPU/GPU torch tensors: converted with
``.detach().cpu()``). Predictions and targets are integer label ids in ``[0, num_labels)``.

Class-wise accuracy convention: a label with no sample among the targets has no accuracy and is
**omitted** from the returned dict (never NaN), so the dict stays JSON-safe for Tune results and
LLM prompts. Its row of the confusion matrix is all zeros.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "ClassificationMetrics",
    "top1_accuracy",
    "classwise_accuracy",
    "confusion_matrix",
    "accuracy_from_confusion",
    "classwise_from_confusion",
    "ensemble_probabilities",
    "evaluate_predictions",
]


def _as_numpy(values: Any) -> np.ndarray:
    if hasattr(values, "detach"):  # torch.Tensor, without importing torch here
        values = values.detach().cpu()
        if values.is_floating_point():
            values = values.float()  # bfloat16 has no numpy dtype
        return values.numpy()
    return np.asarray(values)


def _label_ids(values: Any, name: str, num_labels: int | None = None) -> np.ndarray:
    ids = _as_numpy(values)
    if ids.ndim != 1:
        raise ValueError(f"{name} must be 1-D label ids, got shape {ids.shape}")
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"{name} must be integer label ids, got dtype {ids.dtype}")
    ids = ids.astype(np.int64)
    if num_labels is not None and ids.size and (ids.min() < 0 or ids.max() >= num_labels):
        raise ValueError(f"{name} holds ids outside [0, {num_labels}): min {ids.min()}, max {ids.max()}")
    return ids


def _pair(predictions: Any, targets: Any, num_labels: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    predicted = _label_ids(predictions, "predictions", num_labels)
    true = _label_ids(targets, "targets", num_labels)
    if predicted.shape != true.shape:
        raise ValueError(f"{predicted.size} predictions for {true.size} targets")
    return predicted, true


def top1_accuracy(predictions: Any, targets: Any) -> float:
    """Share of correct predictions, (N,) ids vs (N,) ids; NaN when N = 0."""
    predicted, true = _pair(predictions, targets)
    if true.size == 0:
        return float("nan")
    return float(np.mean(predicted == true))


def classwise_accuracy(predictions: Any, targets: Any, labels: Sequence[str]) -> dict[str, float]:
    """``{label: accuracy over the samples of that label}``; labels absent from targets are omitted."""
    predicted, true = _pair(predictions, targets, len(labels))
    result: dict[str, float] = {}
    for label_id, label in enumerate(labels):
        of_label = true == label_id
        if of_label.any():
            result[str(label)] = float(np.mean(predicted[of_label] == label_id))
    return result


def confusion_matrix(predictions: Any, targets: Any, num_labels: int) -> np.ndarray:
    """(num_labels, num_labels) int64 counts; rows = true label, columns = predicted label."""
    predicted, true = _pair(predictions, targets, num_labels)
    matrix = np.zeros((num_labels, num_labels), dtype=np.int64)
    np.add.at(matrix, (true, predicted), 1)
    return matrix


def accuracy_from_confusion(confusion: Any) -> float:
    """Top-1 accuracy of a (K, K) confusion matrix (e.g. summed over DDP ranks); NaN when empty."""
    matrix = _as_numpy(confusion)
    total = matrix.sum()
    return float(np.trace(matrix) / total) if total else float("nan")


def classwise_from_confusion(confusion: Any, labels: Sequence[str]) -> dict[str, float]:
    """``{label: accuracy}`` from a (K, K) confusion matrix, rows = true; empty rows are omitted.

    Same result as :func:`classwise_accuracy` on the predictions the matrix counts; lets DDP ranks
    all-reduce one matrix instead of gathering predictions.
    """
    matrix = _as_numpy(confusion)
    if matrix.shape != (len(labels), len(labels)):
        raise ValueError(f"confusion matrix of shape {matrix.shape} for {len(labels)} labels")
    support = matrix.sum(axis=1)
    return {
        str(label): float(matrix[label_id, label_id] / support[label_id])
        for label_id, label in enumerate(labels)
        if support[label_id] > 0
    }


def ensemble_probabilities(clip_logits: Any) -> np.ndarray:
    """(N, S*V, K) logits of every clip x view of N videos -> (N, K) mean softmax probabilities.

    The V-JEPA2 evaluation protocol: softmax each clip/view, average per video (argmax for the
    prediction). A (N, K) input is treated as one view per video.
    """
    logits = _as_numpy(clip_logits).astype(np.float64)
    if logits.ndim == 2:
        logits = logits[:, None, :]
    if logits.ndim != 3:
        raise ValueError(f"clip_logits must be (N, S*V, K), got shape {logits.shape}")
    shifted = logits - logits.max(axis=-1, keepdims=True)  # stable softmax
    probabilities = np.exp(shifted)
    probabilities /= probabilities.sum(axis=-1, keepdims=True)  # (N, S*V, K)
    return probabilities.mean(axis=1)  # (N, K)


@dataclass(frozen=True)
class ClassificationMetrics:
    """Everything one evaluation reports."""

    accuracy: float
    """Top-1 overall accuracy in [0, 1] (NaN for an empty set)."""
    classwise: dict[str, float]
    """Label -> accuracy; labels without samples are omitted."""
    confusion: np.ndarray
    """(K, K) counts, rows = true label, columns = predicted."""
    num_samples: int
    """Evaluated videos."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (confusion matrix as nested lists)."""
        return {
            "accuracy": self.accuracy,
            "classwise_accuracy": dict(self.classwise),
            "confusion_matrix": self.confusion.tolist(),
            "num_samples": self.num_samples,
        }


def evaluate_predictions(predictions: Any, targets: Any, labels: Sequence[str]) -> ClassificationMetrics:
    """Accuracy, class-wise accuracy and confusion matrix of (N,) predicted vs (N,) true ids."""
    predicted, true = _pair(predictions, targets, len(labels))
    return ClassificationMetrics(
        accuracy=top1_accuracy(predicted, true),
        classwise=classwise_accuracy(predicted, true, labels),
        confusion=confusion_matrix(predicted, true, len(labels)),
        num_samples=int(true.size),
    )
