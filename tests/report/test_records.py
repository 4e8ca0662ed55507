"""Reading the run records: files that are not usable records are skipped, with a warning."""

from __future__ import annotations

import logging

from cl_bayes.report import build_report
from tests.report.sample_records import COMMAND, rows_of, three_seeds, write_records


def test_a_corrupt_or_foreign_json_file_is_skipped_with_a_warning(tmp_path, caplog):
    results = write_records(tmp_path / "results", *three_seeds())
    (results / "runs" / "broken.json").write_text('{"run_id": "half-writ')
    (results / "runs" / "list.json").write_text("[1, 2]")
    (results / "runs" / "other.json").write_text('{"run_id": "x", "status": "completed"}')
    with caplog.at_level(logging.INFO, logger="cl_bayes.report"):
        build_report(results, tmp_path / "out", None, COMMAND)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3
    assert any("broken.json" in w and "not readable as JSON" in w for w in warnings)
    assert any("list.json" in w and "not a JSON object" in w for w in warnings)
    assert any("other.json" in w and "no task, scenario" in w for w in warnings)
    assert "read 3 run records" in caplog.text and "skipped 3" in caplog.text
    markdown = (tmp_path / "out" / "leaderboard.md").read_text(encoding="utf-8")
    assert rows_of(markdown)[0].startswith(
        "| 1 | vcl | task-IL, multi-head | p | 3 | 94.00 ± 4.00 |"
    )
