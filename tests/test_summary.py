"""The run report's summary line, read from the one list of summary metrics."""

from __future__ import annotations

import numpy as np
import pytest

from cl_bayes.summary import (
    SUMMARY_METRICS,
    SummaryMetric,
    format_report,
    metrics_line,
    summarize,
)


def test_the_summary_line_shows_each_metric_in_percent_and_na_where_undefined():
    summary = {"acc": 0.94, "bwt": -0.0205, "forgetting": 0.03, "fwt": None, "tasks": 2}
    assert metrics_line(summary) == "ACC=94.00  BWT=-2.05  Forgetting=3.00  FWT=n/a (%)"
    # Intransigence needs a joint reference run: shown only where the run has it.
    with_joint = {**summary, "fwt": float("nan"), "intransigence": 0.0123}
    assert metrics_line(with_joint) == (
        "ACC=94.00  BWT=-2.05  Forgetting=3.00  FWT=n/a  Intransigence=1.23 (%)"
    )


def test_the_run_report_ends_with_the_matrix_the_metrics_and_the_times():
    record = {
        "task": "split_mnist",
        "method": "vcl",
        "scenario": "task",
        "seed": 0,
        "status": "completed",
        "accuracy_matrix": [[0.99, None], [0.98, 0.9]],
        "tasks_completed": 2,
        "summary": {"acc": 0.94, "bwt": -0.01, "forgetting": 0.01, "fwt": None},
        "train_seconds": [1.0, 2.5],
        "eval_seconds": [0.25, 0.25],
        "record_path": "results/runs/r.json",
    }
    assert format_report(record).splitlines()[-4:] == [
        "after T1   99.00     n/a",
        "after T2   98.00   90.00",
        "ACC=94.00  BWT=-1.00  Forgetting=1.00  FWT=n/a (%)",
        "train 3.5 s, eval 0.5 s | record: results/runs/r.json",
    ]


def test_a_metric_is_shown_in_its_own_scale_and_format():
    assert SummaryMetric("acc", "ACC").shown(0.9876) == "98.76"
    assert SummaryMetric("nll", "NLL", percent=False, fmt=".3f").shown(0.12345) == "0.123"
    assert len({m.key for m in SUMMARY_METRICS}) == len(SUMMARY_METRICS)


def test_calibration_is_summarised_by_the_seen_tasks_of_each_row():
    nan = float("nan")
    R = np.array([[0.9, 0.5, 0.5], [0.8, 0.9, 0.5], [0.7, 0.8, 0.9]])
    # Domain-incremental layout: unseen tasks measured too, but not in the row means.
    ece = [[0.1, 0.9, 0.9], [0.2, 0.4, 0.9], [0.3, 0.3, 0.6]]
    uncertainty = {"ece": ece, "nll": [[nan] * 3] * 3}  # nll never measured: left out
    unseen = {"entropy": [0.6, 0.8], "mutual_information": [nan, nan]}
    summary = summarize(R, [0.1] * 3, True, None, uncertainty, unseen)
    assert summary["ece_after_task"] == pytest.approx([0.1, 0.3, 0.4])
    assert summary["ece"] == pytest.approx(0.4)
    assert "nll" not in summary and "nll_after_task" not in summary
    assert summary["unseen_auroc"] == pytest.approx(0.7)
    assert "unseen_auroc_mi" not in summary
    # A run stopped after two tasks: its last row is row 1, its detection after task 1 only.
    partial = summarize(R[:2], [0.1] * 3, True, None, uncertainty, unseen)
    assert partial["ece"] == pytest.approx(0.3) and partial["unseen_auroc"] == pytest.approx(0.6)


def test_the_run_report_shows_calibration():
    line = metrics_line({"acc": 0.9, "ece": 0.0512, "nll": 0.25, "unseen_auroc": 0.75})
    assert "ECE=5.12" in line and "NLL=0.250" in line and "Unseen AUROC=0.750" in line
    # Shown only where measured: no Brier, no MI-based detection for this run.
    assert "Brier" not in line and "MI" not in line
