"""The Markdown leaderboard (``leaderboard.md``) and the block it puts in a README."""

from __future__ import annotations

from typing import Sequence

from cl_bayes.errors import UserError
from cl_bayes.report.aggregate import GroupSummary, sections
from cl_bayes.report.groups import NotAveraged
from cl_bayes.report.tables import (
    CURVES_LEGEND,
    Table,
    curves_table,
    leaderboard_table,
    legend,
    not_averaged_table,
    section_title,
)

README_BEGIN = "<!-- leaderboard:begin -->"
README_END = "<!-- leaderboard:end -->"


def markdown_table(table: Table) -> str:
    """A GitHub-flavoured Markdown table; ``|`` in cells is escaped."""

    def line(cells: Sequence[str]) -> str:
        escaped = (" ".join(c.replace("|", "\\|").splitlines()) for c in cells)
        return "| " + " | ".join(escaped) + " |"

    rule = "|" + "|".join("---:" if num else "---" for num in table.numeric) + "|"
    return "\n".join([line(table.header), rule, *(line(row) for row in table.rows)])


def markdown_tables(groups: Sequence[GroupSummary], level: int) -> str:
    """The legend and one table per section (:func:`sections`) under headings of ``level``."""
    if not groups:
        return "No completed runs yet.\n"
    parts = [legend(groups)]
    for section in sections(groups):
        parts += [
            f"{'#' * level} {section_title(section.task, section.scenario, section.benchmark)}",
            markdown_table(leaderboard_table(section.groups)),
        ]
        curves = curves_table(section.groups)
        if curves is not None:
            parts += [CURVES_LEGEND, markdown_table(curves)]
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
