"""The continual-learning loop: build the pieces, train task by task, fill R, checkpoint, record.

``R[i, j]`` is the accuracy on task ``j`` after training through task ``i`` (see
``cl_bayes.metrics``). After every task the run state is checkpointed and the record
rewritten, so a crash loses at most the task in progress and ``resume=<run dir>``
continues from the next task with bit-identical results. However the loop ends, the record's
final ``status`` says how: ``completed``; ``failed`` (an error, a diverged loss); or
``interrupted`` (Ctrl-C, SIGTERM, a ``SystemExit`` such as submitit's after requeueing a
pre-empted SLURM job, submitit's ``UncompletedJobError`` at a SLURM time limit).
"""

from __future__ import annotations

import json
import logging
import random
import signal
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from cl_bayes import checkpoint, metrics
from cl_bayes.config import check_config, instantiate
from cl_bayes.cuda_graphs import asked_for, build_optimizer, replayable, use_cuda_graphs
from cl_bayes.data import LabelledData, TaskSequence
from cl_bayes.errors import ConfigError, TrainingDiverged
from cl_bayes.evaluation import (
    MATRICES,
    detection_auroc,
    detection_positions,
    evaluate,
    unseen_scores,
)
from cl_bayes.loggers.base import Logger
from cl_bayes.methods.base import Method
from cl_bayes.record import (
    LOCAL_KEYS,
    RECORD_NAME,
    device_name,
    peak_memory_mb,
    start_peak_memory,
    utc_now,
    versions,
    write_json_atomic,
)
from cl_bayes.scenario import Scenario
from cl_bayes.summary import format_report, summarize
from cl_bayes.training import fit

log = logging.getLogger(__name__)


class RunInterrupted(KeyboardInterrupt):
    """SIGTERM (e.g. a cluster pre-empting the job), handled like Ctrl-C."""


# What submitit raises in a SLURM job that reached its time limit and is not requeued
# (``submitit.core.utils.UncompletedJobError``), matched by name to keep submitit optional.
TIMED_OUT_ERROR = "UncompletedJobError"


def run(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    """Run one continual-learning experiment; returns its record (also written to disk)."""
    check_config(cfg)
    state = None
    if cfg.resume:
        output_dir, state, cfg = _load_resume(cfg)
        if state["record"]["tasks_completed"] >= state["record"]["n_tasks"]:
            return _completed(output_dir, state["record"])
    else:
        _check_fresh_run_dir(output_dir)
    _check_writable(output_dir, "the run's output directory (hydra.run.dir)")
    _check_writable(Path(cfg.results_dir) / "runs", "results_dir")
    joint_R = _joint_reference(cfg)
    device = resolve_device(cfg.device, job_number())
    if device.index is not None:
        # The job's GPU becomes the current one, so that what runs on the current GPU (streams,
        # synchronisation, cuBLAS handles) runs on it, and no context is opened on GPU 0.
        torch.cuda.set_device(device)
    asked_for(cfg.train.get("cuda_graphs", "auto"), device)  # true on a CPU: fail before loading
    set_flush_denormal(cfg.get("flush_denormal", True))
    memory_scope = start_peak_memory(device)  # this run's own peak, not the process's
    seed_everything(cfg.seed)

    sequence: TaskSequence = instantiate(
        cfg.task, root=cfg.data.root, download=cfg.data.download, device=device, seed=cfg.seed
    )
    scenario = Scenario.parse(cfg.scenario)
    scenario.check(sequence)
    T = sequence.n_tasks
    train_sets = [scenario.labelled(sequence, t, "train") for t in range(T)]
    eval_sets = [scenario.labelled(sequence, t, cfg.evaluate_on) for t in range(T)]
    model = instantiate(
        cfg.model,
        input_shape=list(sequence.input_shape),
        head_sizes=scenario.head_sizes(sequence),
    ).to(device)
    method: Method = instantiate(cfg.method)
    method_name = type(method).__module__.rsplit(".", 1)[-1]
    cuda_graph = use_cuda_graphs(cfg.train.get("cuda_graphs", "auto"), device, method)
    method.cuda_graph = cuda_graph  # the method's own phases build their own optimisers
    kept_optimizer = _kept_optimizer(cfg, method, method_name, model, cuda_graph)
    logger: Logger = instantiate(cfg.logger)

    if state is None:
        record = _new_record(cfg, sequence, scenario, method_name, device, T)
        R = np.full((T, T), np.nan)
        _add_uncertainty_entries(record, T)
        # Untrained-model accuracy, the FWT baseline: only where FWT applies.
        record["baseline_accuracy"] = [
            evaluate(method, model, eval_sets[j], scenario.n_outputs(sequence, j)).accuracy
            if not scenario.has_untrained_heads
            else None
            for j in range(T)
        ]
    else:
        record = state["record"]
        R = np.array(state["accuracy_matrix"], dtype=float)
        _add_uncertainty_entries(record, T)  # a checkpoint written before they were measured
        model.load_state_dict(state["model"])
        method.load_state_dict(checkpoint.to_device(state["method"], device))
        if kept_optimizer is not None:  # its state moves to the parameters' device
            kept_optimizer.load_state_dict(state["optimizer"])
        checkpoint.set_rng_state(state["rng"])
        log.info(f"Resuming {record['run_id']} after task {record['tasks_completed']}/{T}")
    record["status"] = "running"
    output_dir.mkdir(parents=True, exist_ok=True)  # checked above, created once data loaded
    record_paths = [
        output_dir / RECORD_NAME,
        Path(cfg.results_dir) / "runs" / f"{record['run_id']}.json",
    ]
    record["record_path"] = str(record_paths[0])

    def save_record(status: str, error: str | None = None) -> None:
        k = record["tasks_completed"]
        record.update(
            status=status,
            error=error,
            accuracy_matrix=R.tolist(),
            summary=summarize(
                R[:k],
                record["baseline_accuracy"],
                not scenario.has_untrained_heads,
                joint_R,
                record["uncertainty"],
                record["unseen_auroc"],
            ),
            peak_memory_mb=peak_memory_mb(device, memory_scope),
            updated_at=utc_now(),
        )
        for path in record_paths:
            write_json_atomic(path, record)

    previous_handler = _handle_sigterm()
    try:
        logger.start(record, output_dir)
        for t in range(record["tasks_completed"], T):
            data = method.training_data(t, train_sets[: t + 1])
            method.before_task(model, t, data)
            started = time.perf_counter()
            train_task(
                cfg, method, model, data, t, T, logger, cuda_graph, optimizer=kept_optimizer
            )
            method.after_task(model, t, data)
            record["train_seconds"].append(time.perf_counter() - started)

            started = time.perf_counter()
            n_outputs = scenario.n_outputs(sequence, t)
            # Tasks not yet trained are tested only where their outputs are shared and
            # trained (domain-incremental); elsewhere R[t, j > t] stays unmeasured (NaN).
            tested = range(T) if not scenario.has_untrained_heads else range(t + 1)
            evaluations = {j: evaluate(method, model, eval_sets[j], n_outputs) for j in tested}
            for j, result in evaluations.items():
                R[t, j] = result.accuracy
                for name, value in result.matrix_entries().items():
                    record["uncertainty"][name][t][j] = value
            record["reliability_bins"].append(
                metrics.pool_bins([evaluations[j].bins for j in range(t + 1)])
            )
            if t + 1 < T:
                # Unseen-task detection: (part of) the next task's data against the seen
                # tasks' data; scored by this row's evaluation where it tests that task.
                positions = detection_positions(
                    len(eval_sets[t + 1]), cfg.get("unseen_examples"), eval_sets[t + 1].y.device
                )
                unseen = (
                    evaluations[t + 1].scores.subset(positions)
                    if t + 1 in evaluations
                    else unseen_scores(
                        method, model, eval_sets[t + 1].subset(positions), eval_sets[t]
                    )
                )
                seen = [evaluations[j].scores for j in range(t + 1)]
                for name, value in detection_auroc(seen, unseen).items():
                    record["unseen_auroc"][name].append(value)
            record["eval_seconds"].append(time.perf_counter() - started)
            record["tasks_completed"] = t + 1
            log.info(
                f"after task {t + 1}/{T}: accuracy on tasks 1..{t + 1} = "
                + " ".join(f"{100 * a:.2f}" for a in R[t, : t + 1])
            )
            saved = {
                "config": OmegaConf.to_container(cfg, resolve=True),
                "record": record,
                "accuracy_matrix": R.tolist(),
                "model": model.state_dict(),
                "method": method.state_dict(),
                "rng": checkpoint.rng_state(),
            }
            if kept_optimizer is not None:
                saved["optimizer"] = kept_optimizer.state_dict()
            checkpoint.save(output_dir / checkpoint.CHECKPOINT_NAME, saved)
            save_record("running")
            logger.log_task(t, record)
        save_record("completed")
    except TrainingDiverged as error:
        save_record("failed", str(error))
        raise
    except KeyboardInterrupt:
        save_record("interrupted", "interrupted")
        raise
    except Exception as error:
        timed_out = type(error).__name__ == TIMED_OUT_ERROR  # stopped, not failed
        save_record("interrupted" if timed_out else "failed", f"{type(error).__name__}: {error}")
        raise
    except BaseException as error:
        # SystemExit, e.g. submitit's exit after requeueing a pre-empted SLURM job: the run
        # did not fail, it was stopped, and the completed tasks can be resumed.
        save_record("interrupted", f"{type(error).__name__}: {_exit_reason(error)}")
        raise
    finally:
        _restore_sigterm(previous_handler)
        logger.finish(record)
    log.info(format_report(record))
    return record


def _kept_optimizer(
    cfg: DictConfig, method: Method, method_name: str, model: torch.nn.Module, cuda_graph: bool
) -> torch.optim.Optimizer | None:
    """The optimiser every task trains with (``train.reset_optimizer=false``), else ``None``.

    ``None``: :func:`train_task` builds a fresh one for each task. A kept optimiser is never
    captured in a CUDA graph; a method that re-initialises the network at every task
    (:attr:`Method.restarts_model`) refuses it.
    """
    if cfg.train.get("reset_optimizer", True):
        return None
    if method.restarts_model:
        raise ConfigError(
            f"train.reset_optimizer=false cannot train {method_name}: it re-initialises the "
            f"network at every task, which one optimiser's state carried across tasks would "
            f"not match. Use train.reset_optimizer=true."
        )
    if cuda_graph:
        log.info(
            "train.cuda_graphs: the optimiser is kept across tasks (train.reset_optimizer="
            "false), so the tasks' training steps run eagerly."
        )
    return build_optimizer(instantiate(cfg.optimizer), model.parameters(), captured=False)


def train_task(
    cfg: DictConfig,
    method: Method,
    model: torch.nn.Module,
    data: LabelledData,
    t: int,
    T: int,
    logger: Logger | None = None,
    cuda_graph: bool = False,
    optimizer: torch.optim.Optimizer | None = None,
) -> list[float]:
    """Train ``model`` on ``data`` with ``method.train_step`` and a fresh optimiser.

    With ``optimizer``, that one trains instead, its state kept from earlier tasks
    (``train.reset_optimizer=false``); it is never captured.

    Returns the epoch losses. While ``logger`` is active it gets every epoch's loss, with
    the method's ``epoch_metrics(model)`` (VCL: its KL term), as :class:`EpochMetrics`.
    With ``cuda_graph`` (the run's :func:`~cl_bayes.cuda_graphs.use_cuda_graphs`), the step
    is replayed from a CUDA graph where the task's data and the optimiser allow it
    (:func:`~cl_bayes.cuda_graphs.replayable`), with the optimiser built to be captured.
    """
    if len(data) == 0:
        log.info(f"task {t + 1}/{T}: {type(method).__name__} trains on no data of this task")
        return []

    def log_epoch(epoch: int, loss: float) -> None:
        if logger.active:  # a logger that failed has turned itself off
            logger.log_epoch(t, epoch, EpochMetrics(loss, method, model))

    label = f"task {t + 1}/{T}"
    if optimizer is None:
        make_optimizer = instantiate(cfg.optimizer)
        cuda_graph = cuda_graph and replayable(data, make_optimizer, label)
        optimizer = build_optimizer(make_optimizer, model.parameters(), captured=cuda_graph)
    else:
        cuda_graph = False
    return fit(
        model,
        data,
        method.train_step,
        optimizer,
        cfg.train.epochs,
        cfg.train.batch_size,
        label=label,
        progress=cfg.progress,
        on_epoch=log_epoch if logger is not None and logger.active else None,
        steps=cfg.train.get("steps"),
        cuda_graph=cuda_graph,
    )


class EpochMetrics(Mapping[str, float]):
    """An epoch's ``loss`` and the method's ``epoch_metrics(model)``, computed on first read.

    The logger reads them inside its own failure handling, so an error of the method's
    ``epoch_metrics`` turns logging off (one warning) like any logging error, and never
    stops the run.
    """

    def __init__(self, loss: float, method: Method, model: torch.nn.Module) -> None:
        self._loss, self._method, self._model = loss, method, model
        self._metrics: dict[str, float] | None = None

    def _read(self) -> dict[str, float]:
        if self._metrics is None:
            self._metrics = {"loss": self._loss, **self._method.epoch_metrics(self._model)}
        return self._metrics

    def __getitem__(self, name: str) -> float:
        return self._read()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._read())

    def __len__(self) -> int:
        return len(self._read())


def set_flush_denormal(on: bool) -> None:
    """Flush subnormal floats to zero in CPU arithmetic (``on``), or keep them.

    A setting of the whole process (with 2 threads, also once torch's thread pool had started,
    a matmul of subnormal inputs gave zeros), so every run sets it: an earlier run in the same
    process does not decide. Where the CPU cannot flush (torch returns False), one info line
    says so.
    """
    if not torch.set_flush_denormal(on) and on:
        log.info("flush_denormal: this CPU cannot flush subnormal floats; they are kept.")


def resolve_device(name: str, job_number: int | None = None) -> torch.device:
    """The ``torch.device`` of ``device=<name>``.

    ``auto`` is :func:`auto_device` with this machine's visible GPUs, given ``job_number``
    (this job's number in a multirun, ``None`` for a single run); any other name (``cpu``,
    ``cuda``, ``cuda:1``) is taken as it is.
    """
    if name == "auto":
        return auto_device(job_number, torch.cuda.device_count())
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name} was asked for but CUDA is not available: use device=cpu.")
    return device


def auto_device(job_number: int | None, gpu_count: int) -> torch.device:
    """The device ``device=auto`` stands for: jobs of a multirun take the GPUs in turn.

    Parameters
    ----------
    job_number
        The job's number in a multirun (Hydra's ``hydra.job.num``, from 0); ``None`` for a
        single run.
    gpu_count
        GPUs the job can see (``torch.cuda.device_count()``, after ``CUDA_VISIBLE_DEVICES``).

    Returns
    -------
    torch.device
        The CPU without a GPU; ``cuda`` (the current GPU, GPU 0) for a single run or with one
        GPU; ``cuda:<job_number mod gpu_count>`` for a multirun job with several GPUs, so that
        jobs run at once (``hydra/launcher=gpu_shared``) share the GPUs out evenly: they are
        started in order of their numbers.
    """
    if gpu_count == 0:
        return torch.device("cpu")
    if job_number is None or gpu_count == 1:
        return torch.device("cuda")
    return torch.device("cuda", job_number % gpu_count)


def job_number() -> int | None:
    """The number of the running job in a Hydra multirun (``hydra.job.num``); else ``None``."""
    if not HydraConfig.initialized():
        return None
    hydra_config = HydraConfig.get()
    if hydra_config.mode != RunMode.MULTIRUN:
        return None
    return int(hydra_config.job.num)


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _new_record(cfg, sequence, scenario, method_name, device, T) -> dict[str, Any]:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run_id = (
        f"{sequence.name}-{method_name}-{scenario.value}-seed{cfg.seed}-{stamp}"
        f"-{uuid.uuid4().hex[:6]}"
    )
    return {
        "run_id": run_id,
        "status": "running",
        "task": sequence.name,
        "method": method_name,
        "scenario": scenario.value,
        "protocol": cfg.protocol,
        "seed": cfg.seed,
        "device": str(device),
        "device_name": device_name(device),
        "n_tasks": T,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "tasks_completed": 0,
        "train_seconds": [],
        "eval_seconds": [],
        "versions": versions(),
        "started_at": utc_now(),
    }


def _add_uncertainty_entries(record: dict[str, Any], T: int) -> None:
    """The record's uncertainty measures, to be filled after each task, where not there yet.

    ``uncertainty``: a ``(T, T)`` matrix per measure of :data:`~cl_bayes.evaluation.MATRICES`,
    laid out as R; ``reliability_bins``: per row, the bins of tasks ``0 .. i`` pooled;
    ``unseen_auroc``: per row but the last, the AUROC of detecting task ``i + 1``'s data.
    Rows completed before (a run resumed from an older checkpoint) stay unmeasured.
    """
    done = record["tasks_completed"]
    record.setdefault("uncertainty", {name: np.full((T, T), np.nan).tolist() for name in MATRICES})
    record.setdefault("reliability_bins", [None] * done)
    record.setdefault(
        "unseen_auroc", {name: [np.nan] * done for name in ("entropy", "mutual_information")}
    )


def _completed(run_dir: Path, record: dict[str, Any]) -> dict[str, Any]:
    """Say that the run in ``run_dir`` has no task left; its record, read and left untouched."""
    log.info(
        f"{record['run_id']} is complete ({record['n_tasks']} of {record['n_tasks']} tasks): "
        f"nothing to resume; {run_dir} is left as it is."
    )
    try:
        return json.loads((run_dir / RECORD_NAME).read_text())
    except (OSError, ValueError):
        return record


def _check_fresh_run_dir(output_dir: Path) -> None:
    """Refuse to start a new run where another run's checkpoint or record would be overwritten."""
    for name in (checkpoint.CHECKPOINT_NAME, RECORD_NAME):
        if (output_dir / name).exists():
            raise ConfigError(
                f"{output_dir} already holds another run's {name}: continue that run with "
                f"resume={output_dir}, or start this one elsewhere (hydra.run.dir=<new folder>)."
            )


def _check_writable(folder: Path, what: str) -> None:
    """Fail now, before any data loads, where ``folder`` could not be created or written.

    Writes (and deletes) a file in ``folder``, or in its nearest existing parent where it
    does not exist yet; creates nothing, so a start that fails later leaves no empty folder.
    """
    existing = folder.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(0, f"{existing} is not a folder")
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".write-check-"):
            pass
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ConfigError(
            f"{what}: cannot write to {folder} ({reason}). Choose a folder you can write to."
        ) from None


def _load_resume(cfg: DictConfig) -> tuple[Path, dict[str, Any], DictConfig]:
    run_dir = Path(cfg.resume).expanduser().resolve()
    path = run_dir / checkpoint.CHECKPOINT_NAME
    if not path.is_file():
        raise ConfigError(
            f"resume={cfg.resume}: no checkpoint at {path}. Point resume at the output "
            f"directory of a run that completed at least one task."
        )
    state = checkpoint.load(path)
    saved = OmegaConf.create(state["config"])
    changed = _changed_overrides(cfg, saved)
    if changed:
        log.warning(
            f"resume: the checkpoint's config is used; ignoring the changed settings "
            f"{', '.join(changed)}"
        )
    for key in LOCAL_KEYS:
        saved[key] = cfg[key]
    return run_dir, state, saved


def _changed_overrides(cfg: DictConfig, saved: DictConfig) -> list[str]:
    """The command line's settings that differ from the checkpoint's config, as ``key=value``.

    Only what the user gave on the command line counts (Hydra's overrides; none when ``run``
    is called without Hydra): the defaults of a bare ``resume=<dir>`` command differ from
    most runs' settings without the user having changed anything. Machine-local keys
    (:data:`~cl_bayes.record.LOCAL_KEYS`) are taken from the command line and are not listed;
    an override that names no config key (``+experiment=...``) is listed as given.
    """
    if not HydraConfig.initialized():
        return []
    changed = []
    for override in HydraConfig.get().overrides.task:
        key = override.split("=", 1)[0].lstrip("+~")
        if key.split(".", 1)[0] in LOCAL_KEYS:
            continue
        current = _setting(cfg, key)
        if current is _MISSING or _setting(saved, key) != current:
            changed.append(override)
    return sorted(changed)


_MISSING = object()


def _setting(cfg: DictConfig, key: str) -> Any:
    """The resolved value at the dotted ``key`` (plain containers for nodes), or ``_MISSING``."""
    value = OmegaConf.select(cfg, key, default=_MISSING)
    if OmegaConf.is_config(value):
        return OmegaConf.to_container(value, resolve=True)
    return value


def _joint_reference(cfg: DictConfig) -> np.ndarray | None:
    """Accuracy matrix of a ``method=joint`` record, for the intransigence measure."""
    if not cfg.joint_reference:
        return None
    path = Path(cfg.joint_reference)
    try:
        reference = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ConfigError(f"joint_reference={path}: cannot read a run record ({error}).") from None
    if reference.get("method") != "joint" or reference.get("status") != "completed":
        raise ConfigError(f"joint_reference={path} is not a completed method=joint run record.")
    if reference.get("scenario") != cfg.scenario:
        raise ConfigError(
            f"joint_reference={path} was run with scenario={reference.get('scenario')}, "
            f"this run uses scenario={cfg.scenario}."
        )
    return np.array(reference["accuracy_matrix"], dtype=float)


def _exit_reason(error: BaseException) -> str:
    """What stopped the run: a ``SystemExit``'s exit code or message, else the error's message."""
    if isinstance(error, SystemExit):
        code = 0 if error.code is None else error.code
        return f"exit code {code}" if isinstance(code, int) else str(code)
    return str(error) or "no message"


def _handle_sigterm():
    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(signum, frame):
        raise RunInterrupted(f"signal {signum}")

    return signal.signal(signal.SIGTERM, interrupt)


def _restore_sigterm(previous) -> None:
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)
