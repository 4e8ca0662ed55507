"""Summary metrics of a run and the human-readable report printed at its end.

:data:`SUMMARY_METRICS` is the one list of the summary metrics: the run report printed here,
the W&B run summary (``cl_bayes.loggers.wandb``) and the leaderboard (``cl_bayes.report``) all
read it. A new metric is one entry there, and its value computed in :func:`summarize`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from cl_bayes import metrics


@dataclass(frozen=True)
class SummaryMetric:
    """One metric of a run's ``summary``: its key there and how it is shown.

    Attributes
    ----------
    key
        Its key in the record's ``summary``, and in the W&B run summary.
    label
        Its name in the printed run report (``ACC=...``) and, with its unit, in the leaderboard's
        column header (``ACC (%)``).
    percent
        Whether the value is a fraction shown in percent (times 100); else it is shown as it is.
    fmt
        Format specification of the shown number (after the scaling to percent).
    always_shown
        Whether the run report and every leaderboard table show it, as ``n/a`` where it is
        missing; else only where a run has it (intransigence needs a joint reference run).
    calibration
        Whether it measures the predictive's calibration or uncertainty rather than accuracy
        (the leaderboard's legend explains those apart).
    """

    key: str
    label: str
    percent: bool = True
    fmt: str = ".2f"
    always_shown: bool = True
    calibration: bool = False

    @property
    def scale(self) -> float:
        """What a value is multiplied by to be shown: 100 for a percentage, else 1."""
        return 100.0 if self.percent else 1.0

    def shown(self, value: float) -> str:
        """``value`` in the metric's scale and number format, e.g. ``94.00`` for 0.94."""
        return format(self.scale * value, self.fmt)


# The summary metrics, in the order they are shown (formulas in cl_bayes/metrics.py).
SUMMARY_METRICS = (
    SummaryMetric("acc", "ACC"),
    SummaryMetric("bwt", "BWT"),
    SummaryMetric("forgetting", "Forgetting"),
    SummaryMetric("fwt", "FWT"),
    SummaryMetric("intransigence", "Intransigence", always_shown=False),
    # Calibration of the predictive over the seen tasks after the last one (mean of the last
    # row) and unseen-task detection (mean over the rows); see cl_bayes/evaluation.py. Shown
    # where a run has them (records written before they were measured do not).
    SummaryMetric("ece", "ECE", always_shown=False, calibration=True),
    SummaryMetric("nll", "NLL", False, ".3f", always_shown=False, calibration=True),
    SummaryMetric("brier", "Brier", False, ".3f", always_shown=False, calibration=True),
    SummaryMetric("unseen_auroc", "Unseen AUROC", False, ".3f", False, calibration=True),
    SummaryMetric("unseen_auroc_mi", "Unseen AUROC (MI)", False, ".3f", False, calibration=True),
)

# The per-task measures summarised as the mean of each row's seen tasks (``<name>_after_task``)
# and of the last row (``<name>``): cl_bayes.evaluation.MATRICES.
ROW_MEANS = ("nll", "brier", "ece", "entropy", "mutual_information")


def summarize(
    R: np.ndarray,
    baseline: Sequence[float],
    fwt_applies: bool,
    joint_R: np.ndarray | None = None,
    uncertainty: dict[str, Any] | None = None,
    unseen_auroc: dict[str, Sequence[float]] | None = None,
) -> dict[str, Any]:
    """Summary metrics over the tasks completed so far (``R`` is ``(k, T)``, rows 0..k-1).

    With ``k < T`` (a run that stopped early) the metrics cover tasks ``0 .. k-1`` only.
    ``uncertainty`` holds the record's ``(T, T)`` matrices of per-task calibration and
    uncertainty; each is summarised by the mean over the seen tasks of every row
    (``<name>_after_task``) and, for those in :data:`SUMMARY_METRICS`, of the last
    (``<name>``). ``unseen_auroc`` holds, per measure, the detection AUROC after each task but
    the last; their mean is ``unseen_auroc``
    (predictive entropy) and ``unseen_auroc_mi`` (mutual information, sampling methods).
    Measures never measured (``nan`` throughout) are left out.
    """
    k = R.shape[0]
    if k == 0:
        return {}
    done = R[:, :k]
    summary = {
        "acc": metrics.acc(done),
        "bwt": metrics.bwt(done),
        "forgetting": metrics.forgetting(done),
        "fwt": metrics.fwt(done, baseline[:k]) if fwt_applies else None,
        "average_accuracy": metrics.average_accuracy(done).tolist(),
        "tasks": k,
    }
    if joint_R is not None:
        summary["intransigence"] = metrics.intransigence(done, np.asarray(joint_R)[:k, :k])
    for name in ROW_MEANS:
        matrix = (uncertainty or {}).get(name)
        if matrix is None:
            continue
        rows = metrics.seen_task_means(np.asarray(matrix, dtype=float)[:k, :k])
        if not np.isnan(rows).all():
            summary[f"{name}_after_task"] = rows.tolist()
            if any(m.key == name for m in SUMMARY_METRICS):
                summary[name] = float(rows[-1])
    for key, name in (("unseen_auroc", "entropy"), ("unseen_auroc_mi", "mutual_information")):
        values = np.asarray((unseen_auroc or {}).get(name, [])[: k - 1], dtype=float)
        if len(values) and not np.isnan(values).all():
            summary[key] = float(np.nanmean(values))
    return summary


def _pct(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{100 * value:6.2f}"


def format_report(record: dict[str, Any]) -> str:
    """The accuracy matrix and summary metrics of ``record``, as text."""
    R = record["accuracy_matrix"]
    T = len(R)
    lines = [
        f"{record['task']} | method={record['method']} | scenario={record['scenario']} | "
        f"seed={record['seed']} | status={record['status']}",
        "Accuracy matrix (%): row i = after training task i, column j = tested on task j",
        "        " + "".join(f"{'T' + str(j + 1):>8}" for j in range(T)),
    ]
    for i, row in enumerate(R[: record["tasks_completed"]]):
        lines.append(f"{'after T' + str(i + 1):<8}" + "".join(f"{_pct(v):>8}" for v in row))
    summary = record["summary"]
    if summary:
        lines.append(metrics_line(summary))
    lines.append(
        f"train {sum(record['train_seconds']):.1f} s, eval {sum(record['eval_seconds']):.1f} s"
        f" | record: {record['record_path']}"
    )
    return "\n".join(lines)


def metrics_line(summary: dict[str, Any]) -> str:
    """``ACC=94.00  BWT=-2.00  ... (%)``: the summary metrics a run report shows.

    The percentages come first, followed by one ``(%)``, then any others, each in its own
    units; ``n/a`` where a metric is missing or not a number.
    """
    shown = [m for m in SUMMARY_METRICS if m.always_shown or m.key in summary]

    def text(metric: SummaryMetric) -> str:
        value = summary.get(metric.key)
        missing = value is None or (isinstance(value, float) and math.isnan(value))
        return f"{metric.label}={'n/a' if missing else metric.shown(value)}"

    percent = [text(m) for m in shown if m.percent]
    others = [text(m) for m in shown if not m.percent]
    parts = ["  ".join(percent) + " (%)"] if percent else []
    return "  ".join(parts + others)
