"""Experience replay: a bounded memory of indices, replayed through each example's own head."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cl_bayes.data import LabelledData
from cl_bayes.errors import ConfigError
from cl_bayes.memory import EpisodicMemory
from cl_bayes.methods.er import ER
from cl_bayes.models.mlp import MLP
from tests.methods.runs import (
    MORE_MNIST,
    THREE_SYNTHETIC_TASKS,
    after_two_mnist_tasks,
    run_method,
    saved_method_state,
)


def _task(t, n=40, head=None, offset=0, n_outputs=2):
    """Task ``t``: ``n`` examples whose one input is ``1000 t + index``; targets alternate."""
    x = (1000.0 * t + torch.arange(n, dtype=torch.float32)).reshape(n, 1, 1, 1)
    head = t if head is None else head
    # With each example's position, as Scenario.labelled gives it.
    return LabelledData(x, torch.arange(n) % 2 + offset, head, n_outputs, torch.arange(n))


def _decode(x):
    """(task, index) of inputs built by :func:`_task`."""
    x = x.flatten()
    return x.div(1000, rounding_mode="floor").long(), (x % 1000).long()


class SpyModel(nn.Module):
    """Logits that depend on the head: ``(head + 1) * [sin x, cos x, ...]``; records each call."""

    def __init__(self, n_outputs=2):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.n_outputs, self.calls = n_outputs, []

    def forward(self, x, head=0):
        self.calls.append((x.detach().clone(), head))
        head = torch.as_tensor(head, dtype=torch.float32).expand(len(x))
        phases = x.flatten()[:, None] + torch.arange(self.n_outputs)
        return self.scale * (head[:, None] + 1) * phases.sin()


def _fill(method, seen, task_id):
    """Offer every example of ``seen[task_id]`` to the method's memory, in order."""
    data = method.training_data(task_id, seen)
    for index in torch.arange(len(data)).split(16):
        method.memory.add(task_id, index, data.subset(index))


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"memory_size": 0}, "method.memory_size"),
        ({"memory_size": 2.5}, "method.memory_size"),
        ({"replay_batch_size": -1}, "method.replay_batch_size"),
        ({"memory_policy": "fifo"}, "method.memory_policy"),
    ],
)
def test_bad_settings_are_one_clear_config_error(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        ER(**kwargs)


def test_train_step_stores_the_batch_and_the_memory_stays_bounded():
    torch.manual_seed(0)
    seen = [_task(0, n=100)]
    method = ER(memory_size=30, replay_batch_size=8)
    data = method.training_data(0, seen)
    model = MLP(1, [4], [2])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    first = data.subset(torch.arange(10))
    method.train_step(model, first, optimizer)
    assert method.memory.index.tolist() == list(range(10))  # indices, not inputs
    assert method.memory.task.tolist() == [0] * 10
    for index in torch.randperm(100).split(10):
        method.train_step(model, data.subset(index), optimizer)
        assert len(method.memory) <= 30
    assert len(method.memory) == 30 and method.memory.n_seen == 110


def test_replayed_examples_go_to_their_own_heads_with_their_own_targets():
    torch.manual_seed(0)
    seen = [_task(t) for t in range(3)]  # task-incremental: task t's head is t
    method = ER(memory_size=60, replay_batch_size=24)
    for t in range(3):
        _fill(method, seen, t)
    model = SpyModel()
    batch = method.training_data(2, seen).subset(torch.arange(8))
    loss = method.loss(model, batch)
    (x, head), *_ = model.calls
    task, index = _decode(x)
    assert len(x) == 8 + 24 and isinstance(head, torch.Tensor)
    assert len(task[8:].unique()) == 3  # replay from every task, the current one included
    assert torch.equal(head, task)  # each example answered by its own task's head
    # The mean cross-entropy over the joined batch, each example with its own target.
    expected = F.cross_entropy(model(x, task), index % 2)
    torch.testing.assert_close(loss, expected)


def test_class_scenario_replay_uses_global_targets_over_the_current_outputs():
    torch.manual_seed(0)
    seen = [_task(t, head=0, offset=2 * t, n_outputs=2 * t + 2) for t in range(2)]
    method = ER(memory_size=40, replay_batch_size=40)
    _fill(method, seen, 0)
    model = SpyModel(n_outputs=6)  # a head over 6 outputs, 4 of them active after task 2
    batch = method.training_data(1, seen).subset(torch.arange(8))
    loss = method.loss(model, batch)
    (x, head), *_ = model.calls
    task, index = _decode(x)
    assert head == 0 and task[8:].eq(0).all()
    expected = F.cross_entropy(model(x, 0)[:, :4], index % 2 + 2 * task)
    torch.testing.assert_close(loss, expected)


def test_no_replay_on_the_first_task():
    torch.manual_seed(0)
    seen = [_task(0)]
    method = ER(memory_size=20, replay_batch_size=10)
    _fill(method, seen, 0)
    model = SpyModel()
    batch = method.training_data(0, seen).subset(torch.arange(8))
    loss = method.loss(model, batch)
    (x, _), *_ = model.calls
    assert len(x) == 8
    torch.testing.assert_close(loss, F.cross_entropy(model(x, 0), _decode(x)[1] % 2))


def test_class_balanced_policy_balances_the_classes_seen():
    torch.manual_seed(0)
    seen = [_task(t, head=0, offset=2 * t, n_outputs=2 * t + 2) for t in range(3)]
    method = ER(memory_size=60, memory_policy="class_balanced")
    for t in range(3):
        _fill(method, seen, t)
    assert torch.bincount(method.memory.key).tolist() == [10] * 6


@pytest.mark.parametrize("scenario", ["task", "domain", "class"])
def test_er_runs_end_to_end_on_synthetic_tasks(tmp_path, scenario):
    record = run_method(
        tmp_path, "er", *THREE_SYNTHETIC_TASKS, f"scenario={scenario}", "method.memory_size=50"
    )
    assert record["status"] == "completed"
    R = torch.tensor(record["accuracy_matrix"])
    # Every task is learnt and kept (fine-tuning keeps about 1 % of task 1 in the class
    # scenario with these settings).
    assert (R.tril() > 0.7).sum() == 6, R
    state = saved_method_state(record)
    memory = EpisodicMemory(50)
    memory.load_state_dict(state["memory"])
    assert len(memory) == 50 and memory.n_seen == 3 * 5 * 300
    assert set(memory.task.tolist()) == {0, 1, 2}


def test_er_forgets_less_than_finetune_on_two_real_mnist_tasks(tmp_path, cached_data):
    # Class-incremental: fine-tuning forgets the first task completely here.
    lost = after_two_mnist_tasks(tmp_path, "finetune", *MORE_MNIST)[0]
    kept = after_two_mnist_tasks(tmp_path, "er", *MORE_MNIST, "method.memory_size=200")[0]
    assert kept > lost + 0.5, (kept, lost)
