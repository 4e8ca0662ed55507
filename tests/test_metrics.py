"""Metrics on hand-written accuracy matrices and predictions, each value worked out by hand or
checked against torchmetrics."""

import math

import numpy as np
import pytest
import torch

from cl_bayes import metrics

# R[i, j]: accuracy on task j after training through task i (T = 3).
R = np.array(
    [
        [0.9, 0.2, 0.4],
        [0.6, 0.8, 0.3],
        [0.5, 0.7, 1.0],
    ]
)


def test_average_accuracy_is_the_mean_of_each_rows_seen_tasks():
    # after task 0: 0.9; after 1: (0.6 + 0.8) / 2; after 2: (0.5 + 0.7 + 1.0) / 3
    np.testing.assert_allclose(metrics.average_accuracy(R), [0.9, 0.7, 2.2 / 3])


def test_acc_is_the_mean_of_the_last_row():
    assert metrics.acc(R) == pytest.approx((0.5 + 0.7 + 1.0) / 3)


def test_bwt_divides_by_t_minus_one():
    # (R[2,0] - R[0,0]) + (R[2,1] - R[1,1]) = (0.5 - 0.9) + (0.7 - 0.8) = -0.5; / (T - 1 = 2)
    assert metrics.bwt(R) == pytest.approx(-0.25)
    # The GEM code's convention (divide by T) would give -0.5 / 3: not ours.
    assert metrics.bwt(R) != pytest.approx(-0.5 / 3)


def test_bwt_is_positive_when_later_tasks_help_earlier_ones():
    assert metrics.bwt([[0.5, 0.0], [0.75, 0.9]]) == pytest.approx(0.25)


def test_fwt_uses_the_entry_just_above_the_diagonal_minus_the_baseline():
    baseline = [0.1, 0.25, 0.5]  # b_0 is never used
    # (R[0,1] - b_1) + (R[1,2] - b_2) = (0.2 - 0.25) + (0.3 - 0.5) = -0.25; / 2
    assert metrics.fwt(R, baseline) == pytest.approx(-0.125)
    assert metrics.fwt(R, [123.0, 0.25, 0.5]) == pytest.approx(-0.125)


def test_forgetting_takes_the_best_earlier_accuracy_from_when_the_task_was_learnt():
    # f_0 = max(R[0,0], R[1,0]) - R[2,0] = 0.9 - 0.5 = 0.4
    # f_1 = max(R[1,1])          - R[2,1] = 0.8 - 0.7 = 0.1  (R[0,1] = 0.2 is before task 1)
    assert metrics.forgetting(R) == pytest.approx(0.25)


def test_forgetting_ignores_accuracy_before_the_task_was_trained():
    # Task 1 scores 0.95 by chance before it is trained (row 0): the max over l < j
    # would give f_1 = 0.95 - 0.6; the definition's max over j <= l <= T-2 gives 0.7 - 0.6.
    R2 = np.array(
        [
            [0.8, 0.95, 0.0],
            [0.9, 0.70, 0.0],
            [0.9, 0.60, 0.9],
        ]
    )
    # f_0 = max(0.8, 0.9) - 0.9 = 0; f_1 = 0.7 - 0.6 = 0.1
    assert metrics.forgetting(R2) == pytest.approx(0.05)


def test_forgetting_does_not_count_the_last_row_in_the_maximum():
    # If l ran up to T-1, an improvement in the last row would hide the earlier drop.
    R2 = np.array([[0.9, 0.0], [0.4, 0.8]])
    assert metrics.forgetting(R2) == pytest.approx(0.5)
    R3 = np.array([[0.4, 0.0], [0.9, 0.8]])  # improved: forgetting is negative
    assert metrics.forgetting(R3) == pytest.approx(-0.5)


def test_intransigence_compares_the_diagonals_with_the_joint_model():
    joint_R = np.array(
        [
            [0.95, 0.0, 0.0],
            [0.90, 0.9, 0.0],
            [0.90, 0.9, 0.9],
        ]
    )
    # I = mean(0.95 - 0.9, 0.9 - 0.8, 0.9 - 1.0) = mean(0.05, 0.1, -0.1)
    assert metrics.intransigence(R, joint_R) == pytest.approx(0.05 / 3)
    with pytest.raises(ValueError, match="shape"):
        metrics.intransigence(R, joint_R[:2, :2])


def test_a_single_task_has_no_transfer_or_forgetting():
    one = [[0.75]]
    assert metrics.acc(one) == 0.75
    np.testing.assert_array_equal(metrics.average_accuracy(one), [0.75])
    assert math.isnan(metrics.bwt(one))
    assert math.isnan(metrics.fwt(one, [0.5]))
    assert math.isnan(metrics.forgetting(one))


def test_metrics_need_a_square_matrix():
    with pytest.raises(ValueError, match="square"):
        metrics.acc([[0.5, 0.5]])


def test_perfect_retention_has_zero_bwt_and_forgetting():
    R2 = np.array([[0.9, 0.5, 0.5], [0.9, 0.8, 0.5], [0.9, 0.8, 0.7]])
    assert metrics.bwt(R2) == 0.0
    assert metrics.forgetting(R2) == 0.0
    assert metrics.acc(R2) == pytest.approx(0.8)


# Calibration and predictive uncertainty.


def _random_predictions(seed, n=500, classes=7):
    generator = torch.Generator().manual_seed(seed)
    probabilities = (3 * torch.randn(n, classes, generator=generator)).softmax(dim=1)
    labels = torch.randint(classes, (n,), generator=generator)
    return probabilities, labels


@pytest.mark.parametrize("seed", range(5))
def test_ece_matches_torchmetrics(seed):
    from torchmetrics.classification import MulticlassCalibrationError

    probabilities, labels = _random_predictions(seed)
    expected = MulticlassCalibrationError(num_classes=7, n_bins=15, norm="l1")(
        probabilities, labels
    )
    bins = metrics.reliability_bins(probabilities, labels)
    assert metrics.expected_calibration_error(bins) == pytest.approx(expected.item(), abs=1e-6)


def test_ece_bin_edges_are_left_closed_with_one_in_the_last_bin():
    # Confidences exactly on the edges 1/15 * k: 0.6 opens bin 9; 1.0 belongs to bin 14.
    probabilities = torch.tensor([[0.6, 0.4], [1.0, 0.0]])
    bins = metrics.reliability_bins(probabilities, torch.tensor([0, 0]))
    assert bins["count"][9] == 1 and bins["count"][14] == 1 and sum(bins["count"]) == 2


def test_a_perfectly_calibrated_predictor_has_ece_zero():
    # Confidence 0.75 on every example, right on exactly 3 of every 4.
    probabilities = torch.tensor([[0.75, 0.25]]).repeat(400, 1)
    labels = torch.tensor([0, 0, 0, 1]).repeat(100)
    bins = metrics.reliability_bins(probabilities, labels)
    assert metrics.expected_calibration_error(bins) == pytest.approx(0.0, abs=1e-12)


def test_ece_of_an_overconfident_predictor_by_hand():
    # Confidence 0.9, right half the time: |0.5 - 0.9| = 0.4.
    probabilities = torch.tensor([[0.9, 0.1]]).repeat(10, 1)
    labels = torch.tensor([0, 1]).repeat(5)
    bins = metrics.reliability_bins(probabilities, labels)
    assert metrics.expected_calibration_error(bins) == pytest.approx(0.4)


def test_pooled_bins_give_the_ece_of_all_examples_together():
    first, second = _random_predictions(0, n=300), _random_predictions(1, n=200)
    pooled = metrics.pool_bins(
        [metrics.reliability_bins(*first), metrics.reliability_bins(*second)]
    )
    together = metrics.reliability_bins(
        torch.cat([first[0], second[0]]), torch.cat([first[1], second[1]])
    )
    assert metrics.expected_calibration_error(pooled) == pytest.approx(
        metrics.expected_calibration_error(together)
    )
    empty = {"count": [0.0] * 15, "confidence": [0.0] * 15, "correct": [0.0] * 15}
    assert math.isnan(metrics.expected_calibration_error(empty))  # nothing binned


def test_brier_and_nll_of_a_constant_predictor_by_hand():
    # p = (0.5, 0.3, 0.2) for every example; labels 0 and 2.
    probabilities = torch.tensor([[0.5, 0.3, 0.2]]).repeat(2, 1)
    labels = torch.tensor([0, 2])
    # label 0: 0.25 + 0.09 + 0.04 = 0.38; label 2: 0.25 + 0.09 + 0.64 = 0.98.
    assert metrics.brier_score(probabilities, labels) == pytest.approx((0.38 + 0.98) / 2)
    expected_nll = -(math.log(0.5) + math.log(0.2)) / 2
    assert metrics.negative_log_likelihood(probabilities.log(), labels) == pytest.approx(
        expected_nll
    )


def test_entropy_of_uniform_and_certain_predictions():
    probabilities = torch.tensor([[0.25, 0.25, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0]])
    entropy = metrics.predictive_entropy(probabilities)
    assert entropy.tolist() == pytest.approx([math.log(4), 0.0])


def test_mutual_information_is_zero_when_all_samples_agree():
    probabilities, _ = _random_predictions(0, n=50)
    samples = probabilities.log().expand(8, -1, -1)
    assert metrics.mutual_information(samples).abs().max().item() < 1e-6


def test_mutual_information_of_two_confident_samples_that_disagree():
    # Two samples, certain of different classes: total entropy log 2, expected entropy 0.
    samples = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]]).clamp(min=1e-30).log()
    assert metrics.mutual_information(samples).item() == pytest.approx(math.log(2), abs=1e-6)


def test_auroc_by_hand_with_ties():
    # Pairs (negative, positive): 1 < 2, 1 < 3, 2 = 2 (one half), 2 < 3 -> 3.5 / 4.
    negatives, positives = torch.tensor([1.0, 2.0]), torch.tensor([2.0, 3.0])
    assert metrics.auroc(negatives, positives) == pytest.approx(3.5 / 4)
    assert metrics.auroc(torch.tensor([0.0, 1.0]), torch.tensor([5.0])) == 1.0
    assert metrics.auroc(torch.tensor([5.0]), torch.tensor([0.0, 1.0])) == 0.0
    assert math.isnan(metrics.auroc(torch.tensor([]), torch.tensor([1.0])))


@pytest.mark.parametrize("seed", range(3))
def test_auroc_matches_torchmetrics(seed):
    from torchmetrics.classification import BinaryAUROC

    generator = torch.Generator().manual_seed(seed)
    negatives = torch.randn(300, generator=generator).round(decimals=1)
    positives = (torch.randn(200, generator=generator) + 0.7).round(decimals=1)
    target = torch.cat([torch.zeros(300), torch.ones(200)]).long()
    expected = BinaryAUROC()(torch.cat([negatives, positives]), target)
    assert metrics.auroc(negatives, positives) == pytest.approx(expected.item(), abs=1e-6)
