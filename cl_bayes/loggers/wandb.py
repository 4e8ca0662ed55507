"""Weights & Biases logging: ``python -m cl_bayes logger=wandb [logger.mode=offline]``.

One W&B run per cl_bayes run, whose id and name are the record's ``run_id`` (a resumed run
continues the same W&B run). Where it goes is W&B's choice unless the config says: with
``logger.mode``, ``logger.project`` and ``logger.entity`` unset (the default), ``WANDB_MODE``
(or W&B's settings files; else ``online``), ``WANDB_PROJECT`` (else ``cl_bayes``) and
``WANDB_ENTITY`` (or the settings files; else the account's default) decide; a value set in
the config wins over them. What it logs:

- config: the resolved configuration, as in the record;
- ``train/loss`` after every epoch (VCL also ``train/kl``, ``KL(q || prior)`` in nats, and
  ``train/kl_term``, its part ``beta * kl / N_t`` of the loss), against ``epoch``, counted
  over the whole run (epoch ``e`` of task ``t`` is ``t * train.epochs + e``), with ``task``;
- ``eval/acc_task_<j>`` for every task ``j`` seen so far and ``eval/average_accuracy``
  after every task, against ``task`` (numbered from 0, as in the record), with the row's
  calibration (``eval/nll``, ``eval/brier``, ``eval/ece``, ``eval/entropy``, for sampling
  methods ``eval/mutual_information``: means over the seen tasks), the next task's detection
  AUROC (``eval/unseen_auroc``, ``eval/unseen_auroc_mi``) and a reliability diagram
  (``eval/reliability``, an image);
- at the end: the accuracy matrix as ``accuracy_matrix`` (a table: row ``after_task`` i,
  columns ``task_<j>``) and ``accuracy_heatmap`` (an image), and each calibration matrix
  of the record's ``uncertainty`` that was measured as ``<name>_matrix`` (``nll_matrix``,
  ``brier_matrix``, ``ece_matrix``, ``entropy_matrix``, ``mutual_information_matrix``); the
  summary metrics of ``cl_bayes.summary.SUMMARY_METRICS`` (``acc``, ``bwt``, ...; where defined),
  ``tasks_completed`` and ``status`` in the run summary; the record JSON as an artifact of
  type ``run-record``.

An online start that cannot reach W&B (no API key, no network, the server not answering
within wandb's ``init_timeout``) starts the run offline in the same directory instead, with one
warning that gives the ``wandb sync <offline run folder>`` command that uploads it later. Any
other error while logging (from wandb; or from computing the metrics handed to
:meth:`WandbLogger.log_epoch`, such as a method's ``epoch_metrics``) is logged as one warning
and turns W&B logging off for the rest of the run, which goes on and writes its record as usual.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shlex
import shutil
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from cl_bayes.errors import ConfigError
from cl_bayes.loggers.base import Logger
from cl_bayes.summary import SUMMARY_METRICS

log = logging.getLogger(__name__)

MODES = ("online", "offline", "disabled")
# What wandb accepts in WANDB_MODE (`wandb.Settings.mode`); `dryrun` is offline, `run` online.
WANDB_MODES = (*MODES, "dryrun", "run", "shared")
DEFAULT_PROJECT = "cl_bayes"
RECORD_ARTIFACT_TYPE = "run-record"
MAX_GROUP_LENGTH = 128  # the W&B server's limit


class WandbLogger(Logger):
    """Mirror a run to Weights & Biases.

    Parameters
    ----------
    project
        W&B project; ``None``: ``WANDB_PROJECT``, else ``cl_bayes`` (not W&B's
        ``uncategorized``, and a project in a W&B settings file is not read).
    entity
        W&B entity; ``None``: ``WANDB_ENTITY``, else W&B's settings, else the account's default.
    group
        Runs shown together; ``None`` groups the jobs of a Hydra multirun by their sweep
        directory (its last two parts, e.g. ``2026-11-22/10-00-00``; see :func:`sweep_group`)
        and leaves single runs ungrouped.
    tags
        Labels for filtering runs.
    mode
        ``online`` (streams to the server; offline instead if it cannot reach it),
        ``offline`` (writes the run under ``dir`` for ``wandb sync``) or ``disabled``
        (nothing, no wandb import); ``None``: ``WANDB_MODE``, else W&B's settings, else
        ``online``.
    dir
        Folder that receives W&B's ``wandb/`` folder; ``None``: the run's output directory.
    """

    def __init__(
        self,
        project: str | None = None,
        entity: str | None = None,
        group: str | None = None,
        tags: Sequence[str] = (),
        mode: str | None = None,
        dir: str | None = None,
    ):
        if mode is not None and mode not in MODES:
            raise ConfigError(f"logger.mode must be one of {', '.join(MODES)}, got {mode!r}.")
        environment_mode = os.environ.get("WANDB_MODE")
        # wandb reads WANDB_MODE even when given a mode, and rejects a bad one with a traceback.
        if mode != "disabled" and environment_mode not in (None, *WANDB_MODES):
            raise ConfigError(
                f"WANDB_MODE must be one of {', '.join(WANDB_MODES)}, got {environment_mode!r}:"
                f" correct it or unset it."
            )
        if project is not None and (not project or not isinstance(project, str)):
            raise ConfigError(f"logger.project must name a W&B project, got {project!r}.")
        if isinstance(tags, str) or any(not isinstance(tag, str) or not tag for tag in tags):
            raise ConfigError(
                f"logger.tags must be a list of words, e.g. [vcl,tiny], got {tags!r}."
            )
        self.project, self.entity, self.group = project, entity, group
        self.tags, self.mode = [str(tag) for tag in tags], mode
        self.dir = None if dir is None else Path(dir).expanduser()
        self._run: Any = None  # the wandb Run while logging works, else None
        self._epochs_per_task = 1

    @property
    def active(self) -> bool:
        """Whether a W&B run is open and working."""
        return self._run is not None

    def start(self, record: dict[str, Any], output_dir: Path) -> None:
        """Open the W&B run ``record["run_id"]`` (resumed if it exists) and log the config.

        If an online start cannot reach W&B, the run starts offline instead (one warning).
        """
        if self._requested_mode() == "disabled":
            return
        directory = self.dir if self.dir is not None else output_dir
        online_error = None
        with self._guard("starting the W&B run"):
            self._epochs_per_task = record["config"]["train"]["epochs"]
            try:
                self._open(record, directory, self.mode)
            except Exception as error:
                if self._requested_mode() == "offline" or not cannot_reach_wandb(error):
                    raise
                online_error = error
        if online_error is None:
            return
        online_failed = f"the online start failed ({describe(online_error)})"
        with self._guard(f"{online_failed}, and starting offline"):
            import wandb

            # The failed start may leave the run's id taken in wandb's service process, so
            # that the offline start fails with "run ID ... is in use" (wandb/wandb#9865):
            # stop the service; the next start runs a fresh one. This would also end another
            # W&B run open in this process; cl_bayes opens one at a time.
            wandb.teardown()
            self._open(record, directory, "offline")
            folder = shlex.quote(str(Path(self._run.dir).parent))
            log.warning(
                f"W&B could not start online ({describe(online_error)}). Logging continues "
                f"offline in {folder}; upload it later with: wandb sync {folder}"
            )

    def log_epoch(self, task_id: int, epoch: int, metrics: Mapping[str, float]) -> None:
        """Log ``train/<name>`` for each of ``metrics`` at the run-wide epoch.

        ``metrics`` is read inside the failure handling: an error while reading it (the loop
        passes a :class:`cl_bayes.run.EpochMetrics`, computed on first read) turns logging off.
        """
        if self._run is None:
            return
        with self._guard("logging an epoch"):
            self._run.log(
                {
                    **{f"train/{name}": float(value) for name, value in metrics.items()},
                    "task": task_id,
                    "epoch": task_id * self._epochs_per_task + epoch,
                }
            )

    def log_task(self, task_id: int, record: dict[str, Any]) -> None:
        """Log row ``task_id``'s accuracies, calibration and detection, and its reliability.

        Against ``task``: ``eval/acc_task_<j>`` for each task seen so far and their mean
        ``eval/average_accuracy``; the means over the seen tasks of the row's ``eval/nll``,
        ``eval/brier``, ``eval/ece``, ``eval/entropy`` and (sampling methods)
        ``eval/mutual_information``; ``eval/unseen_auroc`` (and ``eval/unseen_auroc_mi``) for
        the next task where there is one; and ``eval/reliability``, the diagram of the row's
        confidence bins pooled over the seen tasks.
        """
        if self._run is None:
            return
        with self._guard("logging a task's evaluation"):
            self._run.log(task_metrics(task_id, record, images=True))

    def finish(self, record: dict[str, Any]) -> None:
        """Log the matrix, the summary metrics and the record artifact, then close the run."""
        if self._run is None:
            return
        with self._guard("logging the final results"):
            self._log_results(record)
        run, self._run = self._run, None
        if run is not None:
            with self._guard("closing the W&B run"):
                run.finish(exit_code=0 if record["status"] == "completed" else 1)

    # -- helpers ---------------------------------------------------------------------------
    def _requested_mode(self) -> str | None:
        """``logger.mode``, else ``WANDB_MODE``; ``None``: W&B's settings files decide.

        wandb's aliases ``dryrun`` and ``run`` are read as ``offline`` and ``online``.
        """
        mode = self.mode or os.environ.get("WANDB_MODE")
        return {"dryrun": "offline", "run": "online"}.get(mode, mode)

    def _open(self, record: dict[str, Any], directory: Path, mode: str | None) -> None:
        """Start the wandb run of ``record`` in ``mode``, writing to ``directory``."""
        import wandb

        directory.mkdir(parents=True, exist_ok=True)
        self._run = wandb.init(
            project=self.project or os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT,
            entity=self.entity,
            group=self.group or sweep_group(),
            tags=self.tags,
            mode=mode,
            dir=str(directory),
            id=record["run_id"],
            name=record["run_id"],
            job_type=record["method"],
            config=record["config"],
            # Several runs in one process (a Hydra multirun) each get their own W&B run.
            reinit="create_new",
            resume="allow",
        )
        self._run.define_metric("train/*", step_metric="epoch")
        self._run.define_metric("eval/*", step_metric="task")

    def _log_results(self, record: dict[str, Any]) -> None:
        import wandb

        R = np.array(record["accuracy_matrix"], dtype=float)  # JSON nulls become NaN
        done = R[: record["tasks_completed"]]
        if len(done):
            tables = {
                f"{name}_matrix": matrix_table(np.asarray(matrix, dtype=float)[: len(done)])
                for name, matrix in record.get("uncertainty", {}).items()
                if not np.isnan(np.asarray(matrix, dtype=float)[: len(done)]).all()
            }
            self._run.log(
                {
                    "accuracy_matrix": matrix_table(done),
                    "accuracy_heatmap": wandb.Image(
                        accuracy_heatmap(done), caption="accuracy (%) on task j after task i"
                    ),
                    **tables,
                }
            )
        self._run.summary.update(summary_metrics(record))
        # A copy beside W&B's own files: the artifact keeps this version even if the run is
        # resumed and its record rewritten before `wandb sync`.
        snapshot = Path(self._run.dir).parent / "record.json"
        shutil.copyfile(record["record_path"], snapshot)
        artifact = wandb.Artifact(record["run_id"], type=RECORD_ARTIFACT_TYPE)
        artifact.add_file(str(snapshot), name="record.json", policy="immutable", skip_cache=True)
        self._run.log_artifact(artifact)

    @contextlib.contextmanager
    def _guard(self, action: str) -> Iterator[None]:
        """Turn any error of ``action`` into one warning and W&B logging off for this run."""
        try:
            yield
        except Exception as error:
            log.warning(
                f"W&B logging is off for the rest of this run: {action} failed "
                f"({describe(error)}). The run goes on; its record is written as usual."
            )
            run, self._run = self._run, None
            if run is not None:  # release what the broken run holds; it is marked failed
                with contextlib.suppress(Exception):
                    run.finish(exit_code=1)


def cannot_reach_wandb(error: Exception) -> bool:
    """Whether ``wandb.init`` failed for want of credentials or of an answer from the server.

    wandb raises ``UsageError`` when no API key is configured and it cannot prompt for one,
    ``CommError`` (``AuthenticationError`` among them) when the server refuses the key, cannot
    be reached or does not answer within ``init_timeout``; offline needs neither key nor
    server. A ``UsageError`` of another cause is rare with the arguments this logger passes;
    offline keeps the data then too, and if the offline start fails as well, logging is off.
    """
    from wandb.errors import CommError, UsageError

    return isinstance(error, (CommError, UsageError, ConnectionError, TimeoutError))


def describe(error: Exception) -> str:
    """``<type>: <message>``, for warnings."""
    return f"{type(error).__name__}: {error}"


def sweep_group() -> str | None:
    """In a Hydra multirun, the sweep directory's last two parts; ``None`` otherwise.

    Every job of one sweep gets the same group. With Hydra's default sweep directory,
    ``multirun/<date>/<time>``, that is e.g. ``2026-11-22/10-00-00``, different for sweeps
    started in different seconds. Sweeps given the same ``hydra.sweep.dir`` (or two fixed
    directories ending in the same two parts, e.g. ``a/sweeps/vcl`` and ``b/sweeps/vcl``)
    share one group: set ``logger.group`` to tell them apart.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    return "/".join(Path(hydra_cfg.sweep.dir).parts[-2:])[-MAX_GROUP_LENGTH:]


def summary_metrics(record: dict[str, Any]) -> dict[str, Any]:
    """The record's summary metrics that are defined, with its status and tasks completed."""
    summary = {"status": record["status"], "tasks_completed": record["tasks_completed"]}
    for metric in SUMMARY_METRICS:
        value = record["summary"].get(metric.key)
        if value is not None and math.isfinite(value):
            summary[metric.key] = float(value)
    return summary


def matrix_table(matrix: np.ndarray):
    """A ``(k, T)`` matrix laid out as R, as a ``wandb.Table``.

    Row ``after_task`` i, columns ``task_<j>``; unmeasured entries are empty.
    """
    import wandb

    return wandb.Table(
        columns=["after_task"] + [f"task_{j}" for j in range(matrix.shape[1])],
        data=[
            [i] + [None if math.isnan(a) else float(a) for a in row] for i, row in enumerate(matrix)
        ],
    )


def task_metrics(task_id: int, record: dict[str, Any], images: bool = False) -> dict[str, Any]:
    """What :meth:`WandbLogger.log_task` logs after task ``task_id`` (see there)."""
    seen = np.asarray(record["accuracy_matrix"], dtype=float)[task_id, : task_id + 1]
    logged: dict[str, Any] = {
        **{f"eval/acc_task_{j}": float(a) for j, a in enumerate(seen)},
        "eval/average_accuracy": float(seen.mean()),
        "task": task_id,
    }
    for name, matrix in record.get("uncertainty", {}).items():
        row = np.asarray(matrix, dtype=float)[task_id, : task_id + 1]
        if not np.isnan(row).any():
            logged[f"eval/{name}"] = float(row.mean())
    for name, key in (("entropy", "unseen_auroc"), ("mutual_information", "unseen_auroc_mi")):
        values = record.get("unseen_auroc", {}).get(name, [])
        if task_id < len(values) and is_finite(values[task_id]):
            logged[f"eval/{key}"] = float(values[task_id])
    bins = record.get("reliability_bins", [])
    if images and task_id < len(bins) and bins[task_id] and sum(bins[task_id]["count"]):
        import wandb

        from cl_bayes.report.plots import reliability_diagram

        title = f"after task {task_id} (tasks 0-{task_id})"
        logged["eval/reliability"] = wandb.Image(
            figure_pixels(reliability_diagram(bins[task_id], title)), caption=title
        )
    return logged


def is_finite(value: Any) -> bool:
    """A number that is neither ``None``, NaN nor infinite."""
    return isinstance(value, (int, float)) and math.isfinite(value)


def figure_pixels(figure) -> np.ndarray:
    """A matplotlib figure as an RGB image ``(height, width, 3)``, uint8 (no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def accuracy_heatmap(R: np.ndarray) -> np.ndarray:
    """The accuracy matrix ``(k, T)`` as an RGB image ``(height, width, 3)``, uint8.

    Drawn with matplotlib's Agg canvas directly (no pyplot: no global figure state).
    """
    from matplotlib.figure import Figure

    k, T = R.shape
    figure = Figure(figsize=(1.5 + 0.7 * T, 1.0 + 0.55 * k), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    image = axes.imshow(np.ma.masked_invalid(100 * R), vmin=0, vmax=100, cmap="viridis")
    if T <= 20:
        for i in range(k):
            for j in range(T):
                if not math.isnan(R[i, j]):
                    colour = "black" if R[i, j] > 0.6 else "white"
                    axes.text(j, i, f"{100 * R[i, j]:.1f}", ha="center", va="center", color=colour)
    axes.set_xticks(range(T))
    axes.set_yticks(range(k))
    axes.set_xlabel("tested on task j")
    axes.set_ylabel("after training task i")
    figure.colorbar(image, ax=axes, label="accuracy (%)")
    return figure_pixels(figure)
