"""Means, standard deviations and the ranking, against numbers worked out by hand."""

from __future__ import annotations

import math

import numpy as np

from cl_bayes.report.aggregate import (
    Stat,
    group_warnings,
    last_reliability_bins,
    mean_matrix,
    mean_std,
    pooled_reliability_bins,
    summarize_groups,
)
from cl_bayes.report.groups import group_runs
from tests.report.sample_records import (
    FIRST_ROW_BINS,
    calibrated_seeds,
    make_record,
    three_seeds,
)


def test_mean_and_sample_std_by_hand():
    stat = mean_std([0.90, 0.94, 0.98])
    assert stat.n == 3
    assert math.isclose(stat.mean, 0.94) and math.isclose(stat.std, 0.04)
    # 1, 2, 6: mean 3, squared deviations 4 + 1 + 9 = 14, / (n - 1) = 7.
    assert math.isclose(mean_std([1, 2, 6]).std, math.sqrt(7))
    assert mean_std([0.5]) == Stat(0.5, None, 1)
    assert mean_std([None, float("nan"), 0.5, True]) == Stat(0.5, None, 1)
    assert mean_std([]) == Stat(None, None, 0)


def test_mean_matrix_ignores_unmeasured_cells_and_refuses_mixed_sizes():
    a = [[0.8, None], [0.6, 0.9]]
    b = [[1.0, 0.5], [0.4, 0.7]]
    expected = np.array([[0.9, 0.5], [0.5, 0.8]])
    np.testing.assert_allclose(mean_matrix([a, b]), expected)
    assert np.isnan(mean_matrix([a, a])[0, 1])
    assert mean_matrix([a, [[1.0]]]) is None


def test_groups_are_ranked_by_task_scenario_then_mean_acc_then_name():
    records = [
        make_record("a", 0.80, protocol="low"),
        make_record("b", 0.95, protocol="zeta"),
        make_record("c", 0.95, protocol="alpha"),
        make_record("d", 0.99, scenario="class"),
        make_record("e", 0.50, task="permuted_mnist", scenario="domain"),
    ]
    groups = summarize_groups(group_runs(records))
    keys = [(g.key.task, g.key.scenario, g.key.protocol) for g in groups]
    assert keys == [
        ("permuted_mnist", "domain", "p"),
        ("split_mnist", "class", "p"),
        ("split_mnist", "task", "alpha"),
        ("split_mnist", "task", "zeta"),
        ("split_mnist", "task", "low"),
    ]


def test_a_group_pools_the_last_reliability_bins_of_its_runs_and_averages_its_ece_curve():
    (group,) = summarize_groups(group_runs(calibrated_seeds()))
    assert group.reliability_runs == 2
    # Each run's last row, added bin by bin; the first rows (FIRST_ROW_BINS) are left out.
    assert group.reliability_bins == {
        "count": [2.0, 18.0, 40.0],
        "confidence": [0.5, 9.5, 36.2],
        "correct": [0.0, 11.0, 34.0],
    }
    mean, std = group.ece_after_task
    np.testing.assert_allclose(mean, [0.03, 0.15])
    np.testing.assert_allclose(std, [0.02 / math.sqrt(2), 0.10 / math.sqrt(2)])
    assert group_warnings(group) == []


def test_runs_recorded_before_calibration_give_a_group_no_bins_and_no_ece_curve():
    (group,) = summarize_groups(group_runs(three_seeds()))
    assert group.reliability_bins is None and group.reliability_runs == 0
    assert group.ece_after_task is None
    assert group_warnings(group) == []


def test_a_group_mixing_old_and_calibrated_runs_pools_the_calibrated_and_says_so():
    old = make_record("cal-seed2", seed=2, protocol="cal")
    (group,) = summarize_groups(group_runs([*calibrated_seeds(), old]))
    assert group.n == 3 and group.reliability_runs == 2
    assert group.reliability_bins["count"] == [2.0, 18.0, 40.0]
    assert group.ece_after_task is None  # like the accuracy curve: every run's, or none
    (warning,) = group_warnings(group)
    assert "only 2 of its 3 runs have reliability bins" in warning
    assert "ECE curve" in warning


def test_bins_that_cannot_be_used_are_not_pooled():
    record = calibrated_seeds()[0]
    assert last_reliability_bins(record)["count"] == [0, 10, 30]
    unusable = [
        {**record, "reliability_bins": [FIRST_ROW_BINS, None]},  # resumed from an old checkpoint
        {**record, "reliability_bins": []},
        {**record, "reliability_bins": [{"count": [1, 2], "confidence": [0.5], "correct": [1]}]},
        {
            **record,
            "reliability_bins": [{"count": [0, 0], "confidence": [0, 0], "correct": [0, 0]}],
        },
    ]
    assert [last_reliability_bins(r) for r in unusable] == [None] * len(unusable)
    # Runs binned differently cannot be added up.
    other = {**record, "reliability_bins": [{"count": [4], "confidence": [2.0], "correct": [3]}]}
    assert pooled_reliability_bins([record, other]) == (None, 2)
