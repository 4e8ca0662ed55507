"""Leaderboard: run records -> Markdown and HTML tables and plots.

``python -m cl_bayes.report [--results DIR] [--out DIR] [--readme PATH]`` reads every run
record ``DIR/runs/*.json`` (see ``cl_bayes.record``; ``DIR`` defaults to ``results``),
groups the completed runs by (task, scenario, method, protocol, configuration) and writes, in
``--out`` (default ``DIR``):

- ``leaderboard.md``: one table per (task, scenario), best mean ACC first, then the runs not
  averaged in (failed, interrupted, still running, or superseded by a newer run of their seed);
- ``leaderboard.html``: the same tables and, as PNG images embedded in the page, the mean
  accuracy matrix of each group, the average accuracy after each task and the forgetting of
  each group.

``--readme PATH`` also puts the tables between the lines ``<!-- leaderboard:begin -->`` and
``<!-- leaderboard:end -->`` of a Markdown file.

The configuration of a run is told by a fingerprint: the first 6 hex digits of the SHA-1 of
its record's ``config`` as sorted JSON, leaving out ``seed``, ``hydra`` and the keys that say
where things are rather than what the experiment is (``cl_bayes.record.LOCAL_KEYS``, at any depth:
``method.progress`` is ``${progress}``). Runs of one protocol with different settings (e.g.
``+experiment=vcl_split_mnist train.epochs=1``) thus form groups of their own; the Protocol
cell shows the fingerprint, and the settings in which the group differs from the others,
``vcl_split_mnist (config 3f2a1c: method.epochs=1, train.epochs=1)``, only where one (task,
scenario, method, protocol) has several (at most three settings are named, then how many
more, unless two rows would then read alike). A group averages one run per seed: of several
completed runs with the same seed, the newest (latest ``updated_at``, then greatest
``run_id``) is kept and the others are listed apart as ``superseded``, with a warning.

A table cell is ``mean ± std`` over the runs of a group, ``std`` being the sample standard
deviation (``ddof=1``). A group of a single run shows ``–`` in place of the std, which is not
defined for one value. ACC, BWT, forgetting, FWT and intransigence are in percent, as
``cl_bayes.summary`` prints them; any other number a record's ``summary`` holds gets a column
of its own, in its own units. ``n/a`` marks a metric that does not apply (FWT where a task's
outputs are untrained before it, any metric of a single-task run). A metric that only some
runs of a group have is averaged over those, and the cell says over how many: ``(n=2)``.
Train time is the sum of ``train_seconds`` over the tasks of a run, averaged over the runs.

The arithmetic (grouping and aggregation) lives in small pure functions, apart from the
rendering. The files depend only on the records and on the command line, so regenerating them
from the same records gives byte-identical files.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import html
import io
import json
import logging
import math
import os
import re
import shlex
import sys
import tempfile
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, NamedTuple, Sequence

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from cl_bayes.errors import UserError
from cl_bayes.record import ADDED_OPTIONS, config_section, experiment_config

log = logging.getLogger(__name__)

README_BEGIN = "<!-- leaderboard:begin -->"
README_END = "<!-- leaderboard:end -->"
SCENARIO_NAMES = {
    "task": "task-incremental",
    "domain": "domain-incremental",
    "class": "class-incremental",
}
# The output layer every method of a scenario trains: one head per task only where the task
# identity is given (trained multi-head, not a single head with masked outputs).
HEAD_TYPES = {"task": "multi-head", "domain": "single head", "class": "single head"}
# Summary entries that are not metrics to average.
NOT_METRICS = {"tasks", "average_accuracy"}
# How many of the settings that tell a group apart its Protocol cell names.
SETTINGS_SHOWN = 3
# A string value a label shows bare; others (and words JSON reads otherwise) go in quotes.
PLAIN_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_./:+-]*")
JSON_WORDS = frozenset({"true", "false", "null", "NaN", "Infinity", "unset"})
LEGEND = (
    "A row is a group: the completed runs of one task, scenario, method, protocol and "
    "configuration (where one protocol was run with different settings, its fingerprint is "
    "shown, with the settings that differ: (config …: key=value)). Mean ± sample standard "
    "deviation over the runs of the group, one per seed (the newest where a seed was run "
    "again); n: number of runs; – in place of the std where a group has a single run. ACC, "
    "BWT, forgetting, FWT and intransigence in % (formulas in cl_bayes/metrics.py); n/a: not "
    "applicable. Failed, interrupted, running and superseded runs are listed apart and never "
    "averaged in."
)


@dataclass(frozen=True)
class Metric:
    """How one ``summary`` entry is shown: column label, scale and number format."""

    key: str
    label: str
    scale: float = 100.0
    fmt: str = ".2f"


METRICS = (
    Metric("acc", "ACC (%)"),
    Metric("bwt", "BWT (%)"),
    Metric("forgetting", "Forgetting (%)"),
    Metric("fwt", "FWT (%)"),
    Metric("intransigence", "Intransigence (%)"),
)
# Shown in every table, as n/a where no run has them; the others only where some run has them.
ALWAYS_SHOWN = ("acc", "bwt", "forgetting", "fwt")


class GroupKey(NamedTuple):
    """What makes runs comparable: task sequence, scenario, method, protocol, configuration.

    ``config`` is the fingerprint of the record's configuration (:func:`config_fingerprint`).
    """

    task: str
    scenario: str
    method: str
    protocol: str
    config: str


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation (``ddof=1``) of ``n`` values.

    ``mean`` is ``None`` when ``n == 0``; ``std`` is ``None`` when ``n < 2``.
    """

    mean: float | None
    std: float | None
    n: int


@dataclass(frozen=True)
class GroupSummary:
    """The completed runs of one group and their aggregates.

    ``stats`` maps a ``summary`` key to its :class:`Stat` over the runs, in the record's units
    (accuracies as fractions). ``mean_matrix`` is the ``(T, T)`` mean accuracy matrix, ``nan``
    where unmeasured; ``average_accuracy`` holds the mean and std (``None`` for one run) of the
    average accuracy after each task, shape ``(T,)``. Both are ``None`` when the runs differ in
    their number of tasks. ``show_config`` is true where other groups share the key's task,
    scenario, method and protocol, so that the configuration fingerprint tells them apart;
    ``settings`` then names the settings in which this group's configuration differs from
    theirs (:func:`distinguishing_settings`).
    """

    key: GroupKey
    run_ids: tuple[str, ...]
    stats: dict[str, Stat]
    train_seconds: Stat
    mean_matrix: np.ndarray | None
    average_accuracy: tuple[np.ndarray, np.ndarray | None] | None
    show_config: bool = False
    settings: str = ""

    @property
    def n(self) -> int:
        """Number of runs."""
        return len(self.run_ids)

    @property
    def protocol_label(self) -> str:
        """The protocol, with the configuration fingerprint where it is needed."""
        if self.show_config:
            settings = f": {self.settings}" if self.settings else ""
            return f"{self.key.protocol} (config {self.key.config}{settings})"
        return self.key.protocol

    @property
    def label(self) -> str:
        """Method and protocol, as plots name the group."""
        return f"{self.key.method} · {self.protocol_label}"


@dataclass(frozen=True)
class NotAveraged:
    """A run listed apart from the tables: its record, the status shown and why."""

    record: dict[str, Any]
    status: str
    reason: str


@dataclass(frozen=True)
class Table:
    """Header, rows of cell texts, and which columns hold numbers (right-aligned)."""

    header: list[str]
    rows: list[list[str]]
    numeric: list[bool]


# ---------------------------------------------------------------------------------------------
# Reading records


def record_problem(record: Any) -> str | None:
    """What keeps ``record`` from being used, or ``None`` when it is a usable run record."""
    if not isinstance(record, dict):
        return "not a JSON object"
    needed = ["run_id", "status"]
    if record.get("status") == "completed":
        needed += ["task", "scenario", "method", "protocol", "summary", "accuracy_matrix"]
    missing = [key for key in needed if key not in record]
    if missing:
        return f"not a run record: no {', '.join(missing)}"
    if record["status"] == "completed" and not isinstance(record["summary"], dict):
        return "its summary is not a JSON object"
    return None


def read_records(runs_dir: Path) -> tuple[list[dict[str, Any]], int]:
    """The usable records among ``runs_dir/*.json`` and how many files were skipped.

    Each file that cannot be read, is not JSON or is not a run record is skipped with a
    warning naming it.
    """
    records, skipped = [], 0
    for path in sorted(runs_dir.glob("*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            problem = f"not readable as JSON ({error})"
        else:
            problem = record_problem(record)
        if problem:
            log.warning(f"warning: skipping {path}: {problem}")
            skipped += 1
        else:
            records.append(record)
    return records, skipped


# ---------------------------------------------------------------------------------------------
# Arithmetic: pure functions of the records


def is_number(value: Any) -> bool:
    """A finite int or float (not a bool, not ``None``, not NaN)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def mean_std(values: Iterable[Any]) -> Stat:
    """Mean and sample std (``ddof=1``) of the numbers among ``values`` (others are ignored)."""
    numbers = np.array([float(v) for v in values if is_number(v)])
    if len(numbers) == 0:
        return Stat(None, None, 0)
    std = float(numbers.std(ddof=1)) if len(numbers) > 1 else None
    return Stat(float(numbers.mean()), std, len(numbers))


def config_fingerprint(config: Any) -> str:
    """First 6 hex digits of the SHA-1 of :func:`experiment_config` as sorted JSON.

    ``none`` for a record without a ``config`` object.
    """
    if not isinstance(config, dict):
        return "none"
    text = json.dumps(experiment_config(config), sort_keys=True)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:6]


def flat_settings(config: Any) -> dict[tuple[str, ...], Any]:
    """The settings of a record's ``config`` as ``{key path: value}``.

    What :func:`experiment_config` keeps, with each :data:`ADDED_OPTIONS` entry that it
    leaves out, or that an older record lacks, at the value the run had (where the option's
    section exists).
    """
    flat: dict[tuple[str, ...], Any] = {}

    def walk(node: Any, path: tuple[str, ...]) -> None:
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(value, (*path, str(key)))
        else:
            flat[path] = node

    kept = experiment_config(config) if isinstance(config, dict) else {}
    for key, value in kept.items():
        walk(value, (str(key),))
    for (*parents, name), value in ADDED_OPTIONS.items():
        if config_section(kept, parents) is not None:
            flat.setdefault((*parents, name), value)
    return flat


def shown_value(value: Any) -> str:
    """A setting's value as a label shows it: plain words bare, anything else as JSON."""
    if isinstance(value, str) and PLAIN_WORD.fullmatch(value) and value not in JSON_WORDS:
        return value
    return json.dumps(value, sort_keys=True)


def distinguishing_settings(configs: Sequence[Any]) -> list[str]:
    """For each of ``configs``, ``key=value`` of the settings in which they are not all equal.

    Sorted by key, at most :data:`SETTINGS_SHOWN` of them, then ``+N more`` (all of them
    where the cut would give two configurations the same label); ``unset`` for a setting a
    configuration does not have. Plain words are shown bare, other values as JSON.
    """
    flats = [flat_settings(config) for config in configs]
    missing = object()

    def compared(flat: dict[tuple[str, ...], Any], path: tuple[str, ...]) -> str:
        value = flat.get(path, missing)
        return "" if value is missing else json.dumps(value, sort_keys=True)

    paths = sorted(set().union(*flats))
    differing = [p for p in paths if len({compared(flat, p) for flat in flats}) > 1]
    full = [
        [f"{'.'.join(p)}={'unset' if p not in flat else shown_value(flat[p])}" for p in differing]
        for flat in flats
    ]
    cut = [
        ", ".join([*parts[:SETTINGS_SHOWN], f"+{len(parts) - SETTINGS_SHOWN} more"])
        if len(parts) > SETTINGS_SHOWN
        else ", ".join(parts)
        for parts in full
    ]
    repeated = {label for label, count in Counter(cut).items() if count > 1}
    return [
        ", ".join(parts) if label in repeated else label
        for parts, label in zip(full, cut, strict=True)
    ]


def group_key(record: dict[str, Any]) -> GroupKey:
    """The group a completed record belongs to."""
    names = GroupKey._fields[:-1]
    return GroupKey(*(str(record[n]) for n in names), config_fingerprint(record.get("config")))


def group_name(key: GroupKey) -> str:
    """``task/scenario/method/protocol/config``, as warnings name a group."""
    return "/".join(key)


def split_by_status(
    records: Sequence[dict[str, Any]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Completed runs and the others (failed, interrupted, running), each sorted by run id."""
    by_id = sorted(records, key=lambda r: str(r["run_id"]))
    completed = [r for r in by_id if r["status"] == "completed"]
    return completed, [r for r in by_id if r["status"] != "completed"]


def group_runs(records: Sequence[dict[str, Any]]) -> dict[GroupKey, list[dict[str, Any]]]:
    """Completed ``records`` by :class:`GroupKey`, in the order the records come."""
    groups: dict[GroupKey, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        groups[group_key(record)].append(record)
    return dict(groups)


def newest(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The run updated last: greatest ``updated_at``, then greatest ``run_id``.

    ``updated_at`` is ISO 8601 in UTC (``cl_bayes.record.utc_now``), so its text sorts by time.
    """
    return max(runs, key=lambda r: (str(r.get("updated_at") or ""), str(r["run_id"])))


def drop_repeated_seeds(
    groups: dict[GroupKey, list[dict[str, Any]]],
) -> tuple[dict[GroupKey, list[dict[str, Any]]], list[NotAveraged]]:
    """Per group, one run per seed: the :func:`newest`; the others are ``superseded``.

    Runs without a seed are all kept. Returns the groups (runs in their order) and the
    superseded runs, each with a reason naming the run kept in its place.
    """
    kept_groups, superseded = {}, []
    for key, runs in groups.items():
        by_seed: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for run in runs:
            if run.get("seed") is not None:
                by_seed[json.dumps(run["seed"])].append(run)
        dropped = set()
        for seed, same_seed in by_seed.items():
            kept = newest(same_seed)
            for run in same_seed:
                if run is not kept:
                    dropped.add(id(run))
                    reason = f"seed {seed} run again: the newer run {kept['run_id']} is averaged"
                    superseded.append(NotAveraged(run, "superseded", reason))
        kept_groups[key] = [run for run in runs if id(run) not in dropped]
    return kept_groups, superseded


def mean_matrix(matrices: Sequence[Any]) -> np.ndarray | None:
    """Element-wise mean of accuracy matrices over the runs, ignoring unmeasured (``null``) cells.

    Returns the ``(T, T)`` mean, ``nan`` where no run measured the cell, or ``None`` when the
    matrices are not all square of one size.
    """
    arrays = [np.array(m, dtype=float) for m in matrices]
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1 or len(arrays[0].shape) != 2 or len(set(arrays[0].shape)) != 1:
        return None
    stack = np.stack(arrays)
    measured = ~np.isnan(stack)
    counts = measured.sum(axis=0)
    sums = np.where(measured, stack, 0.0).sum(axis=0)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def mean_curve(curves: Sequence[Any]) -> tuple[np.ndarray, np.ndarray | None] | None:
    """Mean and sample std (``None`` for one run) over runs of a per-task curve, shape ``(T,)``.

    ``None`` when a curve is missing or the curves differ in length.
    """
    if any(not isinstance(c, list) or not all(is_number(v) for v in c) for c in curves):
        return None
    if len({len(c) for c in curves}) != 1 or not curves[0]:
        return None
    stack = np.array(curves, dtype=float)
    std = stack.std(axis=0, ddof=1) if len(stack) > 1 else None
    return stack.mean(axis=0), std


def aggregate(
    key: GroupKey, runs: Sequence[dict[str, Any]], show_config: bool = False, settings: str = ""
) -> GroupSummary:
    """Summary of the completed ``runs`` of group ``key`` (see :class:`GroupSummary`)."""
    runs = sorted(runs, key=lambda r: str(r["run_id"]))
    summaries = [r["summary"] for r in runs]
    keys = {m.key for m in METRICS} | {
        k for s in summaries for k, v in s.items() if is_number(v) and k not in NOT_METRICS
    }
    return GroupSummary(
        key=key,
        run_ids=tuple(str(r["run_id"]) for r in runs),
        stats={k: mean_std(s.get(k) for s in summaries) for k in sorted(keys)},
        train_seconds=mean_std(total_seconds(r.get("train_seconds")) for r in runs),
        mean_matrix=mean_matrix([r["accuracy_matrix"] for r in runs]),
        average_accuracy=mean_curve([s.get("average_accuracy") for s in summaries]),
        show_config=show_config,
        settings=settings,
    )


def total_seconds(seconds: Any) -> float | None:
    """Sum of a per-task list of seconds, or ``None`` when it is not such a list."""
    if not isinstance(seconds, list) or not all(is_number(s) for s in seconds):
        return None
    return float(sum(seconds))


def rank_key(group: GroupSummary) -> tuple:
    """Sort key: task, scenario, mean ACC descending (missing last), method, protocol, config."""
    acc = group.stats["acc"].mean
    return (group.key.task, group.key.scenario, acc is None, -(acc or 0.0), *group.key[2:])


def summarize_groups(groups: dict[GroupKey, list[dict[str, Any]]]) -> list[GroupSummary]:
    """Aggregate every group, in leaderboard order (see :func:`rank_key`).

    A group shows its configuration fingerprint, and the settings that tell it apart, where
    another group has the same task, scenario, method and protocol.
    """
    siblings: dict[tuple[str, ...], list[GroupKey]] = defaultdict(list)
    for key in groups:
        siblings[tuple(key[:-1])].append(key)
    settings: dict[GroupKey, str] = {}
    for keys in siblings.values():
        if len(keys) > 1:
            configs = [groups[key][0].get("config") for key in keys]
            settings.update(zip(keys, distinguishing_settings(configs), strict=True))
    summaries = (
        aggregate(k, runs, k in settings, settings.get(k, "")) for k, runs in groups.items()
    )
    return sorted(summaries, key=rank_key)


def sections(
    groups: Sequence[GroupSummary],
) -> list[tuple[tuple[str, str], list[GroupSummary]]]:
    """Ranked ``groups`` split into one list per (task, scenario), keeping their order."""
    by_section: dict[tuple[str, str], list[GroupSummary]] = {}
    for group in groups:
        by_section.setdefault((group.key.task, group.key.scenario), []).append(group)
    return list(by_section.items())


def group_warnings(group: GroupSummary) -> list[str]:
    """What a reader of ``group``'s numbers should know: mixed numbers of tasks."""
    if group.mean_matrix is None or group.average_accuracy is None:
        return [
            f"{group_name(group.key)} mixes runs of different numbers of tasks (or lacks their "
            "accuracy curves): its accuracy matrix and curve are left out of the plots"
        ]
    return []


# ---------------------------------------------------------------------------------------------
# Tables: cell texts shared by Markdown and HTML


def format_stat(stat: Stat | None, metric: Metric, n_runs: int) -> str:
    """``mean ± std`` in the metric's scale; ``–`` for the std of one value; ``n/a`` if none."""
    if stat is None or stat.mean is None:
        return "n/a"
    mean = format(metric.scale * stat.mean, metric.fmt)
    std = "–" if stat.std is None else format(metric.scale * stat.std, metric.fmt)
    text = f"{mean} ± {std}"
    return text if stat.n == n_runs else f"{text} (n={stat.n})"


def format_duration(stat: Stat) -> str:
    """Mean ± std of a time in seconds, as seconds below two minutes, else minutes."""
    if stat.mean is None:
        return "n/a"
    unit, scale = ("s", 1.0) if stat.mean < 120 else ("min", 1 / 60)
    std = "–" if stat.std is None else f"{scale * stat.std:.1f}"
    return f"{scale * stat.mean:.1f} ± {std} {unit}"


def shown_metrics(groups: Sequence[GroupSummary]) -> list[Metric]:
    """The always-shown metrics, then every other one that some group has a value of."""
    known = {m.key for m in METRICS}
    present = {k for g in groups for k, stat in g.stats.items() if stat.n > 0}
    extra = sorted(present - known)
    return [m for m in METRICS if m.key in ALWAYS_SHOWN or m.key in present] + [
        Metric(key, key, 1.0, ".4g") for key in extra
    ]


def leaderboard_table(groups: Sequence[GroupSummary]) -> Table:
    """One row per group, in the given (ranked) order."""
    metrics = shown_metrics(groups)
    header = ["#", "Method", "Protocol", "n", *(m.label for m in metrics), "Train time / run"]
    rows = [
        [
            str(rank),
            g.key.method,
            g.protocol_label,
            str(g.n),
            *(format_stat(g.stats.get(m.key), m, g.n) for m in metrics),
            format_duration(g.train_seconds),
        ]
        for rank, g in enumerate(groups, start=1)
    ]
    numeric = [True, False, False, True, *(True for _ in metrics), True]
    return Table(header, rows, numeric)


def not_averaged(
    incomplete: Sequence[dict[str, Any]], superseded: Sequence[NotAveraged]
) -> list[NotAveraged]:
    """The runs listed apart, sorted by run id.

    The reason of an ``incomplete`` run is the first line of its error (``–`` if none); the
    ``superseded`` runs keep theirs.
    """
    runs = [*superseded]
    for r in incomplete:
        error = (str(r.get("error") or "").strip().splitlines() or ["–"])[0]
        runs.append(NotAveraged(r, str(r["status"]), error))
    return sorted(runs, key=lambda run: str(run.record["run_id"]))


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


def section_title(task: str, scenario: str) -> str:
    """``split_mnist · task-incremental (multi-head)``: the scenario and its head type."""
    title = f"{task} · {SCENARIO_NAMES.get(scenario, scenario)}"
    return f"{title} ({HEAD_TYPES[scenario]})" if scenario in HEAD_TYPES else title


# ---------------------------------------------------------------------------------------------
# Markdown


def markdown_table(table: Table) -> str:
    """A GitHub-flavoured Markdown table; ``|`` in cells is escaped."""

    def line(cells: Sequence[str]) -> str:
        escaped = (" ".join(c.replace("|", "\\|").splitlines()) for c in cells)
        return "| " + " | ".join(escaped) + " |"

    rule = "|" + "|".join("---:" if num else "---" for num in table.numeric) + "|"
    return "\n".join([line(table.header), rule, *(line(row) for row in table.rows)])


def markdown_tables(groups: Sequence[GroupSummary], level: int) -> str:
    """The legend and one table per (task, scenario) under headings of ``level``."""
    if not groups:
        return "No completed runs yet.\n"
    parts = [LEGEND]
    for (task, scenario), members in sections(groups):
        parts += [
            f"{'#' * level} {section_title(task, scenario)}",
            markdown_table(leaderboard_table(members)),
        ]
    return "\n\n".join(parts) + "\n"


def generated_line(command: str, n_records: int) -> str:
    """How the leaderboard was made."""
    return f"Generated from {n_records} run records by `{command}`."


def render_markdown(
    groups: Sequence[GroupSummary], apart: Sequence[NotAveraged], command: str
) -> str:
    """The whole ``leaderboard.md``."""
    n_records = sum(g.n for g in groups) + len(apart)
    listed = markdown_table(not_averaged_table(apart)) if apart else "None."
    return (
        f"# Leaderboard\n\n{markdown_tables(groups, level=2)}\n"
        f"## Runs not averaged\n\n{listed}\n\n"
        f"{generated_line(command, n_records)}\n"
    )


def readme_block(groups: Sequence[GroupSummary], n_records: int, command: str) -> str:
    """What goes between the README's markers: the tables and how they were generated."""
    return f"{markdown_tables(groups, level=3)}\n{generated_line(command, n_records)}\n"


def replace_between_markers(text: str, block: str, name: str) -> str:
    """``text`` with the lines between :data:`README_BEGIN` and :data:`README_END` replaced.

    Raises :class:`UserError` naming ``name`` and the marker lines to add when there is not
    exactly one begin line followed by one end line.
    """
    lines = text.splitlines(keepends=True)
    begins = [i for i, line in enumerate(lines) if line.strip() == README_BEGIN]
    ends = [i for i, line in enumerate(lines) if line.strip() == README_END]
    if len(begins) != 1 or len(ends) != 1 or ends[0] < begins[0]:
        raise UserError(
            f"{name} needs exactly one line {README_BEGIN} and, below it, one line "
            f"{README_END} (found {len(begins)} and {len(ends)}): add these two lines where "
            f"the leaderboard should go."
        )
    before, after = "".join(lines[: begins[0] + 1]), "".join(lines[ends[0] :])
    return f"{before}\n{block.strip()}\n\n{after}"


# ---------------------------------------------------------------------------------------------
# Plots (matplotlib figures drawn by the Agg canvas, without pyplot's global state)


def new_figure(width: float, height: float) -> Figure:
    """A figure drawn by the Agg backend."""
    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def png_base64(figure: Figure) -> str:
    """The figure as a base64 PNG; no metadata, so the bytes depend only on the drawing."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def plot_label(group: GroupSummary) -> str:
    """``label (n=N)`` for a Matplotlib title, legend or tick: a ``$`` is not maths there."""
    return f"{group.label} (n={group.n})".replace("$", r"\$")


def plot_matrix(group: GroupSummary) -> Figure:
    """Heatmap of the group's mean accuracy matrix (%); grey where unmeasured."""
    R = 100 * group.mean_matrix
    T = len(R)
    figure = new_figure(1.6 + 0.55 * T, 1.3 + 0.5 * T)
    ax = figure.add_subplot()
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#dddddd")
    image = ax.imshow(np.ma.masked_invalid(R), cmap=cmap, vmin=0, vmax=100)
    ax.set_xticks(range(T), [f"T{j + 1}" for j in range(T)])
    ax.set_yticks(range(T), [f"T{i + 1}" for i in range(T)])
    ax.set_xlabel("tested on task")
    ax.set_ylabel("after training task")
    ax.set_title(plot_label(group), fontsize=8)
    if T <= 12:
        for (i, j), value in np.ndenumerate(R):
            if not math.isnan(value):
                colour = "white" if value < 60 else "black"
                ax.text(j, i, f"{value:.1f}", ha="center", va="center", fontsize=7, color=colour)
    figure.colorbar(image, ax=ax, label="accuracy (%)")
    return figure


def plot_average_accuracy(groups: Sequence[GroupSummary]) -> Figure:
    """Average accuracy on the tasks seen so far after each task, one line per group (± std)."""
    figure = new_figure(6.4, 3.8)
    ax = figure.add_subplot()
    for group in groups:
        if group.average_accuracy is None:
            continue
        mean, std = group.average_accuracy
        x = np.arange(1, len(mean) + 1)
        (line,) = ax.plot(x, 100 * mean, marker="o", label=plot_label(group))
        if std is not None:
            ax.fill_between(
                x, 100 * (mean - std), 100 * (mean + std), alpha=0.2, color=line.get_color()
            )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("tasks trained")
    ax.set_ylabel("average accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return figure


def plot_forgetting(groups: Sequence[GroupSummary]) -> Figure:
    """Mean forgetting (%) per group with std error bars, best-ranked group on top."""
    shown = [g for g in groups if g.stats["forgetting"].mean is not None]
    figure = new_figure(6.4, 1.2 + 0.4 * len(shown))
    ax = figure.add_subplot()
    means = [100 * g.stats["forgetting"].mean for g in shown]
    errors = [100 * (g.stats["forgetting"].std or 0.0) for g in shown]
    ax.barh(range(len(shown)), means, xerr=errors, capsize=4, color="tab:blue", alpha=0.8)
    ax.set_yticks(range(len(shown)), [plot_label(g) for g in shown], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("forgetting (%)")
    ax.grid(axis="x", alpha=0.3)
    return figure


# ---------------------------------------------------------------------------------------------
# HTML

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; color: #222;
       max-width: 1200px; margin: 2rem auto; padding: 0 1rem; }
table { border-collapse: collapse; margin: 1rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.6rem; }
th { background: #f2f2f2; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.plots { display: flex; flex-wrap: wrap; gap: 1rem; align-items: flex-start; }
figure { margin: 0; }
figcaption { font-size: 0.85rem; color: #555; }
img { max-width: 100%; }
code { background: #f2f2f2; padding: 0 0.2rem; }
""".strip()


def html_table(table: Table) -> str:
    """The table as HTML, cells escaped."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.header)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{html.escape(c)}</td>' if num else f"<td>{html.escape(c)}</td>"
            for c, num in zip(row, table.numeric, strict=True)
        )
        + "</tr>\n"
        for row in table.rows
    )
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>"


def html_figure(figure: Figure, caption: str) -> str:
    """An ``<img>`` holding the figure as an inline base64 PNG, with a caption."""
    text = html.escape(caption)
    return (
        f'<figure><img src="data:image/png;base64,{png_base64(figure)}" alt="{text}">'
        f"<figcaption>{text}</figcaption></figure>"
    )


def html_section(task: str, scenario: str, groups: Sequence[GroupSummary]) -> str:
    """Table, average-accuracy and forgetting plots, and one heatmap per group."""
    plots = []
    if any(g.average_accuracy is not None for g in groups):
        plots.append(
            html_figure(
                plot_average_accuracy(groups), "Average accuracy after each task (band: ± std)"
            )
        )
    if any(g.stats["forgetting"].mean is not None for g in groups):
        plots.append(html_figure(plot_forgetting(groups), "Forgetting (mean ± std)"))
    heatmaps = [
        html_figure(plot_matrix(g), f"Mean accuracy matrix: {g.label}")
        for g in groups
        if g.mean_matrix is not None
    ]
    return "\n".join(
        [
            f"<h2>{html.escape(section_title(task, scenario))}</h2>",
            html_table(leaderboard_table(groups)),
            f'<div class="plots">{"".join(plots)}</div>',
            "<h3>Mean accuracy matrices</h3>",
            "<p>Row i: after training task i; column j: tested on task j.</p>",
            f'<div class="plots">{"".join(heatmaps)}</div>',
        ]
    )


def render_html(groups: Sequence[GroupSummary], apart: Sequence[NotAveraged], command: str) -> str:
    """The whole ``leaderboard.html``: one page, inline CSS and images."""
    n_records = sum(g.n for g in groups) + len(apart)
    body = [f"<h1>Leaderboard</h1>\n<p>{html.escape(LEGEND)}</p>"]
    body += [
        html_section(task, scenario, members) for (task, scenario), members in sections(groups)
    ]
    if not groups:
        body.append("<p>No completed runs yet.</p>")
    body.append("<h2>Runs not averaged</h2>")
    body.append(html_table(not_averaged_table(apart)) if apart else "<p>None.</p>")
    body.append(
        f"<p>Generated from {n_records} run records by <code>{html.escape(command)}</code>.</p>"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>cl_bayes leaderboard</title>\n<style>\n{CSS}\n</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


# ---------------------------------------------------------------------------------------------
# Files and command line


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) through a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def build_report(results_dir: Path, out_dir: Path, readme: Path | None, command: str) -> list[Path]:
    """Read the records under ``results_dir/runs``, write the leaderboard; the paths written.

    Raises :class:`UserError` when there are no records or the README lacks its markers
    (checked before anything is written).
    """
    runs_dir = results_dir / "runs"
    records, skipped = read_records(runs_dir) if runs_dir.is_dir() else ([], 0)
    if not records:
        found = f" ({skipped} unreadable file(s) skipped)" if skipped else ""
        raise UserError(
            f"no run records in {runs_dir}{found}. Run an experiment first, e.g. "
            f"`python -m cl_bayes task=split_mnist`, which writes its record to "
            f"<results_dir>/runs/, or point --results at the folder that holds runs/."
        )
    log.info(
        f"read {len(records)} run records from {runs_dir}"
        + (f", skipped {skipped}" if skipped else "")
    )
    completed, incomplete = split_by_status(records)
    grouped, superseded = drop_repeated_seeds(group_runs(completed))
    for run in superseded:
        name = group_name(group_key(run.record))
        log.warning(f"warning: {name}: not averaging {run.record['run_id']}: {run.reason}")
    groups = summarize_groups(grouped)
    for group in groups:
        for warning in group_warnings(group):
            log.warning(f"warning: {warning}")
    apart = not_averaged(incomplete, superseded)
    log.info(
        f"{len(completed) - len(superseded)} completed runs in {len(groups)} groups "
        f"(tables: {len(sections(groups))}); {len(apart)} runs listed apart (failed, "
        "interrupted, running or superseded)"
    )

    readme_text = None
    if readme is not None:
        if not readme.is_file():
            raise UserError(f"--readme {readme}: no such file.")
        block = readme_block(groups, len(records), command)
        readme_text = replace_between_markers(readme.read_text(encoding="utf-8"), block, readme)

    written = []
    outputs = [
        (out_dir / "leaderboard.md", render_markdown(groups, apart, command)),
        (out_dir / "leaderboard.html", render_html(groups, apart, command)),
    ]
    if readme_text is not None:
        outputs.append((readme, readme_text))
    for path, text in outputs:
        write_text_atomic(path, text)
        log.info(f"wrote {path}")
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; a user error is logged as one line and gives exit code 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="python -m cl_bayes.report",
        description="Leaderboard (Markdown and HTML) from the run records in RESULTS/runs.",
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=Path("results"),
        help="folder holding runs/*.json (default: results)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where to write leaderboard.md and leaderboard.html (default: the results folder)",
    )
    parser.add_argument(
        "--readme",
        type=Path,
        default=None,
        help=f"Markdown file whose {README_BEGIN} ... {README_END} block gets the tables",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    command = shlex.join(["python", "-m", "cl_bayes.report", *argv])
    try:
        build_report(args.results, args.out or args.results, args.readme, command)
    except UserError as error:
        log.error(f"error: {error}")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
