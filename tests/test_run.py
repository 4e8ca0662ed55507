"""The whole loop in-process: record contents, determinism, divergence, scenarios, references."""

from __future__ import annotations

import json
import math
import os
import platform
import resource
import signal
import time

import numpy as np
import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf

import cl_bayes
from cl_bayes import checkpoint, metrics
from cl_bayes.errors import ConfigError, DataNotFoundError, TrainingDiverged
from cl_bayes.methods.finetune import Finetune
from cl_bayes.record import device_name
from cl_bayes.report.groups import config_fingerprint
from cl_bayes.run import auto_device, job_number, resolve_device, run
from tests.conftest import inside_hydra


class DivergesAtTask(Finetune):
    """Fine-tuning whose loss turns NaN on task ``task_id`` (0-based), for the failure path."""

    def __init__(self, task_id: int):
        self.diverge_at, self.current = task_id, None

    def before_task(self, model, task_id, data):
        self.current = task_id

    def loss(self, model, batch):
        loss = super().loss(model, batch)
        return loss * math.nan if self.current == self.diverge_at else loss


class InterruptedAtTask(DivergesAtTask):
    """Fine-tuning that receives SIGTERM (a pre-empted job) when task ``task_id`` starts."""

    def before_task(self, model, task_id, data):
        if task_id == self.diverge_at:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler interrupts this at once


class UncompletedJobError(RuntimeError):
    """Stands for ``submitit.core.utils.UncompletedJobError``, which the loop knows by name."""


class StoppedAtTask(DivergesAtTask):
    """Fine-tuning that raises ``stop`` when task ``task_id`` starts: what submitit's signal
    handler does in a SLURM job (``SystemExit(-1)`` after requeueing a pre-empted job,
    ``UncompletedJobError`` at the time limit)."""

    def __init__(self, task_id: int, stop: str):
        super().__init__(task_id)
        self.stop = {
            "exit": SystemExit(-1),
            "timeout": UncompletedJobError("Job not requeued because: timed-out too many times."),
            "other": GeneratorExit(),
        }[stop]

    def before_task(self, model, task_id, data):
        if task_id == self.diverge_at:
            raise self.stop


def matrix(record) -> np.ndarray:
    """The record's accuracy matrix, unmeasured entries (JSON null) as NaN."""
    return np.array(
        [[math.nan if v is None else v for v in row] for row in record["accuracy_matrix"]]
    )


def read(path):
    return json.loads(path.read_text())


@pytest.fixture
def run_tiny(tiny_cfg, tmp_path, cached_data):
    """``run_tiny(name, *overrides)`` runs ``method=finetune`` (unless overridden) in
    ``tmp_path/name``; returns the record. The loop's tests need a quick, plain method."""

    def go(name, *overrides):
        return run(tiny_cfg("method=finetune", *overrides), tmp_path / name)

    return go


def test_a_tiny_run_writes_a_complete_record(run_tiny, tmp_path):
    record = run_tiny("run")
    R = matrix(record)
    T = 5
    assert record["status"] == "completed" and record["error"] is None
    assert (record["task"], record["method"], record["scenario"]) == (
        "split_mnist",
        "finetune",
        "task",
    )
    assert record["seed"] == 0 and record["device"] == "cpu" and record["n_tasks"] == T
    assert record["device_name"] == device_name(torch.device("cpu"))
    assert record["tasks_completed"] == T
    assert R.shape == (T, T)
    lower = np.tril_indices(T)
    assert np.all((R[lower] >= 0) & (R[lower] <= 1))
    # Task-incremental: a head is untrained before its task, so R[i, j > i] is not measured.
    assert np.all(np.isnan(R[np.triu_indices(T, 1)]))
    # It learns: every task well above the 50 % of a two-way guess right after training on it.
    assert np.all(np.diag(R) > 0.7)
    summary = record["summary"]
    assert summary["acc"] == pytest.approx(metrics.acc(R))
    assert summary["bwt"] == pytest.approx(metrics.bwt(R))
    assert summary["forgetting"] == pytest.approx(metrics.forgetting(R))
    np.testing.assert_allclose(summary["average_accuracy"], metrics.average_accuracy(R))
    assert summary["fwt"] is None  # not applicable with untrained heads
    assert len(record["train_seconds"]) == T and all(s > 0 for s in record["train_seconds"])
    assert len(record["eval_seconds"]) == T and all(s > 0 for s in record["eval_seconds"])
    versions = record["versions"]
    assert versions["python"] == platform.python_version()
    assert versions["torch"] == torch.__version__
    assert versions["cl_bayes"] == cl_bayes.__version__
    assert "git_commit" in versions
    assert record["peak_memory_mb"]["cpu_rss"] > 0
    config = record["config"]
    assert config["scenario"] == "task" and config["train"]["epochs"] == 1  # resolved
    assert "${" not in json.dumps(config)

    # The same record, as valid JSON, in the output directory and under results_dir.
    on_disk = read(tmp_path / "run" / "record.json")
    collected = read(tmp_path / "results" / "runs" / f"{record['run_id']}.json")
    assert on_disk == collected
    # Readable by others too (a shared results folder on a cluster), not mkstemp's 0600.
    assert (tmp_path / "run" / "record.json").stat().st_mode & 0o777 == 0o644
    assert on_disk["status"] == "completed"
    assert np.array_equal(matrix(on_disk), R, equal_nan=True)
    assert on_disk["record_path"] == str(tmp_path / "run" / "record.json")
    # Nothing else is written: no stray temporary files, nothing outside the two folders.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results", "run"]
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["checkpoint.pt", "record.json"]
    assert len(list((tmp_path / "results" / "runs").iterdir())) == 1


def test_same_seed_same_matrix_other_seed_other_matrix(run_tiny):
    a = matrix(run_tiny("a", "task.n_tasks=3"))
    b = matrix(run_tiny("b", "task.n_tasks=3"))
    c = matrix(run_tiny("c", "task.n_tasks=3", "seed=1"))
    assert np.array_equal(a, b, equal_nan=True)  # exactly, not approximately
    assert not np.array_equal(a, c, equal_nan=True)


def test_a_nan_loss_stops_the_run_naming_task_and_epoch(run_tiny, tmp_path):
    with pytest.raises(TrainingDiverged, match=r"in task 1/5, epoch 1\b.*optimizer\.lr"):
        run_tiny("run", "optimizer.lr=1e30")
    record = read(tmp_path / "run" / "record.json")
    assert record["status"] == "failed" and "task 1/5, epoch 1" in record["error"]
    assert record["tasks_completed"] == 0 and record["summary"] == {}
    assert read(tmp_path / "results" / "runs" / f"{record['run_id']}.json") == record


def test_a_divergence_keeps_the_completed_tasks(run_tiny, tmp_path):
    target = f"{__name__}.DivergesAtTask"
    with pytest.raises(TrainingDiverged, match=r"task 3/5, epoch 1\b"):
        run_tiny("run", f"method._target_={target}", "+method.task_id=2")
    record = read(tmp_path / "run" / "record.json")
    R = matrix(record)
    assert record["status"] == "failed" and record["tasks_completed"] == 2
    assert "task 3/5" in record["error"]
    assert np.all(np.isfinite(R[np.tril_indices(2)]))  # rows of tasks 1 and 2 kept
    assert np.all(np.isnan(R[2:]))
    assert record["summary"]["tasks"] == 2
    assert record["summary"]["acc"] == pytest.approx(R[1, :2].mean())
    assert len(record["train_seconds"]) == 2


def test_sigterm_interrupts_the_run_and_the_record_says_so(run_tiny, tmp_path):
    handler = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        run_tiny("run", f"method._target_={__name__}.InterruptedAtTask", "+method.task_id=1")
    assert signal.getsignal(signal.SIGTERM) is handler  # restored for whatever runs next
    record = read(tmp_path / "run" / "record.json")
    assert record["status"] == "interrupted" and record["tasks_completed"] == 1
    assert np.isfinite(matrix(record)[0, 0])


@pytest.mark.parametrize(
    "stop, error",
    [
        ("exit", "SystemExit: exit code -1"),
        ("timeout", "UncompletedJobError: Job not requeued because: timed-out too many times."),
        ("other", "GeneratorExit: no message"),
    ],
)
def test_a_run_stopped_by_a_scheduler_is_interrupted_with_its_completed_tasks(
    run_tiny, tmp_path, stop, error
):
    target = f"method._target_={__name__}.StoppedAtTask"
    with pytest.raises((SystemExit, UncompletedJobError, GeneratorExit)):
        run_tiny("run", target, "+method.task_id=2", f"+method.stop={stop}")
    record = read(tmp_path / "run" / "record.json")
    assert record["status"] == "interrupted" and record["error"] == error
    assert record["tasks_completed"] == 2
    R = matrix(record)
    assert np.all(np.isfinite(R[np.tril_indices(2)])) and np.all(np.isnan(R[2:]))
    assert record["summary"]["tasks"] == 2
    assert read(tmp_path / "results" / "runs" / f"{record['run_id']}.json") == record
    # The checkpoint that resume= continues from holds the two completed tasks.
    state = checkpoint.load(tmp_path / "run" / checkpoint.CHECKPOINT_NAME)
    assert state["record"]["tasks_completed"] == 2


def test_class_incremental_finetuning_forgets_and_has_no_fwt(run_tiny):
    record = run_tiny("run", "scenario=class")
    R = matrix(record)
    T = len(R)
    assert record["scenario"] == "class" and record["summary"]["fwt"] is None
    assert np.all(np.isnan(R[np.triu_indices(T, 1)]))  # classes not seen yet: not measured
    # The known failure of fine-tuning here: the last task's classes win every prediction.
    assert R[-1, -1] > 0.7 and R[-1, :-1].mean() < 0.2
    assert record["summary"]["forgetting"] > 0.4


def test_domain_incremental_measures_forward_transfer(run_tiny):
    record = run_tiny("run", "scenario=domain", "task.n_tasks=3")
    R = matrix(record)
    baseline = record["baseline_accuracy"]
    assert np.all(np.isfinite(R))  # one shared head: every task is tested after every task
    assert len(baseline) == 3 and all(0 <= b <= 1 for b in baseline)
    assert record["summary"]["fwt"] == pytest.approx(metrics.fwt(R, baseline))


def test_joint_reference_gives_intransigence(run_tiny, tmp_path):
    joint = run_tiny("joint", "method=joint", "task.n_tasks=3")
    joint_R = matrix(joint)
    assert joint["method"] == "joint"
    # Retrained on every task so far: it does not forget its first task.
    assert joint_R[-1, 0] > 0.8
    reference = tmp_path / "joint" / "record.json"
    record = run_tiny("finetune", "task.n_tasks=3", f"joint_reference={reference}")
    R = matrix(record)
    assert record["summary"]["intransigence"] == pytest.approx(
        np.mean(np.diag(joint_R) - np.diag(R))
    )
    with pytest.raises(ConfigError, match="scenario=task"):
        run_tiny("other", "task.n_tasks=3", "scenario=domain", f"joint_reference={reference}")
    with pytest.raises(ConfigError, match="not a completed method=joint"):
        run_tiny("other", f"joint_reference={tmp_path / 'finetune' / 'record.json'}")
    with pytest.raises(ConfigError, match="cannot read"):
        run_tiny("other", f"joint_reference={tmp_path / 'missing.json'}")


def test_errors_raised_while_building_the_tasks_are_reported_as_such(run_tiny, tmp_path):
    with pytest.raises(ConfigError, match="not enough for 6 tasks"):
        run_tiny("run", "task.n_tasks=6")
    with pytest.raises(ConfigError, match="one class per task"):
        run_tiny("run", "task.classes_per_task=1", "scenario=task")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataNotFoundError, match=str(empty)):
        run_tiny("run", f"data.root={empty}", "data.download=false")
    assert not (tmp_path / "run" / "record.json").exists()  # no training, no record


def test_device_choice():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")


def test_auto_gives_multirun_jobs_the_gpus_in_turn_and_a_single_run_gpu_0():
    # GPUs visible: the devices of a single run, then of multirun jobs 0..5.
    expected = {
        0: ["cpu"] * 7,
        1: ["cuda"] * 7,  # one GPU: every job on it, as before
        2: ["cuda", "cuda:0", "cuda:1", "cuda:0", "cuda:1", "cuda:0", "cuda:1"],
        3: ["cuda", "cuda:0", "cuda:1", "cuda:2", "cuda:0", "cuda:1", "cuda:2"],
    }
    for gpus, devices in expected.items():
        got = [auto_device(job, gpus) for job in (None, 0, 1, 2, 3, 4, 5)]
        assert got == [torch.device(name) for name in devices], gpus
        assert [str(device) for device in got] == devices  # as the record's `device` says it
    if torch.cuda.device_count() >= 2:
        assert resolve_device("cuda:1", 0) == torch.device("cuda:1")  # an explicit GPU is kept


def test_the_job_number_is_read_in_a_multirun_only():
    assert job_number() is None  # not inside Hydra
    with inside_hydra(mode=RunMode.MULTIRUN, job_num=4) as cfg:
        assert job_number() == 4
        assert resolve_device("auto", job_number()) == auto_device(4, torch.cuda.device_count())
        assert resolve_device("cpu", job_number()) == torch.device("cpu")  # explicit: kept
        OmegaConf.set_readonly(cfg.hydra, False)
        cfg.hydra.mode = RunMode.RUN  # a single run under Hydra
        HydraConfig.instance().set_config(cfg)
        assert job_number() is None


def test_a_run_records_its_own_peak_memory_not_the_process_s(tmp_path, compose_cfg):
    if not os.path.exists("/proc/self/clear_refs"):
        pytest.skip("the peak resident memory can be reset on Linux only")
    big = torch.ones(100 * 2**20)  # 400 MB, touched, then freed: the process's peak so far
    process_peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    del big
    record = run(
        compose_cfg(
            "task=synthetic",
            "task.n_tasks=2",
            "method=finetune",
            "progress=false",
            "device=cpu",
            f"results_dir={tmp_path / 'results'}",
        ),
        tmp_path / "run",
    )
    peak = record["peak_memory_mb"]
    assert peak["cpu_rss_scope"] == "run"
    assert peak["cpu_rss"] < process_peak_mb - 300


@pytest.fixture
def restore_flush_denormal():
    """Whether subnormal floats are flushed, as it was before the test (a process setting)."""
    before = bool((torch.tensor([1e-39]) * 1.0).item() == 0)
    yield
    torch.set_flush_denormal(before)


@pytest.mark.parametrize("flush", [True, False])
def test_a_run_flushes_subnormal_floats_only_when_asked(run_tiny, flush, restore_flush_denormal):
    if not torch.set_flush_denormal(not flush):  # the opposite first: the run must set it
        pytest.skip("this CPU cannot flush subnormal floats")
    record = run_tiny("run", f"flush_denormal={str(flush).lower()}")
    assert record["status"] == "completed"
    subnormal = torch.full((64, 1), 1e-39)  # below float32's smallest normal, 1.18e-38
    product, total = (subnormal * 1.0)[0].item(), (torch.ones(1, 64) @ subnormal).item()
    if flush:
        assert product == 0 and total == 0
    else:
        assert product == pytest.approx(1e-39, rel=1e-3, abs=0)
        assert total == pytest.approx(64e-39, rel=1e-3, abs=0)


def test_an_optimiser_option_given_on_the_command_line_reaches_the_optimiser(run_tiny, monkeypatch):
    # ``+optimizer.fused=true``: Adam's fused kernel, about 0.7x the default's step on a CPU
    # (benchmarks/adam_step.py), rounding differently from it.
    built = []
    adam_step = torch.optim.Adam.step

    def step(self, *args, **kwargs):
        built.append(self.defaults["fused"])
        return adam_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    fused = run_tiny("fused", "+optimizer.fused=true")
    assert built and set(built) == {True}
    built.clear()
    plain = run_tiny("plain")
    assert built and set(built) == {None}  # torch's default: a loop over tensors on a CPU
    assert fused["config"]["optimizer"]["fused"] is True
    # It rounds differently: the leaderboard keeps such runs in a group of their own.
    assert config_fingerprint(fused["config"]) != config_fingerprint(plain["config"])
    assert np.all(np.diag(matrix(fused)) > 0.7)
