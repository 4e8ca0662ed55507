"""The command line: ``python -m cl_bayes.report``, from the records to the files."""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from cl_bayes.errors import UserError
from cl_bayes.report.aggregate import group_warnings, sections, summarize_groups
from cl_bayes.report.groups import (
    drop_repeated_seeds,
    group_key,
    group_name,
    group_runs,
    not_averaged,
)
from cl_bayes.report.html_page import render_html
from cl_bayes.report.markdown import (
    README_BEGIN,
    README_END,
    readme_block,
    render_markdown,
    replace_between_markers,
)
from cl_bayes.report.records import read_records, split_by_status

log = logging.getLogger(__name__)


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
