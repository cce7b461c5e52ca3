"""Evaluation metrics and run statistics, against values computed by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from a2o.train.metrics import (
    accuracy_from_confusion,
    classwise_accuracy,
    classwise_from_confusion,
    confusion_matrix,
    ensemble_probabilities,
    evaluate_predictions,
    top1_accuracy,
)
from a2o.train.stats import format_mean_std, paired_t_test, summarize

LABELS = ["a", "b", "c", "d"]
#             a  a  a  b  b  c  c  c  c  c        ("d" has no sample)
TARGETS = [0, 0, 0, 1, 1, 2, 2, 2, 2, 2]
PREDICTIONS = [0, 1, 0, 1, 2, 2, 2, 0, 2, 2]
#  correct:   1  0  1  1  0  1  1  0  1  1  -> 7 / 10


def test_top1_accuracy():
    assert top1_accuracy(PREDICTIONS, TARGETS) == pytest.approx(0.7)
    assert top1_accuracy(torch.tensor(PREDICTIONS), torch.tensor(TARGETS)) == pytest.approx(0.7)
    assert math.isnan(top1_accuracy([], []))


def test_classwise_accuracy_omits_labels_without_samples():
    result = classwise_accuracy(PREDICTIONS, TARGETS, LABELS)
    assert result == pytest.approx({"a": 2 / 3, "b": 1 / 2, "c": 4 / 5})
    assert "d" not in result


def test_confusion_matrix_rows_are_true_labels():
    expected = np.array(
        [
            [2, 1, 0, 0],  # true a: 2 -> a, 1 -> b
            [0, 1, 1, 0],  # true b: 1 -> b, 1 -> c
            [1, 0, 4, 0],  # true c: 1 -> a, 4 -> c
            [0, 0, 0, 0],  # true d: none
        ]
    )
    matrix = confusion_matrix(PREDICTIONS, TARGETS, len(LABELS))
    assert matrix.dtype == np.int64
    np.testing.assert_array_equal(matrix, expected)
    assert matrix.trace() / matrix.sum() == pytest.approx(0.7)
    # the same numbers from the matrix alone (what DDP ranks all-reduce)
    assert accuracy_from_confusion(torch.tensor(matrix)) == pytest.approx(0.7)
    assert classwise_from_confusion(matrix, LABELS) == classwise_accuracy(PREDICTIONS, TARGETS, LABELS)
    assert math.isnan(accuracy_from_confusion(np.zeros((2, 2))))


def test_metrics_reject_bad_ids():
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix([0, 4], [0, 1], 4)
    with pytest.raises(ValueError, match="predictions for"):
        top1_accuracy([0, 1], [0])
    with pytest.raises(ValueError, match="integer"):
        top1_accuracy([0.5], [0])


def test_evaluate_predictions_is_json_safe():
    metrics = evaluate_predictions(PREDICTIONS, TARGETS, LABELS)
    assert metrics.accuracy == pytest.approx(0.7) and metrics.num_samples == 10
    payload = json.loads(json.dumps(metrics.to_dict(), allow_nan=False))
    assert payload["confusion_matrix"][2] == [1, 0, 4, 0]
    assert payload["classwise_accuracy"]["b"] == 0.5


def test_ensemble_is_the_mean_of_softmaxes():
    # video 0: views [0, 0] -> (1/2, 1/2) and [ln 3, 0] -> (3/4, 1/4); mean (5/8, 3/8)
    # video 1: views [0, ln 4] -> (1/5, 4/5) and [ln 4, 0] -> (4/5, 1/5); mean (1/2, 1/2)
    logits = np.array(
        [[[0.0, 0.0], [math.log(3), 0.0]], [[0.0, math.log(4)], [math.log(4), 0.0]]]
    )  # (N=2, S*V=2, K=2)
    probabilities = ensemble_probabilities(logits)
    np.testing.assert_allclose(probabilities, [[5 / 8, 3 / 8], [1 / 2, 1 / 2]], rtol=1e-12)
    np.testing.assert_allclose(ensemble_probabilities(torch.tensor(logits)), probabilities)
    # softmax mean, not logit mean: the logit mean [10/3, 2] picks class 0, while the
    # probabilities (~1, ~0), (0.047, 0.953), (0.047, 0.953) average to class 1
    views = np.array([[[10.0, 0.0], [0.0, 3.0], [0.0, 3.0]]])
    assert views.mean(axis=1).argmax(-1)[0] == 0
    assert ensemble_probabilities(views).argmax(-1)[0] == 1
    expected = (1 / (1 + math.exp(-10)) + 2 / (1 + math.exp(3))) / 3
    assert ensemble_probabilities(views)[0, 0] == pytest.approx(expected)


def test_summarize_mean_std_and_t_interval():
    # values 0.70, 0.74, 0.72: mean 0.72; squared deviations 4e-4 + 4e-4 + 0 -> var 8e-4 / 2, std 0.02
    # t_{0.975, df=2} = 4.302652729911275 (table); half width = t * 0.02 / sqrt(3)
    summary = summarize([0.70, 0.74, 0.72])
    half_width = 4.302652729911275 * 0.02 / math.sqrt(3)
    assert summary.n == 3
    assert summary.mean == pytest.approx(0.72)
    assert summary.std == pytest.approx(0.02)
    assert summary.ci_low == pytest.approx(0.72 - half_width)
    assert summary.ci_high == pytest.approx(0.72 + half_width)
    assert format_mean_std(summary) == "0.720 ± 0.020 (n=3)"


def test_summarize_edge_cases():
    single = summarize([0.5])
    assert single.mean == 0.5 and math.isnan(single.std) and math.isnan(single.ci_low)
    assert format_mean_std(single) == "0.500 (n=1)"
    constant = summarize([0.6, 0.6, 0.6])
    assert constant.std == 0.0 and constant.ci_low == constant.ci_high == pytest.approx(0.6)
    with pytest.raises(ValueError, match="at least one"):
        summarize([])
    with pytest.raises(ValueError, match="finite"):
        summarize([0.1, float("nan")])


def test_paired_t_test_matches_hand_values_and_scipy():
    scipy_stats = pytest.importorskip("scipy.stats")
    a = [0.80, 0.75, 0.90, 0.85]
    b = [0.70, 0.72, 0.80, 0.80]
    # differences 0.10, 0.03, 0.10, 0.05: mean 0.07; squared deviations
    # 0.0009 + 0.0016 + 0.0009 + 0.0004 = 0.0038 -> std sqrt(0.0038 / 3); se = std / 2
    std = math.sqrt(0.0038 / 3)
    t_hand = 0.07 / (std / 2)  # 3.9337...
    test = paired_t_test(a, b)
    assert test.n == 4
    assert test.mean_difference == pytest.approx(0.07)
    assert test.std_difference == pytest.approx(std)
    assert test.t_statistic == pytest.approx(t_hand)
    assert t_hand == pytest.approx(3.93366, abs=1e-4)
    # t_{0.975, df=3} = 3.182446305284263 (table)
    assert test.ci_low == pytest.approx(0.07 - 3.182446305284263 * std / 2)
    assert test.ci_high == pytest.approx(0.07 + 3.182446305284263 * std / 2)
    reference = scipy_stats.ttest_rel(a, b)
    assert test.t_statistic == pytest.approx(reference.statistic)
    assert test.p_value == pytest.approx(reference.pvalue)
    assert 0.02 < test.p_value < 0.04  # between the df=3 critical values 3.182 (5%) and 4.541 (2%)
    # swapping the arms flips the sign, not the p-value
    swapped = paired_t_test(b, a)
    assert swapped.t_statistic == pytest.approx(-t_hand) and swapped.p_value == pytest.approx(test.p_value)


def test_paired_t_test_edge_cases():
    one = paired_t_test([0.8], [0.7])
    assert one.mean_difference == pytest.approx(0.1)
    assert math.isnan(one.t_statistic) and math.isnan(one.p_value) and math.isnan(one.ci_low)
    identical = paired_t_test([0.7, 0.8, 0.9], [0.7, 0.8, 0.9])
    assert identical.t_statistic == 0.0 and identical.p_value == 1.0
    assert identical.ci_low == identical.ci_high == 0.0
    # a constant difference (0.1 up to float rounding) is a certain improvement
    constant = paired_t_test([0.8, 0.9, 0.7], [0.7, 0.8, 0.6])
    assert constant.t_statistic == math.inf and constant.p_value == 0.0
    assert constant.std_difference == 0.0
    assert paired_t_test([0.7, 0.8, 0.6], [0.8, 0.9, 0.7]).t_statistic == -math.inf
    with pytest.raises(ValueError, match="pair by seed"):
        paired_t_test([0.1, 0.2], [0.1])
