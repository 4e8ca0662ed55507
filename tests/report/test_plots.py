"""The figures: what they draw, checked on the artists of hand-made groups."""

from __future__ import annotations

import numpy as np

from cl_bayes.report.aggregate import summarize_groups
from cl_bayes.report.groups import group_runs
from cl_bayes.report.plots import plot_ece_after_task, plot_reliability
from tests.report.sample_records import calibrated_seeds, three_seeds


def groups_by_protocol(records):
    return {g.key.protocol: g for g in summarize_groups(group_runs(records))}


def test_reliability_diagram_draws_each_bins_accuracy_confidence_and_share():
    group = groups_by_protocol(calibrated_seeds())["cal"]
    figure = plot_reliability(group)
    top, bottom = figure.axes
    # Pooled bins (see calibrated_seeds): accuracy 0 / 2, 11 / 18, 34 / 40 over the bins'
    # left edges 0, 1/3, 2/3; their mean confidence 0.5 / 2, 9.5 / 18, 36.2 / 40.
    bars = top.patches
    np.testing.assert_allclose([b.get_height() for b in bars], [0.0, 11 / 18, 34 / 40])
    np.testing.assert_allclose([b.get_x() for b in bars], [0.0, 1 / 3, 2 / 3])
    np.testing.assert_allclose([b.get_width() for b in bars], [1 / 3] * 3)
    (confidence,) = top.collections
    heights = [segment[0][1] for segment in confidence.get_segments()]
    np.testing.assert_allclose(heights, [0.25, 9.5 / 18, 36.2 / 40])
    diagonal = [line for line in top.get_lines() if line.get_label() == "calibrated"]
    assert len(diagonal) == 1 and list(diagonal[0].get_ydata()) == [0, 1]
    shares = [b.get_height() for b in bottom.patches]
    np.testing.assert_allclose(shares, [100 * 2 / 60, 100 * 18 / 60, 100 * 40 / 60])
    # (0.5 + 1.5 + 2.2) / 60 = 7 %, over both runs.
    assert top.get_title() == "vcl · cal (n=2)\npooled ECE 7.00 %"


def test_empty_bins_draw_no_bar():
    record = calibrated_seeds()[0]  # its first bin holds no example
    figure = plot_reliability(groups_by_protocol([record])["cal"])
    top, bottom = figure.axes
    np.testing.assert_allclose([b.get_height() for b in top.patches], [0.6, 0.8])
    assert len(bottom.patches) == 2


def test_ece_plot_has_one_line_per_group_with_an_ece_curve():
    groups = list(
        groups_by_protocol(
            [*calibrated_seeds("a"), *calibrated_seeds("b"), *three_seeds()]
        ).values()
    )
    (ax,) = plot_ece_after_task(groups).axes
    lines = ax.get_lines()
    assert sorted(line.get_label() for line in lines) == ["vcl · a (n=2)", "vcl · b (n=2)"]
    for line in lines:
        np.testing.assert_allclose(line.get_xdata(), [1, 2])
        np.testing.assert_allclose(line.get_ydata(), [3.0, 15.0])  # % of the mean over seeds
