"""Progress of a multirun sweep: one log line per finished job, whichever launcher runs it.

Hydra calls a callback's ``on_job_end`` where the job runs (in the launching process for the
basic launcher, in a joblib worker, on a SLURM node, in a Ray worker) and calls nothing on the
launching machine between the start and the end of a sweep. So :class:`SweepProgress` has
each job leave a small JSON note in ``<sweep dir>/.sweep_progress/<sweep id>/`` when it ends,
and a thread of the launching process logs one line per note it finds::

    job 3/18 done (41 s): task=split_mnist method=vcl seed=2  ACC=97.12%

The launching process and the jobs must see the same sweep directory: true on one machine,
and on a SLURM cluster (submitit itself exchanges its pickles through that directory). Jobs
of a Ray cluster without a shared file system leave their notes on their own nodes, and no
line is logged for them.

``conf/config.yaml`` selects it for every run (``override hydra/callbacks: sweep_progress`` in
its defaults); outside multirun it does nothing.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import math
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from cl_bayes.record import write_json_atomic

log = logging.getLogger(__name__)

BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
NOTES_FOLDER = ".sweep_progress"


def sweep_grid(config: DictConfig) -> dict[str, int] | None:
    """Swept keys and their number of values, as Hydra's basic sweeper expands them.

    Parameters
    ----------
    config
        The multirun configuration the launching process sees (with ``hydra.overrides.task``,
        the command line, and ``hydra.sweeper.params``, the experiment's sweep).

    Returns
    -------
    dict or None
        ``{key: number of values}`` for every override; the sweep has the product of the
        numbers as jobs. ``None`` when another sweeper decides the jobs (e.g. Optuna) or an
        override cannot be expanded here (``glob(...)``).
    """
    if OmegaConf.select(config, "hydra.sweeper._target_") != BASIC_SWEEPER:
        return None
    params = OmegaConf.select(config, "hydra.sweeper.params") or {}
    # The basic sweeper's order: the sweeper's params first, the command line last, so that a
    # key given on the command line replaces the same key of the params.
    lines = [f"{key}={value}" for key, value in params.items()]
    lines += list(OmegaConf.select(config, "hydra.overrides.task") or [])
    try:
        overrides = OverridesParser.create().parse_overrides(lines)
        grid = {}
        for override in overrides:
            values = 1
            if override.is_sweep_override():
                if not override.is_discrete_sweep():
                    return None
                values = len(list(override.sweep_string_iterator()))
            grid[override.get_key_element()] = values
    except Exception:  # an override only the sweeper can expand, e.g. glob() over a group
        return None
    return grid


def job_line(k: int, n: int | None, note: dict[str, Any], swept: set[str] | None) -> str:
    """The log line for the ``k``-th finished job of ``n`` (``None``: unknown).

    ``note`` is what :meth:`SweepProgress.on_job_end` wrote; the overrides shown are those of
    the ``swept`` keys (all but ``hydra.*`` ones when ``swept`` is ``None``).
    """
    shown = [
        line
        for line in note["overrides"]
        if (line.split("=", 1)[0] in swept if swept else not line.startswith("hydra."))
    ]
    count = f"{k}/{n}" if n else f"{k}"
    verb = {"completed": "done", "failed": "failed", "interrupted": "interrupted"}[note["status"]]
    head = f"job {count} {verb} ({note['seconds']:.0f} s): {' '.join(shown)}"
    if note["status"] == "failed":
        return f"{head}  {note['error']}"
    if note["status"] == "interrupted":
        return head
    acc = note["acc"]
    return f"{head}  ACC={100 * acc:.2f}%" if acc is not None else f"{head}  ACC=n/a"


class SweepProgress(Callback):
    """Log ``job k/N done (...): <swept overrides>  ACC=...`` as each job of a sweep ends.

    Parameters
    ----------
    poll_seconds
        How often the launching process looks for jobs that ended elsewhere.
    """

    def __init__(self, poll_seconds: float = 2.0) -> None:
        if not poll_seconds > 0:
            raise ValueError(f"sweep_progress: poll_seconds must be positive, got {poll_seconds}")
        self.poll_seconds = poll_seconds
        # Set by on_multirun_start and carried to the jobs when the launcher pickles this
        # callback with Hydra's context; None outside multirun.
        self.notes_dir: Path | None = None
        self.total: int | None = None
        self.swept: set[str] | None = None
        self._job_started = 0.0
        # Only in the launching process (dropped when pickled).
        self._seen: set[str] = set()
        self._lock: threading.Lock | None = None
        self._stop: threading.Event | None = None
        self._watcher: threading.Thread | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_seen=set(), _lock=None, _stop=None, _watcher=None)
        return state

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Launching process: count the jobs and start watching for their notes."""
        grid = sweep_grid(config)
        self.total = math.prod(grid.values()) if grid is not None else None
        self.swept = {key for key, n in grid.items() if n > 1} if grid is not None else None
        sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()
        self.notes_dir = sweep_dir / NOTES_FOLDER / uuid.uuid4().hex
        self.notes_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="sweep-progress", daemon=True)
        self._watcher.start()
        # A failed job makes the sweep raise after its batch, with no on_multirun_end.
        atexit.register(self._finish)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Where the job runs: note the time."""
        self._job_started = time.monotonic()

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        """Where the job runs: leave the note the launching process reports."""
        if self.notes_dir is None:  # not a multirun
            return
        # UNKNOWN: the job ended without a result, as when Ctrl-C stops it (``python -m
        # cl_bayes`` then exits with code 130). It was interrupted; it did not fail.
        status = {JobStatus.COMPLETED: "completed", JobStatus.FAILED: "failed"}.get(
            job_return.status, "interrupted"
        )
        # Read directly: the public ``return_value`` re-raises a failed job's exception and
        # refuses an UNKNOWN status.
        value = job_return._return_value
        acc = status == "completed" and isinstance(value, (int, float))
        note = {
            "num": int(config.hydra.job.num),
            "overrides": list(job_return.overrides or []),
            "status": status,
            "acc": float(value) if acc else None,
            "error": f"{type(value).__name__}: {value}" if status == "failed" else None,
            "seconds": time.monotonic() - self._job_started,
        }
        write_json_atomic(self.notes_dir / f"job{note['num']}.json", note)
        if self._watcher is not None:  # the basic launcher: report at once, in order
            self._report_new()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Launching process: report what is left and stop watching."""
        self._finish()
        atexit.unregister(self._finish)

    def _watch(self) -> None:
        assert self._stop is not None
        while not self._stop.wait(self.poll_seconds):
            self._report_new()

    def _finish(self) -> None:
        if self._watcher is None:
            return
        assert self._stop is not None
        self._stop.set()
        self._watcher.join()
        self._watcher = None
        self._report_new()
        shutil.rmtree(self.notes_dir, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.notes_dir.parent.rmdir()  # only when no other sweep uses the folder

    def _report_new(self) -> None:
        assert self._lock is not None and self.notes_dir is not None
        with self._lock:
            try:
                paths = sorted(self.notes_dir.glob("job*.json"), key=lambda p: p.stat().st_mtime)
            except OSError:
                return
            for path in paths:
                if path.name in self._seen:
                    continue
                try:
                    note = json.loads(path.read_text())
                except (OSError, ValueError):
                    continue  # notes are written atomically: try again at the next poll
                self._seen.add(path.name)
                log.info(job_line(len(self._seen), self.total, note, self.swept))
