"""The continual-learning loop: build the pieces, train task by task, fill R, checkpoint, record.

``R[i, j]`` is the accuracy on task ``j`` after training through task ``i`` (see
``cl_bayes.metrics``). After every task the run state is checkpointed and the record
rewritten, so a crash loses at most the task in progress and ``resume=<run dir>``
continues from the next task with bit-identical results.
"""

from __future__ import annotations

import json
import logging
import math
import random
import signal
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from cl_bayes import checkpoint
from cl_bayes.config import check_config
from cl_bayes.data import TaskSequence
from cl_bayes.errors import ConfigError, TrainingDiverged
from cl_bayes.methods.base import LabelledData, Method
from cl_bayes.record import (
    RECORD_NAME,
    peak_memory_mb,
    utc_now,
    versions,
    write_json_atomic,
)
from cl_bayes.scenario import Scenario
from cl_bayes.summary import format_report, summarize

log = logging.getLogger(__name__)

# Keys that say where things are on this machine rather than what the experiment is:
# a resumed run takes them from its own command line, everything else from the checkpoint.
LOCAL_KEYS = ("data", "results_dir", "progress", "resume", "device")


class RunInterrupted(KeyboardInterrupt):
    """SIGTERM (e.g. a cluster pre-empting the job), handled like Ctrl-C."""


def run(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    """Run one continual-learning experiment; returns its record (also written to disk)."""
    check_config(cfg)
    state = None
    if cfg.resume:
        output_dir, state, cfg = _load_resume(cfg)
    output_dir.mkdir(parents=True, exist_ok=True)
    joint_R = _joint_reference(cfg)
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)

    sequence: TaskSequence = instantiate(
        cfg.task, root=cfg.data.root, download=cfg.data.download, device=device, seed=cfg.seed
    )
    scenario = Scenario.parse(cfg.scenario)
    scenario.check(sequence)
    T = sequence.n_tasks
    train_sets = [labelled(sequence, scenario, t, "train") for t in range(T)]
    eval_sets = [labelled(sequence, scenario, t, cfg.evaluate_on) for t in range(T)]
    model = instantiate(
        cfg.model,
        in_features=int(np.prod(sequence.input_shape)),
        head_sizes=scenario.head_sizes(sequence),
    ).to(device)
    method: Method = instantiate(cfg.method)
    method_name = type(method).__module__.rsplit(".", 1)[-1]

    if state is None:
        record = _new_record(cfg, sequence, scenario, method_name, device, T)
        R = np.full((T, T), np.nan)
        record["baseline_accuracy"] = [
            evaluate(method, model, eval_sets[j], scenario.n_outputs(sequence, j))
            for j in range(T)
        ]
    else:
        record = state["record"]
        R = np.array(state["accuracy_matrix"], dtype=float)
        model.load_state_dict(state["model"])
        method.load_state_dict(state["method"])
        checkpoint.set_rng_state(state["rng"])
        log.info(f"Resuming {record['run_id']} after task {record['tasks_completed']}/{T}")
    record["status"] = "running"
    record_paths = [output_dir / RECORD_NAME, Path(cfg.results_dir) / "runs" / f"{record['run_id']}.json"]
    record["record_path"] = str(record_paths[0])

    def save_record(status: str, error: str | None = None) -> None:
        k = record["tasks_completed"]
        record.update(
            status=status,
            error=error,
            accuracy_matrix=R.tolist(),
            summary=summarize(R[:k], record["baseline_accuracy"], not scenario.has_untrained_heads, joint_R),
            peak_memory_mb=peak_memory_mb(device),
            updated_at=utc_now(),
        )
        for path in record_paths:
            write_json_atomic(path, record)

    previous_handler = _handle_sigterm()
    try:
        for t in range(record["tasks_completed"], T):
            data = method.training_data(t, train_sets)
            method.before_task(model, t, data)
            started = time.perf_counter()
            train_task(cfg, method, model, data, t, T)
            method.after_task(model, t, data)
            record["train_seconds"].append(time.perf_counter() - started)

            started = time.perf_counter()
            n_outputs = scenario.n_outputs(sequence, t)
            R[t] = [evaluate(method, model, eval_sets[j], n_outputs) for j in range(T)]
            record["eval_seconds"].append(time.perf_counter() - started)
            record["tasks_completed"] = t + 1
            log.info(
                f"after task {t + 1}/{T}: accuracy on tasks 1..{t + 1} = "
                + " ".join(f"{100 * a:.2f}" for a in R[t, : t + 1])
            )
            checkpoint.save(
                output_dir / checkpoint.CHECKPOINT_NAME,
                {
                    "config": OmegaConf.to_container(cfg, resolve=True),
                    "record": record,
                    "accuracy_matrix": R.tolist(),
                    "model": model.state_dict(),
                    "method": method.state_dict(),
                    "rng": checkpoint.rng_state(),
                },
            )
            save_record("running")
        save_record("completed")
    except TrainingDiverged as error:
        save_record("failed", str(error))
        raise
    except KeyboardInterrupt:
        save_record("interrupted", "interrupted")
        raise
    except Exception as error:
        save_record("failed", f"{type(error).__name__}: {error}")
        raise
    finally:
        _restore_sigterm(previous_handler)
    log.info(format_report(record))
    return record


def train_task(
    cfg: DictConfig, method: Method, model: torch.nn.Module, data: LabelledData, t: int, T: int
) -> None:
    """Train ``model`` on ``data`` for ``cfg.train.epochs`` epochs with a fresh optimiser.

    Minibatches are drawn by indexing the in-memory tensors with a random permutation;
    ``train.batch_size: null`` trains on the whole task in one batch per step.
    """
    optimizer = instantiate(cfg.optimizer)(model.parameters())
    n = len(data)
    batch_size = cfg.train.batch_size or n
    model.train()
    bar = tqdm(
        range(cfg.train.epochs), desc=f"task {t + 1}/{T}", disable=not cfg.progress, leave=False
    )
    for epoch in bar:
        total = torch.zeros((), device=data.y.device)
        if batch_size >= n:
            batches = [data]
        else:
            order = torch.randperm(n, device=data.y.device)
            batches = (data.subset(index) for index in order.split(batch_size))
        for batch in batches:
            loss = method.loss(model, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach() * len(batch)
        epoch_loss = (total / n).item()  # one device sync per epoch
        if not math.isfinite(epoch_loss):
            raise TrainingDiverged(
                f"Training loss became {epoch_loss} in task {t + 1}/{T}, epoch {epoch + 1}: "
                f"try a lower optimizer.lr. The record of the {t} completed task(s) is kept."
            )
        bar.set_postfix(loss=f"{epoch_loss:.4f}")
    bar.close()


@torch.no_grad()
def evaluate(
    method: Method, model: torch.nn.Module, data: LabelledData, n_outputs: int, chunk: int = 10000
) -> float:
    """Accuracy (fraction correct) of ``method``'s predictions over the first ``n_outputs``."""
    model.eval()
    correct = 0
    for start in range(0, len(data), chunk):
        part = data.subset(torch.arange(start, min(start + chunk, len(data)), device=data.y.device))
        scores = method.predict(model, part.x, part.head)[:, :n_outputs]
        correct += (scores.argmax(dim=1) == part.y).sum().item()
    return correct / max(len(data), 1)


def labelled(sequence: TaskSequence, scenario: Scenario, t: int, split: str) -> LabelledData:
    """Task ``t``'s ``split`` (train / val / test) with the scenario's targets and head."""
    task = sequence.tasks[t]
    x, y = getattr(task, f"x_{split}"), getattr(task, f"y_{split}")
    return LabelledData(
        x, scenario.targets(sequence, t, y), scenario.head(t), scenario.n_outputs(sequence, t)
    )


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name} was asked for but CUDA is not available: use device=cpu.")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _new_record(cfg, sequence, scenario, method_name, device, T) -> dict[str, Any]:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run_id = f"{sequence.name}-{method_name}-{scenario.value}-seed{cfg.seed}-{stamp}-{uuid.uuid4().hex[:6]}"
    return {
        "run_id": run_id,
        "status": "running",
        "task": sequence.name,
        "method": method_name,
        "scenario": scenario.value,
        "protocol": cfg.protocol,
        "seed": cfg.seed,
        "device": str(device),
        "n_tasks": T,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "tasks_completed": 0,
        "train_seconds": [],
        "eval_seconds": [],
        "versions": versions(),
        "started_at": utc_now(),
    }


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
    current = OmegaConf.to_container(cfg, resolve=True)
    changed = sorted(
        key
        for key in set(current) | set(saved)
        if key not in LOCAL_KEYS and current.get(key) != saved.get(key)
    )
    if changed:
        log.warning(
            f"resume: the checkpoint's config is used; ignoring changed keys {', '.join(changed)}"
        )
    for key in LOCAL_KEYS:
        saved[key] = cfg[key]
    return run_dir, state, saved


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


def _handle_sigterm():
    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(signum, frame):
        raise RunInterrupted(f"signal {signum}")

    return signal.signal(signal.SIGTERM, interrupt)


def _restore_sigterm(previous) -> None:
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)
