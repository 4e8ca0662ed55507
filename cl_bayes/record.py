"""The run record: one JSON file per run, written atomically after every task.

Fields: ``run_id``, ``status`` (``running`` / ``completed`` / ``failed`` / ``interrupted``),
``task``, ``method``, ``scenario``, ``protocol``, ``seed``, ``config`` (resolved),
``accuracy_matrix`` (``R[i][j]``, see ``cl_bayes.metrics``; ``null`` where not yet measured),
``baseline_accuracy`` (untrained model per task), ``summary`` (ACC, BWT, ...),
``tasks_completed``, ``train_seconds`` / ``eval_seconds`` per task, ``peak_memory_mb``,
``versions``, ``device``, ``error``, ``started_at`` / ``updated_at`` (UTC, ISO 8601).
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import tempfile
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

RECORD_NAME = "record.json"


def utc_now() -> str:
    """The current time in UTC, ISO 8601 to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename.

    Readers never see a half-written file, and concurrent writers of different paths in
    one folder never interleave.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file private (0600); records are shared results, e.g. on a cluster.
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "w") as handle:
            json.dump(_json_safe(data), handle, indent=1, allow_nan=False)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _json_safe(value: Any) -> Any:
    """NaN and infinities become ``null``: JSON has no such numbers."""
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def git_commit() -> str | None:
    """Commit of the source tree the package runs from, when it is a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def versions() -> dict[str, str | None]:
    """Versions of Python, the main packages and the git commit of cl_bayes (or ``None``)."""

    def version(package: str) -> str | None:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return None

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": version("torchvision"),
        "hydra-core": version("hydra-core"),
        "cl_bayes": version("cl_bayes"),
        "git_commit": git_commit(),
    }


def peak_memory_mb(device: torch.device) -> dict[str, float]:
    """Peak resident memory of this process and, on CUDA, peak allocated GPU memory."""
    import resource

    peak = {"cpu_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.type == "cuda":
        peak["cuda_allocated"] = torch.cuda.max_memory_allocated(device) / 2**20
    return peak
