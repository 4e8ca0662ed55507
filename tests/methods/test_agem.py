"""A-GEM: the step's gradient is projected so that it never opposes the memory's gradient."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from cl_bayes.data import LabelledData
from cl_bayes.errors import ConfigError
from cl_bayes.memory import EpisodicMemory
from cl_bayes.methods.agem import AGEM, project
from cl_bayes.models.mlp import MLP
from tests.methods.runs import (
    MORE_MNIST,
    THREE_SYNTHETIC_TASKS,
    after_two_mnist_tasks,
    run_method,
    saved_method_state,
)


class Recorder(torch.optim.SGD):
    """SGD that keeps a copy of the gradients it is asked to step with."""

    def __init__(self, params):
        super().__init__(params, lr=0.1)
        self.grads = None

    def step(self, closure=None):
        self.grads = [
            None if p.grad is None else p.grad.clone()
            for group in self.param_groups
            for p in group["params"]
        ]
        return super().step(closure)


def _gradients(model, batch):
    """Per parameter: the gradient of the mean cross-entropy on ``batch`` (None where unused)."""
    model = copy.deepcopy(model)
    loss = F.cross_entropy(model(batch.x, batch.head)[:, : batch.n_outputs], batch.y)
    return torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)


def _flat(grads, like):
    return torch.cat(
        [
            (torch.zeros_like(p) if g is None else g).reshape(-1)
            for g, (_, p) in zip(grads, like, strict=True)
        ]
    )


@pytest.mark.parametrize(
    "kwargs, key",
    [({"memory_per_task": 0}, "method.memory_per_task"), ({"reference_batch_size": -3}, "ref")],
)
def test_bad_settings_are_one_clear_config_error(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        AGEM(**kwargs)


def test_the_projection_removes_the_conflict_and_leaves_agreeing_gradients_alone():
    torch.manual_seed(0)
    conflicts = 0
    for _ in range(200):
        g, g_ref = torch.randn(50), torch.randn(50)
        projected = project(g, g_ref)
        assert projected @ g_ref >= -1e-4 * g_ref.norm() * g.norm()
        if g @ g_ref < 0:
            conflicts += 1
            # Exactly the projection onto the half-space: g - (g·g_ref / |g_ref|^2) g_ref ...
            expected = g - (g @ g_ref) / (g_ref @ g_ref) * g_ref
            torch.testing.assert_close(projected, expected)
            torch.testing.assert_close(projected @ g_ref, torch.tensor(0.0), atol=1e-4, rtol=0)
        else:  # ... and nothing at all without a conflict.
            assert torch.equal(projected, g)
    assert 50 < conflicts < 150
    assert torch.equal(project(g, torch.zeros(50)), g)  # an empty memory's zero gradient


def _two_tasks(scenario, conflict):
    """The same inputs twice; the second task's labels flipped (``conflict``) or repeated."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(60, 1, 2, 3, generator=g), torch.randint(0, 2, (60,), generator=g)
    heads = [0, 1] if scenario == "task" else [0, 0]
    second = 1 - y if conflict else y
    return [LabelledData(x, y, heads[0], 2), LabelledData(x, second, heads[1], 2)]


@pytest.mark.parametrize("scenario", ["task", "domain"])
@pytest.mark.parametrize("conflict", [True, False])
def test_train_step_steps_with_the_projected_gradient(scenario, conflict):
    torch.manual_seed(0)
    seen = _two_tasks(scenario, conflict)
    model = MLP(6, [8], [2, 2])
    with torch.no_grad():  # no bias towards either label: flipped labels conflict
        model.heads[0].bias.zero_()
    model.heads[1].load_state_dict(model.heads[0].state_dict())  # both tasks, one function
    method = AGEM(memory_per_task=20, reference_batch_size=20)  # the whole memory each step
    method.after_task(model, 0, method.training_data(0, seen[:1]))
    # The memory's own examples: flipped labels conflict with it, repeated ones agree.
    batch = method.training_data(1, seen).subset(method.memory.index)
    current = _gradients(model, batch)
    used = [(u, p) for u, p in zip(current, model.parameters(), strict=True) if u is not None]
    g = _flat([u for u, _ in used], used)
    # The memory's examples, each answered by its own task's head (head 0 in both scenarios).
    memory = seen[0].subset(method.memory.index)
    reference = [
        r for r, u in zip(_gradients(model, memory), current, strict=True) if u is not None
    ]
    reference = _flat(reference, used)
    optimizer = Recorder(model.parameters())
    method.train_step(model, batch, optimizer)
    stepped = _flat([s for s in optimizer.grads if s is not None], used)
    assert (g @ reference < 0) == conflict
    if conflict:
        assert g @ reference > -0.99 * g.norm() * reference.norm()  # not simply opposite
        torch.testing.assert_close(stepped, project(g, reference))
        assert stepped @ reference >= -1e-5 * g.norm() * reference.norm()
    else:
        torch.testing.assert_close(stepped, g)
    if scenario == "task":  # the memory's head gets no step from the current task
        assert optimizer.grads[-4] is None and optimizer.grads[-3] is None


def test_after_task_keeps_memory_per_task_random_examples_of_each_task():
    torch.manual_seed(0)
    seen = [LabelledData(torch.randn(50, 3), torch.arange(50) % 2, t, 2) for t in range(3)]
    method = AGEM(memory_per_task=10)
    model = MLP(3, [4], [2, 2, 2])
    for t in range(3):
        method.after_task(model, t, method.training_data(t, seen[: t + 1]))
        assert len(method.memory) == 10 * (t + 1)
    for t in range(3):
        index = method.memory.index[method.memory.task == t]
        assert len(index.unique()) == 10 and not torch.equal(index.sort().values, torch.arange(10))


@pytest.mark.parametrize("scenario", ["task", "domain", "class"])
def test_agem_runs_end_to_end_on_synthetic_tasks(tmp_path, scenario):
    record = run_method(
        tmp_path,
        "agem",
        *THREE_SYNTHETIC_TASKS,
        f"scenario={scenario}",
        "method.memory_per_task=40",
        "method.reference_batch_size=64",
    )
    assert record["status"] == "completed"
    R = torch.tensor(record["accuracy_matrix"])
    # Every task is learnt and kept (fine-tuning keeps about 1 % of task 1 in the class
    # scenario with these settings).
    assert (R.tril() > 0.7).sum() == 6, R
    state = saved_method_state(record)
    memory = EpisodicMemory()
    memory.load_state_dict(state["memory"])
    assert torch.bincount(memory.task).tolist() == [40, 40, 40]


def test_agem_forgets_less_than_finetune_on_two_real_mnist_tasks(tmp_path, cached_data):
    # Class-incremental: fine-tuning forgets the first task completely here.
    lost = after_two_mnist_tasks(tmp_path, "finetune", *MORE_MNIST)[0]
    kept = after_two_mnist_tasks(tmp_path, "agem", *MORE_MNIST, "method.memory_per_task=200")[0]
    assert kept > lost + 0.5, (kept, lost)
