"""``train.reset_optimizer``: a fresh optimiser per task, or one kept across the whole run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cl_bayes import checkpoint
from cl_bayes import run as run_module
from cl_bayes.errors import ConfigError
from cl_bayes.run import run
from tests.conftest import compose_config
from tests.methods.runs import SYNTHETIC, run_method, run_stopped_after_task_1

# SYNTHETIC: 120 training examples a task, batch 32, 2 epochs: 4 steps an epoch.
STEPS_PER_TASK = 2 * 4


def _built_optimizers(monkeypatch) -> list[torch.optim.Optimizer]:
    """Every optimiser the run builds, in order."""
    built = []
    real = run_module.build_optimizer

    def spy(*args, **kwargs):
        built.append(real(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(run_module, "build_optimizer", spy)
    return built


def _steps(optimizer: torch.optim.Optimizer) -> set[int]:
    """Adam's step counts over the parameters it updated."""
    return {int(state["step"]) for state in optimizer.state.values()}


@pytest.mark.parametrize("scenario", ["task", "class"])
def test_by_default_every_task_trains_with_a_fresh_optimiser(tmp_path, monkeypatch, scenario):
    built = _built_optimizers(monkeypatch)
    run_method(tmp_path, "finetune", "task.n_tasks=3", f"scenario={scenario}")
    assert len(built) == 3
    assert [_steps(optimizer) for optimizer in built] == [{STEPS_PER_TASK}] * 3


@pytest.mark.parametrize("scenario", ["task", "class"])
def test_a_kept_optimiser_carries_its_state_through_every_task(tmp_path, monkeypatch, scenario):
    built = _built_optimizers(monkeypatch)
    overrides = ["task.n_tasks=3", f"scenario={scenario}", "train.reset_optimizer=false"]
    kept = run_method(tmp_path, "finetune", *overrides)
    assert len(built) == 1
    # The shared body took every step of the three tasks; a task-IL head took its own task's
    # (fine-tuning leaves the other heads' gradients unset), the class-IL head all of them.
    model = checkpoint.load(Path(kept["record_path"]).parent / checkpoint.CHECKPOINT_NAME)
    steps = dict(zip(model["model"], built[0].param_groups[0]["params"], strict=True))
    counts = {name: int(built[0].state[p]["step"]) for name, p in steps.items()}
    heads = {name: n for name, n in counts.items() if name.startswith("heads.")}
    assert {n for name, n in counts.items() if name not in heads} == {3 * STEPS_PER_TASK}
    if scenario == "task":
        assert heads == {
            f"heads.{t}.{w}": STEPS_PER_TASK for t in range(3) for w in ("weight", "bias")
        }
    else:
        assert set(heads.values()) == {3 * STEPS_PER_TASK}
    assert kept["config"]["train"]["reset_optimizer"] is False
    fresh = run_method(tmp_path / "fresh", "finetune", "task.n_tasks=3", f"scenario={scenario}")
    matrices = [
        json.loads(Path(r["record_path"]).read_text())["accuracy_matrix"] for r in (kept, fresh)
    ]
    assert matrices[0] != matrices[1]


@pytest.mark.parametrize("method", ["joint", "vcl"])
def test_a_method_that_restarts_its_network_refuses_a_kept_optimiser(tmp_path, method):
    overrides = ["train.reset_optimizer=false"]
    if method == "vcl":
        overrides.append("method.start_from=fresh")
    with pytest.raises(ConfigError, match=r"^train\.reset_optimizer=false cannot train "):
        run_method(tmp_path, method, *overrides)
    assert not (tmp_path / method / "run").exists()


def test_a_run_with_a_kept_optimiser_resumes_exactly_as_the_uninterrupted_run(
    tmp_path, monkeypatch
):
    def config(*overrides):
        return compose_config(
            *SYNTHETIC,
            "method=finetune",
            "train.reset_optimizer=false",
            f"results_dir={tmp_path}/results",
            *overrides,
        )

    whole = run(config(), tmp_path / "whole")
    run_stopped_after_task_1(config(), tmp_path / "stopped", monkeypatch)
    saved = checkpoint.load(tmp_path / "stopped" / checkpoint.CHECKPOINT_NAME)
    assert {int(s["step"]) for s in saved["optimizer"]["state"].values()} == {STEPS_PER_TASK}

    resumed = run(config(f"resume={tmp_path / 'stopped'}"), tmp_path / "other")
    assert resumed["status"] == "completed"
    records = [json.loads(Path(r["record_path"]).read_text()) for r in (whole, resumed)]
    assert records[0]["accuracy_matrix"] == records[1]["accuracy_matrix"]
    # The same final network and optimiser state, bit for bit.
    ends = [
        checkpoint.load(d / checkpoint.CHECKPOINT_NAME)
        for d in (tmp_path / "whole", tmp_path / "stopped")
    ]
    for name, weights in ends[0]["model"].items():
        assert torch.equal(weights, ends[1]["model"][name]), name
    states = [end["optimizer"]["state"] for end in ends]
    assert states[0] and states[0].keys() == states[1].keys()
    for index, state in states[0].items():
        for key, value in state.items():
            assert torch.equal(value, states[1][index][key]), (index, key)


def test_a_kept_optimiser_is_never_captured_in_a_cuda_graph(tmp_path, monkeypatch, caplog):
    # As on a GPU with train.cuda_graphs=auto: the run would capture a capturable step.
    monkeypatch.setattr(run_module, "use_cuda_graphs", lambda *args: True)
    captured = []
    real_fit = run_module.fit

    def spy(*args, cuda_graph=False, **kwargs):
        captured.append(cuda_graph)
        return real_fit(*args, cuda_graph=cuda_graph, **kwargs)

    monkeypatch.setattr(run_module, "fit", spy)
    with caplog.at_level("INFO", logger="cl_bayes.run"):
        record = run_method(tmp_path, "finetune", "train.reset_optimizer=false")
    assert record["status"] == "completed"
    assert captured == [False, False]  # one call per task, both eager
    assert "the tasks' training steps run eagerly" in caplog.text


def test_a_fresh_optimiser_checkpoint_holds_no_optimiser_state(tmp_path):
    record = run_method(tmp_path, "finetune")
    saved = checkpoint.load(Path(record["record_path"]).parent / checkpoint.CHECKPOINT_NAME)
    assert "optimizer" not in saved
