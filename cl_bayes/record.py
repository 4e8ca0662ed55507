"""The run record: one JSON file per run, written atomically after every task.

Fields: ``run_id``, ``status`` (``running`` / ``completed`` / ``failed`` / ``interrupted``),
``task``, ``method``, ``scenario``, ``protocol``, ``seed``, ``config`` (resolved),
``accuracy_matrix`` (``R[i][j]``, see ``cl_bayes.metrics``; ``null`` where not yet measured),
``baseline_accuracy`` (untrained model per task), ``summary`` (ACC, BWT, ...),
``tasks_completed``, ``train_seconds`` / ``eval_seconds`` per task, ``peak_memory_mb``,
``versions``, ``device`` (``cpu``, ``cuda``, ``cuda:1``), ``device_name`` (the GPU's name, or
the CPU's model and core count), ``error``, ``started_at`` / ``updated_at`` (UTC, ISO 8601).
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence

import torch

RECORD_NAME = "record.json"
PACKAGE_DIR = Path(__file__).resolve().parent
# Keys that say where things are (or are logged, or how this machine does its arithmetic)
# rather than what the experiment is: a resumed run takes them from its own command line,
# everything else from the checkpoint, and a configuration's fingerprint leaves them out at
# any depth.
LOCAL_KEYS = ("data", "results_dir", "progress", "resume", "device", "logger", "flush_denormal")
# Top-level config keys the fingerprint leaves out, besides LOCAL_KEYS (left out at any depth).
NOT_FINGERPRINTED_TOP = frozenset({"seed", "hydra"})
# Options added after records were first written, with the value every earlier run had: a
# record without the option and one with this value ran the same experiment, so the
# fingerprint leaves the option out when it has this value.
ADDED_OPTIONS = {
    ("model", "sampling"): "local",
    ("train", "steps"): None,
    ("method", "steps"): None,
    # How many of the next task's examples unseen-task detection scores: not an input of the
    # accuracy matrix, which runs recorded before detection existed measured alike.
    ("unseen_examples",): 500,
    # Whether a GPU replays the training step from CUDA graphs: the same computation, launched
    # otherwise (results agree to rounding); runs before the option trained eagerly, as CPUs do.
    ("train", "cuda_graphs"): "auto",
    # A fresh optimiser for every task, as every run trained before the option existed.
    ("train", "reset_optimizer"): True,
}


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


def _git(checkout: Path, *args: str) -> str | None:
    """``git <args>``'s output in ``checkout``, or ``None`` where git is missing or fails."""
    try:
        out = subprocess.run(
            ["git", *args], cwd=checkout, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def git_commit(package_dir: Path = PACKAGE_DIR) -> str | None:
    """Commit of the source tree the package runs from, when it is a git checkout.

    Only a checkout of this project counts (the folder above the package holds ``.git``): an
    installed package inside some other repository, e.g. a virtualenv within a user's own
    project, has no commit of its own and gets ``None``.
    """
    checkout = package_dir.parent
    if not (checkout / ".git").exists():
        return None
    head = _git(checkout, "rev-parse", "HEAD")
    return None if head is None else head.strip()


# The folders of a checkout whose contents make the runs: code, configs, task sequences.
CODE_FOLDERS = ("cl_bayes", "conf", "tasks")


def code_changed(package_dir: Path = PACKAGE_DIR) -> bool | None:
    """Whether the checkout's code differs from :func:`git_commit` (``None``: no checkout).

    True where a tracked file under :data:`CODE_FOLDERS` is modified, staged or deleted, so
    that a record made from uncommitted code (or from a copy of a working tree over an
    older history) says so; results and other untracked files do not count.
    """
    if git_commit(package_dir) is None:
        return None
    status = _git(
        package_dir.parent, "status", "--porcelain", "--untracked-files=no", "--", *CODE_FOLDERS
    )
    return None if status is None else bool(status.strip())


def versions() -> dict[str, str | bool | None]:
    """Versions of Python, the main packages and the git commit of cl_bayes (or ``None``).

    ``git_code_changed``: whether the code run differs from that commit (:func:`code_changed`).
    """

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
        "git_code_changed": code_changed(),
    }


def device_name(device: torch.device) -> str:
    """What ``device`` is: the GPU's name (``NVIDIA H200``), else the CPU's model and cores."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{cpu}, {os.cpu_count()} cores"


# Linux: writing "5" to CLEAR_REFS resets the process's peak resident memory (VmHWM in STATUS).
CLEAR_REFS = Path("/proc/self/clear_refs")
STATUS = Path("/proc/self/status")


def start_peak_memory(device: torch.device) -> str:
    """Start measuring a run's own peak memory; returns the scope :func:`peak_memory_mb` reads.

    Under the basic or joblib launcher one process runs job after job, and its lifetime peak
    would carry earlier jobs' peaks into later records. Call this at the start of a run and
    pass what it returns to :func:`peak_memory_mb`.

    Returns
    -------
    str
        ``"run"``: the peak resident memory was reset, and is read since this call (Linux);
        ``"process"``: it could not be (another system, ``/proc`` not writable), so the
        process's lifetime peak is read instead. The peak allocated CUDA memory on ``device``
        is always reset.
    """
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        CLEAR_REFS.write_text("5")
    except OSError:
        return "process"
    return "run" if _peak_rss_since_reset_kb() is not None else "process"


def peak_memory_mb(device: torch.device, scope: str = "process") -> dict[str, float | str]:
    """Peak resident memory (``cpu_rss``) and, on CUDA, peak allocated GPU memory, in MB.

    ``scope`` is what :func:`start_peak_memory` returned: ``"run"`` reads the peak since that
    call, ``"process"`` the process's lifetime peak (``ru_maxrss``). The result says which, as
    ``cpu_rss_scope``. The CUDA peak is the one since :func:`start_peak_memory` (or since the
    process started).
    """
    import resource

    since_reset = _peak_rss_since_reset_kb() if scope == "run" else None
    if since_reset is None:
        scope = "process"
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if sys.platform == "darwin":  # bytes there, kB on Linux
            kb /= 1024
    else:
        kb = since_reset
    peak: dict[str, float | str] = {"cpu_rss": kb / 1024, "cpu_rss_scope": scope}
    if device.type == "cuda":
        peak["cuda_allocated"] = torch.cuda.max_memory_allocated(device) / 2**20
    return peak


def _peak_rss_since_reset_kb() -> int | None:
    """``VmHWM`` of ``/proc/self/status`` in kB, or ``None`` where there is no such file."""
    try:
        for line in STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


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
                if section is not None and name in section and section[name] == value:
                    del section[name]
        return kept
    if isinstance(config, list):
        return [experiment_config(v, False) for v in config]
    return config
