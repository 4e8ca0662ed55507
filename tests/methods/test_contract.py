"""The method contract (``cl_bayes/methods/base.py``), checked for every ``conf/method/*.yaml``.

On a tiny synthetic two-task sequence: ``predict`` returns log-probabilities; ``train_step``
changes the parameters and returns the loss; a ``state_dict`` round trip (through
``torch.save`` / ``torch.load(weights_only=True)``, as checkpoints are read) reproduces the
predictions exactly; a run over three tasks completes in every scenario (task-, domain- and
class-incremental) with a well-formed accuracy matrix, and ``training_data`` never receives a
later task; and a run resumed after task 1 ends with exactly the accuracy matrix of the
uninterrupted run.
"""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path

import pytest
import torch

from cl_bayes.config import CONF_DIR, instantiate
from cl_bayes.run import run, train_task
from cl_bayes.scenario import Scenario
from tests.conftest import compose_config
from tests.methods.runs import SYNTHETIC, run_stopped_after_task_1

METHODS = sorted(path.stem for path in (CONF_DIR / "method").glob("*.yaml"))


def _config(tmp_path, name, *overrides):
    return compose_config(
        *SYNTHETIC, f"method={name}", f"results_dir={tmp_path}/results", *overrides
    )


def _pieces(cfg):
    """The sequence, scenario, model and method ``run`` would build from ``cfg``."""
    sequence = instantiate(
        cfg.task, root=cfg.data.root, download=False, device=torch.device("cpu"), seed=cfg.seed
    )
    scenario = Scenario.parse(cfg.scenario)
    model = instantiate(
        cfg.model, input_shape=list(sequence.input_shape), head_sizes=scenario.head_sizes(sequence)
    )
    return sequence, scenario, model, instantiate(cfg.method)


def _train_first_task(cfg, sequence, scenario, model, method):
    seen = [scenario.labelled(sequence, 0, "train")]
    data = method.training_data(0, seen)
    method.before_task(model, 0, data)
    train_task(cfg, method, model, data, 0, sequence.n_tasks)
    method.after_task(model, 0, data)


def _predict(method, model, data, seed=0):
    torch.manual_seed(seed)  # the same draws for sampling methods
    model.eval()
    return method.predict(model, data)


def test_every_method_config_is_checked():
    assert {"vcl", "finetune", "joint", "coreset_only"} <= set(METHODS)


@pytest.mark.parametrize("name", METHODS)
def test_every_method_says_whether_its_step_can_be_captured(tmp_path, name):
    method = instantiate(_config(tmp_path, name).method)
    # A bool, not something truthy: the loop replays the step only on an explicit True.
    assert type(method.capturable_step) is bool
    if name == "finetune":  # the default step: cross-entropy, backward, step
        assert method.capturable_step is True


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("scenario", ["task", "domain", "class"])
def test_predict_returns_log_probabilities(tmp_path, name, scenario):
    cfg = _config(tmp_path, name, f"scenario={scenario}")
    torch.manual_seed(0)
    sequence, scenario_, model, method = _pieces(cfg)
    _train_first_task(cfg, sequence, scenario_, model, method)
    for t in range(sequence.n_tasks):
        data = scenario_.labelled(sequence, t, "test")
        log_probabilities = _predict(method, model, data)
        assert log_probabilities.shape == (len(data), data.n_outputs)
        assert not log_probabilities.requires_grad
        assert torch.all(log_probabilities <= 1e-6)
        torch.testing.assert_close(
            log_probabilities.logsumexp(dim=1), torch.zeros(len(data)), atol=1e-5, rtol=0
        )


@pytest.mark.parametrize("name", METHODS)
def test_predict_samples_average_to_the_predictive(tmp_path, name):
    cfg = _config(tmp_path, name, "scenario=class")
    torch.manual_seed(0)
    sequence, scenario, model, method = _pieces(cfg)
    _train_first_task(cfg, sequence, scenario, model, method)
    data = scenario.labelled(sequence, 0, "test")
    torch.manual_seed(0)
    per_sample = method.predict(model, data, samples=True)
    n_samples = per_sample.shape[0]
    assert per_sample.shape == (n_samples, len(data), data.n_outputs) and n_samples >= 1
    torch.testing.assert_close(
        per_sample.logsumexp(dim=2), torch.zeros(n_samples, len(data)), atol=1e-5, rtol=0
    )
    # The same draws averaged in probability space are the method's predictive.
    mean = per_sample.exp().mean(dim=0).log()
    torch.testing.assert_close(mean, _predict(method, model, data), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", METHODS)
def test_train_step_changes_the_parameters_and_returns_the_loss(tmp_path, name):
    cfg = _config(tmp_path, name)
    torch.manual_seed(0)
    sequence, scenario, model, method = _pieces(cfg)
    task = scenario.labelled(sequence, 0, "train")
    method.before_task(model, 0, method.training_data(0, [task]))
    batch = task.subset(torch.arange(32))
    before = copy.deepcopy(model)
    torch.manual_seed(1)
    expected = method.loss(copy.deepcopy(model), batch).detach()
    torch.manual_seed(1)
    optimizer = instantiate(cfg.optimizer)(model.parameters())
    loss = method.train_step(model, batch, optimizer)
    assert isinstance(loss, torch.Tensor) and loss.ndim == 0 and not loss.requires_grad
    torch.testing.assert_close(loss, expected)
    changed = [
        name
        for (name, old), new in zip(before.named_parameters(), model.parameters(), strict=True)
        if not torch.equal(old, new)
    ]
    assert changed, "train_step left every parameter as it was"


@pytest.mark.parametrize("name", METHODS)
def test_a_state_dict_round_trip_reproduces_the_predictions_exactly(tmp_path, name):
    cfg = _config(tmp_path, name)
    torch.manual_seed(0)
    sequence, scenario, model, method = _pieces(cfg)
    _train_first_task(cfg, sequence, scenario, model, method)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "method": method.state_dict()}, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)  # as checkpoints are read

    torch.manual_seed(123)  # the restored pieces start from other random weights
    _, _, restored_model, restored_method = _pieces(cfg)
    restored_model.load_state_dict(state["model"])
    restored_method.load_state_dict(state["method"])
    for t in range(sequence.n_tasks):
        data = scenario.labelled(sequence, t, "test")
        assert torch.equal(
            _predict(restored_method, restored_model, data), _predict(method, model, data)
        )


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("scenario", ["task", "domain", "class"])
def test_runs_end_to_end_and_training_data_never_receives_a_later_task(
    tmp_path, name, scenario, monkeypatch
):
    cfg = _config(tmp_path, name, "task.n_tasks=3", f"scenario={scenario}")
    cls = type(instantiate(cfg.method))
    real = cls.training_data
    received = []

    def spy(self, task_id, seen):
        received.append((task_id, len(seen)))
        return real(self, task_id, seen)

    monkeypatch.setattr(cls, "training_data", spy)
    record = run(cfg, tmp_path / "run")
    assert received == [(0, 1), (1, 2), (2, 3)]
    assert record["status"] == "completed" and record["scenario"] == scenario
    # After each task, every task seen so far is measured, as a fraction. Later tasks are
    # measured only in domain-IL, where the shared head answers them (forward transfer).
    matrix = json.loads(Path(record["record_path"]).read_text())["accuracy_matrix"]
    assert len(matrix) == 3
    for i, row in enumerate(matrix):
        measured = row if scenario == "domain" else row[: i + 1]
        assert len(row) == 3 and all(0 <= acc <= 1 for acc in measured), (i, row)
        assert all(acc is None for acc in row[len(measured) :]), (i, row)


@pytest.mark.parametrize("name", METHODS)
def test_a_run_resumed_after_task_1_ends_exactly_as_the_uninterrupted_run(
    tmp_path, name, monkeypatch
):
    whole = run(_config(tmp_path, name), tmp_path / "whole")

    run_stopped_after_task_1(_config(tmp_path, name), tmp_path / "stopped", monkeypatch)
    stopped = json.loads((tmp_path / "stopped" / "record.json").read_text())
    assert stopped["status"] == "interrupted" and stopped["tasks_completed"] == 1

    resumed = run(_config(tmp_path, name, f"resume={tmp_path / 'stopped'}"), tmp_path / "other")
    assert resumed["status"] == "completed"
    # Exactly equal, as the records hold them (unmeasured entries are null).
    records = [json.loads(Path(r["record_path"]).read_text()) for r in (whole, resumed)]
    assert records[0]["accuracy_matrix"] == records[1]["accuracy_matrix"]
    assert records[1]["run_id"] == stopped["run_id"]
