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
from typing import Any, Sequence

import torch

RECORD_NAME = "record.json"
# Keys that say where things are (or are logged) rather than what the experiment is:
# a resumed run takes them from its own command line, everything else from the checkpoint,
# and a configuration's fingerprint leaves them out at any depth.
LOCAL_KEYS = ("data", "results_dir", "progress", "resume", "device", "logger")
# Top-level config keys the fingerprint leaves out, besides LOCAL_KEYS (left out at any depth).
NOT_FINGERPRINTED_TOP = frozenset({"seed", "hydra"})
# Options added after records were first written, with the value every earlier run had: a
# record without the option and one with this value ran the same experiment, so the
# fingerprint leaves the option out when it has this value.
ADDED_OPTIONS = {("model", "sampling"): "local"}


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


def config_section(config: dict[str, Any], path: Sequence[str]) -> dict[str, Any] | None:
    """The nested dict at ``path`` of ``config``, or ``None`` where there is none."""
    section: Any = config
    for key in path:
        section = section.get(key) if isinstance(section, dict) else None
    return section if isinstance(section, dict) else None


def experiment_config(config: Any, top: bool = True) -> Any:
    """``config`` without what is local to a machine or varies between seeds.

    Drops :data:`LOCAL_KEYS` at every depth (e.g. ``method.progress``, which is
    ``${progress}``), at the top ``seed`` and ``hydra``, and the :data:`ADDED_OPTIONS` that
    have the value runs had before they existed.
    """
    if isinstance(config, dict):
        dropped = set(LOCAL_KEYS) | (NOT_FINGERPRINTED_TOP if top else set())
        kept = {k: experiment_config(v, False) for k, v in config.items() if k not in dropped}
        if top:
            for (*parents, name), value in ADDED_OPTIONS.items():
                section = config_section(kept, parents)
                if section is not None and section.get(name) == value:
                    del section[name]
        return kept
    if isinstance(config, list):
        return [experiment_config(v, False) for v in config]
    return config
