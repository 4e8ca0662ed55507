"""Aggregates of each group: means and sample standard deviations, the ranking, the sections.

Pure functions of the grouped records: nothing here reads files or draws.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable, NamedTuple, Sequence

import numpy as np

from cl_bayes.metrics import pool_bins
from cl_bayes.report.groups import GroupKey, benchmark_fingerprint, group_name
from cl_bayes.report.settings import distinguishing_settings
from cl_bayes.summary import ROW_MEANS, SUMMARY_METRICS

# Summary entries that are not metrics to average.
NOT_METRICS = {"tasks", "average_accuracy"}


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
    their number of tasks. ``ece_after_task`` is likewise the mean and std of the ECE after
    each task (mean over the seen tasks), ``None`` unless every run has it.
    ``after_task_means`` maps each per-task measure of a run's summary
    (:data:`cl_bayes.summary.ROW_MEANS`: NLL, Brier, ECE, mean predictive entropy, mutual
    information) to its mean curve over the runs that measured it and their number
    (:func:`mean_of_measured_curves`); the leaderboard shows some of them.

    ``reliability_bins`` is the sum of each run's reliability bins after its last task
    (``count``, ``confidence``, ``correct`` per confidence bin, over the seen tasks' test data;
    :func:`cl_bayes.metrics.reliability_bins`), over the ``reliability_runs`` runs that have
    them; ``None`` where none has (records written before they were measured).

    ``show_config`` is true where other groups share the key's task, scenario, method and
    protocol, so that the configuration fingerprint tells them apart; ``settings`` then names
    the settings in which this group's configuration differs from theirs
    (:func:`distinguishing_settings`). ``benchmark`` is the fingerprint of the benchmark its
    runs ran (:func:`benchmark_fingerprint`): groups are ranked against those of the same one.
    ``accelerators`` counts the runs that trained on each GPU (:func:`accelerators`; empty
    where all ran on a CPU), which the leaderboard names beside the training time.
    """

    key: GroupKey
    run_ids: tuple[str, ...]
    stats: dict[str, Stat]
    train_seconds: Stat
    mean_matrix: np.ndarray | None
    average_accuracy: tuple[np.ndarray, np.ndarray | None] | None
    ece_after_task: tuple[np.ndarray, np.ndarray | None] | None = None
    after_task_means: dict[str, tuple[np.ndarray, int]] = field(default_factory=dict)
    reliability_bins: dict[str, list[float]] | None = None
    reliability_runs: int = 0
    show_config: bool = False
    settings: str = ""
    benchmark: str = "none"
    accelerators: dict[str, int] = field(default_factory=dict)

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


def mean_of_measured_curves(curves: Sequence[Any]) -> tuple[np.ndarray, int] | None:
    """Mean over the runs that have it of a per-task curve, and their number.

    Runs without the curve (recorded before it was measured, or a method that has no such
    measure) are left out; ``None`` where no run has it or the curves differ in length.
    """
    measured = [c for c in curves if isinstance(c, list) and c and all(is_number(v) for v in c)]
    if not measured or len({len(c) for c in measured}) != 1:
        return None
    return np.array(measured, dtype=float).mean(axis=0), len(measured)


BIN_KEYS = ("count", "confidence", "correct")


def last_reliability_bins(record: dict[str, Any]) -> dict[str, list[float]] | None:
    """The run's reliability bins after its last task, or ``None`` where it has none.

    ``None`` for records written before the bins were measured, and where the last entry is
    not three equally long lists of numbers holding some example.
    """
    rows = record.get("reliability_bins")
    if not isinstance(rows, list) or not rows or not isinstance(rows[-1], dict):
        return None
    bins = rows[-1]
    columns = [bins.get(k) for k in BIN_KEYS]
    if not all(isinstance(c, list) and all(is_number(v) for v in c) for c in columns):
        return None
    if len({len(c) for c in columns}) != 1 or sum(bins["count"]) <= 0:
        return None
    return bins


def pooled_reliability_bins(
    runs: Sequence[dict[str, Any]],
) -> tuple[dict[str, list[float]] | None, int]:
    """Sum of the runs' last reliability bins, and over how many runs.

    ``(None, 0)`` when no run has bins; ``None`` too when the runs differ in their number of
    bins, which cannot be added.
    """
    bins = [b for b in map(last_reliability_bins, runs) if b is not None]
    if not bins or len({len(b["count"]) for b in bins}) != 1:
        return None, len(bins)
    return pool_bins(bins), len(bins)


def accelerators(runs: Sequence[dict[str, Any]]) -> dict[str, int]:
    """How many of ``runs`` trained on each accelerator: ``device_name -> count``.

    A run counts where its record's ``device`` is not ``cpu`` (``cuda``, ``cuda:1``, ``mps``);
    it is named by its ``device_name`` (``NVIDIA H200``), or by its ``device`` where the record
    has no name. Runs on a CPU, and records without a ``device``, are not counted.
    """
    on_accelerators = [r for r in runs if str(r.get("device") or "cpu") != "cpu"]
    named = Counter(str(r.get("device_name") or r["device"]) for r in on_accelerators)
    return dict(sorted(named.items()))


def aggregate(
    key: GroupKey, runs: Sequence[dict[str, Any]], show_config: bool = False, settings: str = ""
) -> GroupSummary:
    """Summary of the completed ``runs`` of group ``key`` (see :class:`GroupSummary`)."""
    runs = sorted(runs, key=lambda r: str(r["run_id"]))
    summaries = [r["summary"] for r in runs]
    keys = {m.key for m in SUMMARY_METRICS} | {
        k for s in summaries for k, v in s.items() if is_number(v) and k not in NOT_METRICS
    }
    reliability_bins, reliability_runs = pooled_reliability_bins(runs)
    return GroupSummary(
        key=key,
        run_ids=tuple(str(r["run_id"]) for r in runs),
        stats={k: mean_std(s.get(k) for s in summaries) for k in sorted(keys)},
        train_seconds=mean_std(total_seconds(r.get("train_seconds")) for r in runs),
        mean_matrix=mean_matrix([r["accuracy_matrix"] for r in runs]),
        average_accuracy=mean_curve([s.get("average_accuracy") for s in summaries]),
        ece_after_task=mean_curve([s.get("ece_after_task") for s in summaries]),
        after_task_means={
            name: curve
            for name in ROW_MEANS
            if (curve := mean_of_measured_curves([s.get(f"{name}_after_task") for s in summaries]))
        },
        reliability_bins=reliability_bins,
        reliability_runs=reliability_runs,
        show_config=show_config,
        settings=settings,
        benchmark=benchmark_fingerprint(runs[0].get("config")) if runs else "none",
        accelerators=accelerators(runs),
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


class Section(NamedTuple):
    """One table: the ranked groups of one task sequence, scenario and benchmark.

    ``benchmark`` names the benchmark (:func:`benchmark_name`).
    """

    task: str
    scenario: str
    benchmark: str
    groups: list[GroupSummary]


def benchmark_name(groups: Sequence[GroupSummary]) -> str:
    """The protocol most of ``groups`` carry; of equally many, the shortest, then A to Z."""
    counts = Counter(g.key.protocol for g in groups)
    return min(counts, key=lambda protocol: (-counts[protocol], len(protocol), protocol))


def sections(groups: Sequence[GroupSummary]) -> list[Section]:
    """Ranked ``groups`` split into one :class:`Section` per task, scenario and benchmark.

    Groups keep their order; sections are sorted by task, scenario, then benchmark name.
    Where two benchmarks of one task and scenario would get the same name, each name is
    followed by its fingerprint.
    """
    by_benchmark: dict[tuple[str, str, str], list[GroupSummary]] = {}
    for group in groups:
        key = (group.key.task, group.key.scenario, group.benchmark)
        by_benchmark.setdefault(key, []).append(group)
    names = {key: benchmark_name(members) for key, members in by_benchmark.items()}
    uses = Counter((task, scenario, names[task, scenario, fp]) for task, scenario, fp in names)
    found = []
    for (task, scenario, fingerprint), members in by_benchmark.items():
        name = names[task, scenario, fingerprint]
        if uses[task, scenario, name] > 1:
            name = f"{name} (benchmark {fingerprint})"
        found.append(Section(task, scenario, name, members))
    return sorted(found, key=lambda section: section[:3])


def group_warnings(group: GroupSummary) -> list[str]:
    """What a reader of ``group``'s numbers should know.

    Mixed numbers of tasks; runs of which only some measured calibration (records written
    before it was measured lack it).
    """
    warnings = []
    if group.mean_matrix is None or group.average_accuracy is None:
        warnings.append(
            f"{group_name(group.key)} mixes runs of different numbers of tasks (or lacks their "
            "accuracy curves): its accuracy matrix and curve are left out of the plots"
        )
    if 0 < group.reliability_runs < group.n:
        curve = ", and its ECE curve, which needs every run's, is left out"
        warnings.append(
            f"{group_name(group.key)}: only {group.reliability_runs} of its {group.n} runs "
            "have reliability bins: its reliability diagram pools those"
            + (curve if group.ece_after_task is None else "")
        )
    return warnings
