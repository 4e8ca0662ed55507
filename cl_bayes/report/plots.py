"""Plots: matplotlib figures drawn by the Agg canvas, without pyplot's global state."""

from __future__ import annotations

import base64
import io
import math
from typing import Sequence

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

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
