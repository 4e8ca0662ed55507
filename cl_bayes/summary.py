"""Summary metrics of a run and the human-readable report printed at its end."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from cl_bayes import metrics


def summarize(
    R: np.ndarray,
    baseline: Sequence[float],
    fwt_applies: bool,
    joint_R: np.ndarray | None = None,
) -> dict[str, Any]:
    """Summary metrics over the tasks completed so far (``R`` is ``(k, T)``, rows 0..k-1).

    With ``k < T`` (a run that stopped early) the metrics cover tasks ``0 .. k-1`` only.
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
        names = [("ACC", "acc"), ("BWT", "bwt"), ("Forgetting", "forgetting"), ("FWT", "fwt")]
        if "intransigence" in summary:
            names.append(("Intransigence", "intransigence"))
        lines.append(
            "  ".join(f"{label}={_pct(summary.get(key)).strip()}" for label, key in names) + " (%)"
        )
    lines.append(
        f"train {sum(record['train_seconds']):.1f} s, eval {sum(record['eval_seconds']):.1f} s"
        f" | record: {record['record_path']}"
    )
    return "\n".join(lines)
