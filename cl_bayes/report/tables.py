"""The tables' cell texts, shared by the Markdown and the HTML leaderboards."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from cl_bayes.metrics import ECE_BINS
from cl_bayes.report.aggregate import GroupSummary, Stat
from cl_bayes.report.groups import NotAveraged
from cl_bayes.summary import SUMMARY_METRICS, SummaryMetric

SCENARIO_NAMES = {
    "task": "task-incremental",
    "domain": "domain-incremental",
    "class": "class-incremental",
}
# The output layer every method of a scenario trains: one head per task only where the task
# identity is given (trained multi-head, not a single head with masked outputs).
HEAD_TYPES = {"task": "multi-head", "domain": "single head", "class": "single head"}


def scenario_cell(scenario: str) -> str:
    """``task-IL, multi-head``: a row's scenario and the head type it trains."""
    short = f"{scenario}-IL" if scenario in SCENARIO_NAMES else scenario
    return f"{short}, {HEAD_TYPES[scenario]}" if scenario in HEAD_TYPES else short


def in_prose(metric: SummaryMetric) -> str:
    """The metric's name in a sentence: an acronym (``ACC``) as it is, a word in lower case."""
    return metric.label if metric.label.isupper() else metric.label.lower()


def enumeration(names: Sequence[str]) -> str:
    """``a, b and c``."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


ACCURACY_METRICS = [m for m in SUMMARY_METRICS if m.percent and not m.calibration]
LEGEND = (
    "A row is a group: the completed runs of one task, scenario, method, protocol and "
    "configuration (where one protocol was run with different settings, its fingerprint is "
    "shown, with the settings that differ: (config …: key=value)). Mean ± sample standard "
    "deviation over the runs of the group, one per seed (the newest where a seed was run "
    "again); n: number of runs; – in place of the std where a group has a single run. "
    f"{enumeration([in_prose(m) for m in ACCURACY_METRICS])} in % (formulas in "
    "cl_bayes/metrics.py); n/a: not applicable. Failed, interrupted, running and superseded "
    "runs are listed apart and never averaged in. A table ranks the groups of one task, "
    "scenario and benchmark (task data, network size, training schedule and optimiser), "
    "named after the protocol most of its groups ran. Train time / run: on the CPU unless "
    "a GPU is named after it."
)
# Added to the legend where a table shows calibration columns (cl_bayes/evaluation.py measures
# them; records written before then have none, and their legend stays as it was).
CALIBRATION_LEGEND = (
    f"ECE in % (top label, {ECE_BINS} equal-width confidence bins, L1; Guo et al. 2017), NLL "
    "in nats and Brier score (0 to 2) are those of the predictive on the seen tasks' test "
    "data after the last task, mean over the tasks; Unseen AUROC: how well the predictive "
    "entropy ranks the test data of the next, not yet trained task above the seen tasks' "
    "(0.5 = chance), mean over the tasks; (MI): the same with the mutual information, for "
    "the methods that sample (VCL, MC dropout)."
)


@dataclass(frozen=True)
class Table:
    """Header, rows of cell texts, and which columns hold numbers (right-aligned)."""

    header: list[str]
    rows: list[list[str]]
    numeric: list[bool]


def format_stat(stat: Stat | None, metric: SummaryMetric, n_runs: int) -> str:
    """``mean ± std`` in the metric's scale; ``–`` for the std of one value; ``n/a`` if none."""
    if stat is None or stat.mean is None:
        return "n/a"
    mean = metric.shown(stat.mean)
    std = "–" if stat.std is None else metric.shown(stat.std)
    text = f"{mean} ± {std}"
    return text if stat.n == n_runs else f"{text} (n={stat.n})"


def format_duration(stat: Stat) -> str:
    """Mean ± std of a time in seconds, as seconds below two minutes, else minutes."""
    if stat.mean is None:
        return "n/a"
    unit, scale = ("s", 1.0) if stat.mean < 120 else ("min", 1 / 60)
    std = "–" if stat.std is None else f"{scale * stat.std:.1f}"
    return f"{scale * stat.mean:.1f} ± {std} {unit}"


def column_label(metric: SummaryMetric) -> str:
    """A metric's column header: its label, with ``(%)`` for a percentage."""
    return f"{metric.label} (%)" if metric.percent else metric.label


def shown_metrics(groups: Sequence[GroupSummary]) -> list[SummaryMetric]:
    """The always-shown metrics, then every other one that some group has a value of."""
    known = {m.key for m in SUMMARY_METRICS}
    present = {k for g in groups for k, stat in g.stats.items() if stat.n > 0}
    extra = sorted(present - known)
    return [m for m in SUMMARY_METRICS if m.always_shown or m.key in present] + [
        SummaryMetric(key, key, percent=False, fmt=".4g") for key in extra
    ]


def legend(groups: Sequence[GroupSummary]) -> str:
    """The legend of the tables of ``groups``: :data:`LEGEND`, and what calibration means.

    The calibration sentence is added only where some table shows a calibration column.
    """
    if any(m.calibration for m in shown_metrics(groups)):
        return f"{LEGEND} {CALIBRATION_LEGEND}"
    return LEGEND


def accelerator_note(group: GroupSummary) -> str:
    """`` (NVIDIA H200)`` where the group's runs trained on an accelerator, else ``""``.

    Where only some did, how many: `` (2 of 3 on NVIDIA H200)``.
    """
    if not group.accelerators:
        return ""
    parts = [
        name if count == group.n else f"{count} of {group.n} on {name}"
        for name, count in group.accelerators.items()
    ]
    return f" ({', '.join(parts)})"


def leaderboard_table(groups: Sequence[GroupSummary]) -> Table:
    """One row per group, in the given (ranked) order."""
    metrics = shown_metrics(groups)
    header = [
        "#",
        "Method",
        "Scenario",
        "Protocol",
        "n",
        *(column_label(m) for m in metrics),
        "Train time / run",
    ]
    rows = [
        [
            str(rank),
            g.key.method,
            scenario_cell(g.key.scenario),
            g.protocol_label,
            str(g.n),
            *(format_stat(g.stats.get(m.key), m, g.n) for m in metrics),
            format_duration(g.train_seconds) + accelerator_note(g),
        ]
        for rank, g in enumerate(groups, start=1)
    ]
    numeric = [True, False, False, False, True, *(True for _ in metrics), True]
    return Table(header, rows, numeric)


# The columns of the "after each task" table: header, the record's curve name
# (``<name>_after_task``), the factor and format of the numbers shown.
CURVE_COLUMNS = (
    ("ECE (%) after each task", "ece", 100.0, ".2f"),
    ("Mean predictive entropy (nats) after each task", "entropy", 1.0, ".3f"),
    ("Mutual information (nats) after each task", "mutual_information", 1.0, ".3f"),
)
CURVES_LEGEND = (
    "After each task: after training task 1, 2, …, T, the measure on each seen task's test "
    "data, mean over the seen tasks, then over the runs of the group that measured it "
    "((n=…) where not all did)."
)


def curves_table(groups: Sequence[GroupSummary]) -> Table | None:
    """The calibration and uncertainty of each group after each task, in the given order.

    One row per group that has some curve; a column per measure that some group has.
    ``None`` where no group has any (records written before they were measured).
    """
    columns = [c for c in CURVE_COLUMNS if any(c[1] in g.after_task_means for g in groups)]
    shown = [g for g in groups if any(c[1] in g.after_task_means for c in columns)]
    if not shown:
        return None

    def cell(group: GroupSummary, name: str, scale: float, fmt: str) -> str:
        if name not in group.after_task_means:
            return "n/a"
        curve, n = group.after_task_means[name]
        text = " · ".join(f"{scale * v:{fmt}}" for v in curve)
        return text if n == group.n else f"{text} (n={n})"

    rows = [
        [
            g.key.method,
            scenario_cell(g.key.scenario),
            g.protocol_label,
            str(g.n),
            *(cell(g, *c[1:]) for c in columns),
        ]
        for g in shown
    ]
    header = ["Method", "Scenario", "Protocol", "n", *(c[0] for c in columns)]
    return Table(header, rows, [False, False, False, True, *(False for _ in columns)])


def not_averaged_table(runs: Sequence[NotAveraged]) -> Table:
    """Runs not averaged in: id, status, tasks completed, protocol, reason."""
    rows = []
    for run in runs:
        r = run.record
        done = f"{r.get('tasks_completed', '?')}/{r.get('n_tasks', '?')}"
        reason = run.reason if len(run.reason) <= 160 else run.reason[:159] + "…"
        rows.append([str(r["run_id"]), run.status, done, str(r.get("protocol")), reason])
    header = ["Run", "Status", "Tasks completed", "Protocol", "Reason"]
    return Table(header, rows, [False, False, True, False, False])


def section_title(task: str, scenario: str, benchmark: str) -> str:
    """``split_mnist · task-incremental (multi-head) · vcl_split_mnist``.

    The task sequence, the scenario with its head type, and the benchmark's name
    (:func:`cl_bayes.report.aggregate.benchmark_name`).
    """
    title = f"{task} · {SCENARIO_NAMES.get(scenario, scenario)}"
    if scenario in HEAD_TYPES:
        title = f"{title} ({HEAD_TYPES[scenario]})"
    return f"{title} · {benchmark}"
