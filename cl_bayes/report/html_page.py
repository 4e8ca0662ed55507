"""The HTML leaderboard (``leaderboard.html``): one page, inline CSS and PNG images."""

from __future__ import annotations

import html
from typing import Sequence

from matplotlib.figure import Figure

from cl_bayes.report.aggregate import GroupSummary, Section, sections
from cl_bayes.report.groups import NotAveraged
from cl_bayes.report.plots import (
    plot_average_accuracy,
    plot_ece_after_task,
    plot_forgetting,
    plot_matrix,
    plot_reliability,
    png_base64,
)
from cl_bayes.report.tables import (
    CURVES_LEGEND,
    Table,
    curves_table,
    leaderboard_table,
    legend,
    not_averaged_table,
    section_title,
)

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


def html_section(section: Section) -> str:
    """Table, average-accuracy and forgetting plots, one heatmap per group, then calibration."""
    groups = section.groups
    title = section_title(section.task, section.scenario, section.benchmark)
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
            f"<h2>{html.escape(title)}</h2>",
            html_table(leaderboard_table(groups)),
            f'<div class="plots">{"".join(plots)}</div>',
            "<h3>Mean accuracy matrices</h3>",
            "<p>Row i: after training task i; column j: tested on task j.</p>",
            f'<div class="plots">{"".join(heatmaps)}</div>',
            *calibration_figures(groups),
            *curves_part(groups),
        ]
    )


def curves_part(groups: Sequence[GroupSummary]) -> list[str]:
    """The table of calibration and uncertainty after each task, where some group has it."""
    table = curves_table(groups)
    if table is None:
        return []
    return ["<h3>After each task</h3>", f"<p>{html.escape(CURVES_LEGEND)}</p>", html_table(table)]


CALIBRATION_NOTE = (
    "ECE after each task: the mean over the seen tasks of each task's ECE, then over the runs "
    "(band: ± std). Reliability diagrams: the seen tasks' test data after the last task, "
    "pooled over the tasks and the runs of the group; bars: the accuracy of each confidence "
    "bin, red: the bin's mean confidence, below: the share of the examples in each bin. Their "
    "ECE is that of the pooled examples, not the table's mean over tasks."
)


def calibration_figures(groups: Sequence[GroupSummary]) -> list[str]:
    """The ECE-after-each-task plot and one reliability diagram per group that has them.

    Nothing where no group has them (records written before calibration was measured).
    """
    figures = []
    if any(g.ece_after_task is not None for g in groups):
        figures.append(
            html_figure(plot_ece_after_task(groups), "ECE after each task (band: ± std)")
        )
    figures += [
        html_figure(plot_reliability(g), f"Reliability diagram: {g.label}")
        for g in groups
        if g.reliability_bins is not None
    ]
    if not figures:
        return []
    return [
        "<h3>Calibration</h3>",
        f"<p>{html.escape(CALIBRATION_NOTE)}</p>",
        f'<div class="plots">{"".join(figures)}</div>',
    ]


def render_html(groups: Sequence[GroupSummary], apart: Sequence[NotAveraged], command: str) -> str:
    """The whole ``leaderboard.html``: one page, inline CSS and images."""
    n_records = sum(g.n for g in groups) + len(apart)
    body = [f"<h1>Leaderboard</h1>\n<p>{html.escape(legend(groups))}</p>"]
    body += [html_section(section) for section in sections(groups)]
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
