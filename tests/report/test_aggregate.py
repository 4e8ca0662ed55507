"""Means, standard deviations and the ranking, against numbers worked out by hand."""

from __future__ import annotations

import math

import numpy as np

from cl_bayes.report.aggregate import Stat, mean_matrix, mean_std, summarize_groups
from cl_bayes.report.groups import group_runs
from tests.report.sample_records import make_record


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
