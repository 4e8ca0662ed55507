"""SI: the path integral of every step, importances that accumulate, the penalty and state."""

import copy
import io

import pytest
import torch
from torch import nn

from cl_bayes.config import instantiate
from cl_bayes.data import LabelledData
from cl_bayes.errors import ConfigError
from cl_bayes.methods.si import SI
from cl_bayes.run import train_task
from cl_bayes.scenario import Scenario
from tests.conftest import compose_config
from tests.methods.runs import (
    SYNTHETIC,
    assert_importances_of_what_was_trained,
    run_method,
    saved_method_state,
)

A = torch.tensor([1.0, 2.0, 0.5])
B = torch.tensor([1.0, -2.0, 3.0])


class Quadratic(SI):
    """SI on the toy loss ``L = 1/2 sum a (theta - b)^2``."""

    def task_loss(self, model, batch):
        return 0.5 * (A * (model.theta - B).square()).sum()


class Point(nn.Module):
    def __init__(self):
        super().__init__()
        self.theta = nn.Parameter(torch.zeros(3))


def _dummy(n=1):
    return LabelledData(torch.zeros(n, 1), torch.zeros(n, dtype=torch.long), 0, 2)


def test_the_path_integral_of_plain_sgd_on_a_quadratic_is_the_loss_decrease():
    model, method = Point(), Quadratic(penalty_weight=1.0, damping=0.1)
    method.before_task(model, 0, _dummy())
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    thetas = [model.theta.detach().clone()]
    for _ in range(3000):
        method.train_step(model, _dummy(), optimizer)
        thetas.append(model.theta.detach().clone())
    thetas = torch.stack(thetas)
    # By hand: omega = -sum_k g_k * (theta_k+1 - theta_k), per coordinate.
    g = A * (thetas[:-1] - B)
    by_hand = -(g * (thetas[1:] - thetas[:-1])).sum(0)
    torch.testing.assert_close(method.omega["theta"], by_hand, rtol=1e-4, atol=0)
    # Small steps: the path integral is the loss decrease, coordinate by coordinate.
    decrease = 0.5 * A * ((thetas[0] - B).square() - (thetas[-1] - B).square())
    assert decrease.min() > 0.1
    torch.testing.assert_close(method.omega["theta"], decrease, rtol=2e-3, atol=0)

    method.after_task(model, 0, _dummy())
    change = thetas[-1] - thetas[0]
    torch.testing.assert_close(method.importance["theta"], by_hand / (change.square() + 0.1))


def test_omega_uses_the_gradient_of_the_unregularised_loss():
    model, method = Point(), Quadratic(penalty_weight=3.0, damping=0.1)
    method.before_task(model, 0, _dummy())
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2)
    for _ in range(20):
        method.train_step(model, _dummy(), optimizer)
    method.after_task(model, 0, _dummy())
    anchor = model.theta.detach().clone()
    with torch.no_grad():
        model.theta += torch.tensor([0.5, -0.5, 0.25])
    method.before_task(model, 1, _dummy())
    theta = model.theta.detach().clone()
    method.train_step(model, _dummy(), torch.optim.SGD(model.parameters(), lr=1e-2))
    task_grad = A * (theta - B)
    penalty_grad = 2 * 3.0 * method.importance["theta"] * (theta - anchor)
    step = -1e-2 * (task_grad + penalty_grad)  # the step follows the full loss
    torch.testing.assert_close(model.theta.detach() - theta, step)
    torch.testing.assert_close(method.omega["theta"], -task_grad * step)


def _synthetic(tmp_path, scenario="task", *overrides):
    cfg = compose_config(*SYNTHETIC, "method=si", f"scenario={scenario}", f"results_dir={tmp_path}")
    sequence = instantiate(cfg.task, root=".", download=False, device="cpu", seed=0)
    scenario_ = Scenario.parse(cfg.scenario)
    torch.manual_seed(0)
    model = instantiate(
        cfg.model, input_shape=list(sequence.input_shape), head_sizes=scenario_.head_sizes(sequence)
    )
    sets = [scenario_.labelled(sequence, t, "train") for t in range(sequence.n_tasks)]
    return cfg, model, sets


def _train(cfg, method, model, data, t):
    method.before_task(model, t, data)
    train_task(cfg, method, model, data, t, 2)


def test_after_a_real_task_most_omegas_are_not_zero(tmp_path):
    # Keeping a view of the parameters instead of a copy makes every omega 0 (SI becomes
    # fine-tuning without a sound).
    cfg, model, sets = _synthetic(tmp_path)
    method = SI(penalty_weight=1.0)
    _train(cfg, method, model, sets[0], 0)
    for name in ["body.1.weight", "body.1.bias", "heads.0.weight"]:
        assert (method.omega[name] != 0).float().mean() > 0.8, name
    assert method.omega["body.1.weight"].sum() > 0  # the loss went down
    method.after_task(model, 0, sets[0])
    assert (method.importance["body.1.weight"] > 0).float().mean() > 0.5


def test_importances_accumulate_across_tasks(tmp_path):
    cfg, model, sets = _synthetic(tmp_path)
    method = SI(penalty_weight=1.0, damping=0.01)
    _train(cfg, method, model, sets[0], 0)
    method.after_task(model, 0, sets[0])
    first = {name: w.clone() for name, w in method.importance.items()}
    assert set(first) == {"body.1.weight", "body.1.bias", "heads.0.weight", "heads.0.bias"}
    _train(cfg, method, model, sets[1], 1)
    omega, start = copy.deepcopy(method.omega), copy.deepcopy(method.start)
    params = {name: p.detach().clone() for name, p in model.named_parameters()}
    method.after_task(model, 1, sets[1])
    for name, total in method.importance.items():
        new = omega[name] / ((params[name] - start[name]).square() + 0.01)
        torch.testing.assert_close(total, (first.get(name, 0) + new).clamp_min(0))
    assert not torch.allclose(method.importance["body.1.weight"], first["body.1.weight"])
    assert method.importance["heads.1.weight"].abs().sum() > 0


def test_the_penalty_is_c_omega_d2_and_a_step_follows_its_gradient(tmp_path):
    cfg, model, sets = _synthetic(tmp_path)
    method = SI(penalty_weight=2.0)
    _train(cfg, method, model, sets[0], 0)
    method.after_task(model, 0, sets[0])
    assert method.penalty(model) == 0
    anchor = {name: a.clone() for name, a in method.anchor.items()}
    with torch.no_grad():
        for p in model.parameters():
            p += 0.1
    params = dict(model.named_parameters())
    by_hand = sum(
        2.0 * (w * (params[name] - anchor[name]).square()).sum()
        for name, w in method.importance.items()
    )
    torch.testing.assert_close(method.penalty(model), by_hand)

    batch = sets[1].subset(torch.arange(16))
    method.before_task(model, 1, sets[1])
    reference = copy.deepcopy(model)
    expected = method.loss(reference, batch)
    expected.backward()
    loss = method.train_step(model, batch, torch.optim.SGD(model.parameters(), lr=1.0))
    torch.testing.assert_close(loss, expected.detach())
    for (name, before), after in zip(reference.named_parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(before - after, before.grad, msg=name)


def test_the_importances_survive_a_state_dict_round_trip(tmp_path):
    cfg, model, sets = _synthetic(tmp_path)
    method = SI(penalty_weight=1.0)
    _train(cfg, method, model, sets[0], 0)
    method.after_task(model, 0, sets[0])
    buffer = io.BytesIO()
    torch.save(method.state_dict(), buffer)
    buffer.seek(0)
    restored = SI(penalty_weight=1.0)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    for mine, theirs in [
        (method.importance, restored.importance),
        (method.anchor, restored.anchor),
    ]:
        assert mine.keys() == theirs.keys()
        assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert restored.seen_heads == [0]


@pytest.mark.parametrize("kwargs", [{"damping": 0.0}, {"penalty_weight": -1.0}])
def test_bad_settings_are_one_clear_error(kwargs):
    with pytest.raises(ConfigError, match=f"method.{next(iter(kwargs))}"):
        SI(**kwargs)


@pytest.mark.parametrize("scenario", ["task", "domain", "class"])
def test_runs_in_every_scenario_with_importances_for_what_was_trained(tmp_path, scenario):
    record = run_method(tmp_path, "si", f"scenario={scenario}")
    assert record["status"] == "completed"
    state = saved_method_state(record)
    heads = {"task": [0, 1], "domain": [0], "class": [0]}[scenario]
    assert_importances_of_what_was_trained(state, heads)
