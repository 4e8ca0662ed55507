"""Metrics on hand-written accuracy matrices, each value worked out by hand below."""

import math

import numpy as np
import pytest

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
