"""Plots: matplotlib figures drawn by the Agg canvas, without pyplot's global state."""

from __future__ import annotations

import base64
import io
import math
from typing import Callable, Sequence

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from cl_bayes.metrics import expected_calibration_error
from cl_bayes.report.aggregate import GroupSummary


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


def plot_label(group: GroupSummary, n: int | None = None) -> str:
    """``label (n=N)`` for a Matplotlib title, legend or tick: a ``$`` is not maths there.

    ``N`` is the group's number of runs, or ``n`` where a plot shows fewer of them.
    """
    return f"{group.label} (n={group.n if n is None else n})".replace("$", r"\$")


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


def plot_curves(
    groups: Sequence[GroupSummary],
    curve: Callable[[GroupSummary], tuple[np.ndarray, np.ndarray | None] | None],
    ylabel: str,
) -> Figure:
    """A per-task curve in % after each task, one line per group that has it (band: ± std)."""
    figure = new_figure(6.4, 3.8)
    ax = figure.add_subplot()
    for group in groups:
        values = curve(group)
        if values is None:
            continue
        mean, std = values
        x = np.arange(1, len(mean) + 1)
        (line,) = ax.plot(x, 100 * mean, marker="o", label=plot_label(group))
        if std is not None:
            ax.fill_between(
                x, 100 * (mean - std), 100 * (mean + std), alpha=0.2, color=line.get_color()
            )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("tasks trained")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return figure


def plot_average_accuracy(groups: Sequence[GroupSummary]) -> Figure:
    """Average accuracy on the tasks seen so far after each task, one line per group (± std)."""
    return plot_curves(groups, lambda g: g.average_accuracy, "average accuracy (%)")


def plot_ece_after_task(groups: Sequence[GroupSummary]) -> Figure:
    """ECE (mean over the seen tasks) after each task, one line per group that has it (± std)."""
    return plot_curves(groups, lambda g: g.ece_after_task, "ECE, mean over seen tasks (%)")


def plot_reliability(group: GroupSummary) -> Figure:
    """Reliability diagram of the group's pooled bins (:attr:`GroupSummary.reliability_bins`).

    See :func:`reliability_diagram`. The title gives the ECE of the pooled bins, over the
    examples of all the seen tasks and runs together, which is not the table's ECE (a mean
    of per-task ECEs, then of runs).
    """
    label = plot_label(group, group.reliability_runs)
    return reliability_diagram(group.reliability_bins, label)


def reliability_diagram(bins: dict[str, list[float]], label: str) -> Figure:
    """Reliability diagram of confidence ``bins`` (``cl_bayes.metrics.reliability_bins``).

    Top: the accuracy of each confidence bin as a bar over the bin, the bin's mean confidence
    as a red line across it (the gap between the two is what ECE weighs) and the diagonal of
    perfect calibration; bottom: the share of the examples in each bin. The title is
    ``label`` and the ECE of the bins.
    """
    binned = bins
    bins = {k: np.asarray(v, dtype=float) for k, v in binned.items()}
    count = bins["count"]
    filled = count > 0  # an empty bin has no accuracy or confidence to draw
    accuracy = bins["correct"][filled] / count[filled]
    confidence = bins["confidence"][filled] / count[filled]
    edges = np.linspace(0.0, 1.0, len(count) + 1)
    left, right = edges[:-1][filled], edges[1:][filled]
    figure = new_figure(3.6, 4.2)
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    top.bar(
        left,
        accuracy,
        width=right - left,
        align="edge",
        color="tab:blue",
        alpha=0.8,
        edgecolor="white",
        label="accuracy",
    )
    # Drawn over the bars, which would hide them.
    top.hlines(
        confidence, left, right, color="tab:red", linewidth=2, zorder=3, label="mean confidence"
    )
    top.plot(
        [0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, zorder=3, label="calibrated"
    )
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.legend(fontsize=7, loc="upper left")
    top.grid(alpha=0.3)
    ece = 100 * expected_calibration_error(binned)
    top.set_title(f"{label}\npooled ECE {ece:.2f} %", fontsize=8)
    share = 100 * count[filled] / count.sum()
    bottom.bar(left, share, width=right - left, align="edge", color="grey", edgecolor="white")
    bottom.set_xlabel("confidence (top label)")
    bottom.set_ylabel("examples (%)")
    bottom.grid(axis="y", alpha=0.3)
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
