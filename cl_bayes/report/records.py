"""Reading run records: which files under ``runs/`` are usable, and their status."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Sequence

log = logging.getLogger(__name__)


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


def split_by_status(
    records: Sequence[dict[str, Any]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Completed runs and the others (failed, interrupted, running), each sorted by run id."""
    by_id = sorted(records, key=lambda r: str(r["run_id"]))
    completed = [r for r in by_id if r["status"] == "completed"]
    return completed, [r for r in by_id if r["status"] != "completed"]
