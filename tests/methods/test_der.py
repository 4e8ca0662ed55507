"""DER / DER++: logits stored at the time of storage, matched by MSE; memory labels by CE."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from cl_bayes.data import LabelledData
from cl_bayes.errors import ConfigError
from cl_bayes.memory import EpisodicMemory
from cl_bayes.methods.base import logits
from cl_bayes.methods.der import DER, masked_mse
from cl_bayes.models.mlp import MLP
from tests.methods.runs import (
    MORE_MNIST,
    THREE_SYNTHETIC_TASKS,
    after_two_mnist_tasks,
    run_method,
    saved_method_state,
)


def _tasks(n_tasks=2, n=40, scenario="task"):
    g = torch.Generator().manual_seed(0)
    tasks = []
    for t in range(n_tasks):
        x, y = torch.randn(n, 1, 2, 3, generator=g), torch.arange(n) % 2
        index = torch.arange(n)  # each example's position, as Scenario.labelled gives it
        if scenario == "task":
            tasks.append(LabelledData(x, y, t, 2, index))
        else:  # class-incremental: one head, task t's classes 2t and 2t + 1
            tasks.append(LabelledData(x, y + 2 * t, 0, 2 * t + 2, index))
    return tasks


def _ce(model, data):
    return F.cross_entropy(model(data.x, data.head)[:, : data.n_outputs], data.y)


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"memory_size": 0}, "method.memory_size"),
        ({"replay_batch_size": 0}, "method.replay_batch_size"),
        ({"alpha": -1.0}, "method.alpha"),
        ({"beta": "x"}, "method.beta"),
    ],
)
def test_bad_settings_are_one_clear_config_error(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        DER(**kwargs)


def test_stored_logits_are_the_models_at_the_time_of_storage():
    torch.manual_seed(0)
    seen = _tasks(2)
    model = MLP(6, [8], [2, 2])
    method = DER(memory_size=100, replay_batch_size=8)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for t in range(2):
        data = method.training_data(t, seen)
        for index in torch.arange(40).split(10):
            before = copy.deepcopy(model)
            method.train_step(model, data.subset(index), optimizer)
            rows = (method.memory.task == t) & torch.isin(method.memory.index, index)
            stored, n_stored = method.memory.stored_logits(rows.nonzero().squeeze(1))
            x = seen[t].x[method.memory.index[rows]]
            # The logits of the step's forward pass: the task's own head, before the update.
            torch.testing.assert_close(stored, before(x, t).detach())
            assert n_stored.tolist() == [2] * 10
            assert not torch.allclose(stored, model(x, t).detach())
            assert not torch.allclose(stored, before(x, 1 - t).detach())
    assert len(method.memory) == 80


@pytest.mark.parametrize("beta", [0.0, 0.7])
def test_the_memory_terms_vanish_when_the_model_reproduces_the_stored_logits(beta):
    torch.manual_seed(0)
    seen = _tasks(2)
    model = MLP(6, [8], [2, 2])
    method = DER(memory_size=40, replay_batch_size=40, alpha=0.3, beta=beta)
    frozen = torch.optim.SGD(model.parameters(), lr=0.0)  # stores logits, changes nothing
    data = method.training_data(0, seen[:1])
    for index in torch.arange(40).split(10):
        method.train_step(model, data.subset(index), frozen)
    batch = method.training_data(1, seen).subset(torch.arange(8))
    current = seen[1].subset(torch.arange(8))
    # The whole memory is each memory batch: the alpha term is 0, the beta term is the
    # cross-entropy of the memory's labels (each example by its own head, head 0).
    expected = _ce(model, current) + beta * _ce(model, seen[0])
    torch.testing.assert_close(method.loss(model, batch), expected)
    # Stored logits one above the model's: the alpha term is alpha * 1.
    method.memory.logits += 1.0
    torch.testing.assert_close(method.loss(model, batch), expected + 0.3)


@pytest.mark.parametrize("scenario", ["task", "class"])
def test_an_entry_in_both_memory_batches_is_forwarded_once_with_the_same_loss_and_gradient(
    scenario,
):
    torch.manual_seed(0)
    seen = _tasks(3, scenario=scenario)
    model = MLP(6, [8], [2, 2, 2] if scenario == "task" else [6])
    method = DER(memory_size=30, replay_batch_size=20, alpha=0.3, beta=0.7)
    for t in range(2):  # the memory holds examples of two tasks, stored in turn
        data = method.training_data(t, seen[: t + 1])
        for index in torch.arange(40).split(10):
            optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
            method.train_step(model, data.subset(index), optimizer)
    assert set(method.memory.task.tolist()) == {0, 1}
    batch = method.training_data(2, seen).subset(torch.arange(8))
    # The reference: the current batch and each memory batch through the network on its own.
    state = torch.get_rng_state()
    distil, labelled = method.memory.sample(20), method.memory.sample(20)
    shared = len(set(distil.tolist()) & set(labelled.tolist()))
    assert shared > 0  # 20 + 20 of 30 entries
    stored, n_stored = method.memory.stored_logits(distil)
    replay_distil = method.memory.batch(distil, seen, batch.n_outputs)
    replay_labelled = method.memory.batch(labelled, seen, batch.n_outputs)
    expected = (
        _ce(model, batch)
        + 0.3 * masked_mse(logits(model, replay_distil), stored, n_stored)
        + 0.7 * _ce(model, replay_labelled)
    )
    expected_grads = torch.autograd.grad(expected, list(model.parameters()), allow_unused=True)
    rows = []
    hook = model.body.register_forward_hook(lambda module, inputs, out: rows.append(len(out)))
    torch.set_rng_state(state)  # the same two memory batches
    value = method.loss(model, batch)
    hook.remove()
    assert rows == [8 + 40 - shared]
    torch.testing.assert_close(value, expected)
    grads = torch.autograd.grad(value, list(model.parameters()), allow_unused=True)
    for got, want in zip(grads, expected_grads, strict=True):
        if want is None:
            assert got is None or not got.any()
        else:
            torch.testing.assert_close(got, want)


def test_beta_only_replays_one_memory_batch_answered_by_its_own_heads():
    torch.manual_seed(0)
    seen = _tasks(2)
    model = MLP(6, [8], [2, 2])
    method = DER(memory_size=30, replay_batch_size=20, alpha=0.0, beta=0.7)
    data = method.training_data(0, seen[:1])
    for index in torch.arange(40).split(10):
        method.train_step(model, data.subset(index), torch.optim.SGD(model.parameters(), lr=0.1))
    batch = method.training_data(1, seen).subset(torch.arange(8))
    state = torch.get_rng_state()
    labelled = method.memory.batch(method.memory.sample(20), seen, batch.n_outputs)
    expected = _ce(model, batch) + 0.7 * _ce(model, labelled)
    rows = []
    hook = model.body.register_forward_hook(lambda module, inputs, out: rows.append(len(out)))
    torch.set_rng_state(state)  # the same memory batch
    value = method.loss(model, batch)
    hook.remove()
    assert rows == [8 + 20]  # no logit batch drawn
    torch.testing.assert_close(value, expected)


def test_class_scenario_compares_only_the_outputs_stored():
    torch.manual_seed(0)
    seen = _tasks(2, scenario="class")
    model = MLP(6, [8], [4])
    method = DER(memory_size=40, replay_batch_size=40, alpha=1.0, beta=0.0)
    frozen = torch.optim.SGD(model.parameters(), lr=0.0)
    data = method.training_data(0, seen[:1])
    for index in torch.arange(40).split(10):
        method.train_step(model, data.subset(index), frozen)
    assert method.memory.logits.shape == (40, 2) and set(method.memory.n_logits.tolist()) == {2}
    batch = method.training_data(1, seen).subset(torch.arange(8))
    expected = _ce(model, seen[1].subset(torch.arange(8)))
    torch.testing.assert_close(method.loss(model, batch), expected)
    with torch.no_grad():  # the outputs of the classes added since are free
        model.heads[0].bias[2:] += 5.0
    expected = _ce(model, seen[1].subset(torch.arange(8)))
    torch.testing.assert_close(method.loss(model, batch), expected)
    # Stored now, with 4 outputs: all four are compared.
    method.train_step(model, batch, frozen)
    assert sorted(set(method.memory.n_logits.tolist())) == [2, 4]


def test_masked_mse_is_the_mean_over_stored_outputs():
    scores = torch.tensor([[1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 1.0, 1.0]])
    stored = torch.tensor([[0.0, 0.0, 0.0, 0.0], [2.0, 3.0, 0.0, 0.0]])
    # Row 0: four outputs stored; row 1: two (its padding is not compared).
    expected = (1 + 4 + 9 + 16 + 1 + 4) / 6
    torch.testing.assert_close(
        masked_mse(scores, stored, torch.tensor([4, 2])), torch.tensor(expected)
    )
    n_all = torch.tensor([4, 4])
    torch.testing.assert_close(masked_mse(scores, stored, n_all), F.mse_loss(scores, stored))


@pytest.mark.parametrize("scenario", ["task", "domain", "class"])
def test_der_runs_end_to_end_on_synthetic_tasks(tmp_path, scenario):
    record = run_method(
        tmp_path, "der", *THREE_SYNTHETIC_TASKS, f"scenario={scenario}", "method.memory_size=50"
    )
    assert record["status"] == "completed"
    R = torch.tensor(record["accuracy_matrix"])
    # Every task is learnt and kept (fine-tuning keeps about 1 % of task 1 in the class
    # scenario with these settings).
    assert (R.tril() > 0.7).sum() == 6, R
    state = saved_method_state(record)
    memory = EpisodicMemory(50)
    memory.load_state_dict(state["memory"])
    assert len(memory) == 50 and set(memory.task.tolist()) == {0, 1, 2}
    assert memory.logits.shape[1] == (6 if scenario == "class" else 2)


def test_der_forgets_less_than_finetune_on_two_real_mnist_tasks(tmp_path, cached_data):
    # Class-incremental: fine-tuning forgets the first task completely here.
    lost = after_two_mnist_tasks(tmp_path, "finetune", *MORE_MNIST)[0]
    kept = after_two_mnist_tasks(tmp_path, "der", *MORE_MNIST, "method.memory_size=200")[0]
    assert kept > lost + 0.5, (kept, lost)
