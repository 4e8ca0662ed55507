"""Online EWC: one running Fisher with decay, one anchor (the latest parameters)."""

import io

import pytest
import torch

from cl_bayes.data import LabelledData
from cl_bayes.errors import ConfigError
from cl_bayes.methods.ewc import fisher_information
from cl_bayes.methods.online_ewc import OnlineEWC
from cl_bayes.methods.quadratic import trained_parameters
from cl_bayes.models.mlp import MLP
from tests.methods.runs import (
    assert_importances_of_what_was_trained,
    run_method,
    saved_method_state,
)


def _data(head=0, seed=0, n=20):
    g = torch.Generator().manual_seed(seed)
    return LabelledData(
        torch.randn(n, 5, generator=g), torch.randint(0, 3, (n,), generator=g), head, 3
    )


def _move(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p += 0.3 * torch.randn(p.shape, generator=g)


@pytest.mark.parametrize("decay", [0.5, 1.0, 0.0])
def test_the_running_fisher_decays_and_adds_over_three_tasks(decay):
    torch.manual_seed(0)
    model = MLP(5, [7], [3, 3, 3])
    method = OnlineEWC(penalty_weight=2.0, decay=decay, fisher="empirical")
    fishers = []
    for t in range(3):
        _move(model, seed=t)  # each task ends somewhere else
        data = _data(head=t, seed=t)
        params = trained_parameters(model, range(t + 1))
        fishers.append(fisher_information(model, data, params, "empirical"))
        method.after_task(model, t, data)
    f1, f2, f3 = fishers
    zero = torch.zeros(())
    for name, running in method.importance.items():  # heads.k enter with task k's Fisher
        expected = f3[name] + decay * f2.get(name, zero) + decay**2 * f1.get(name, zero)
        torch.testing.assert_close(running, expected)
    assert set(method.importance) == set(trained_parameters(model, [0, 1, 2]))
    assert method.importance["body.1.weight"].sum() > 0


def test_one_anchor_the_latest_parameters_and_half_lambda_f_d2():
    torch.manual_seed(0)
    model = MLP(5, [7], [3])
    method = OnlineEWC(penalty_weight=3.0, decay=0.9)
    method.after_task(model, 0, _data(seed=0))
    _move(model, seed=1)
    method.after_task(model, 1, _data(seed=1))
    latest = {name: p.detach().clone() for name, p in model.named_parameters()}
    for name, anchor in method.anchor.items():
        assert torch.equal(anchor, latest[name])
        assert anchor.data_ptr() != dict(model.named_parameters())[name].data_ptr()  # a copy
    assert method.penalty(model) == 0
    _move(model, seed=2)
    params = dict(model.named_parameters())
    by_hand = sum(
        0.5 * 3.0 * (f * (params[name] - latest[name]).square()).sum()
        for name, f in method.importance.items()
    )
    torch.testing.assert_close(method.penalty(model), by_hand)


def test_the_running_fisher_survives_a_state_dict_round_trip():
    torch.manual_seed(0)
    model = MLP(5, [7], [3, 3])
    method = OnlineEWC(penalty_weight=1.0, decay=0.7)
    method.after_task(model, 0, _data(head=0))
    _move(model, seed=1)
    method.after_task(model, 1, _data(head=1))
    buffer = io.BytesIO()
    torch.save(method.state_dict(), buffer)
    buffer.seek(0)
    restored = OnlineEWC(penalty_weight=1.0, decay=0.7)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    for mine, theirs in [
        (method.importance, restored.importance),
        (method.anchor, restored.anchor),
    ]:
        assert mine.keys() == theirs.keys()
        assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    _move(model, seed=2)
    assert torch.equal(restored.penalty(model), method.penalty(model))
    # The next task adds to the restored running Fisher exactly as to the original.
    method.after_task(model, 2, _data(head=1, seed=2))
    restored.after_task(model, 2, _data(head=1, seed=2))
    assert all(torch.equal(method.importance[k], restored.importance[k]) for k in method.importance)


@pytest.mark.parametrize(
    "kwargs", [{"decay": 1.5}, {"decay": -0.1}, {"penalty_weight": -1}, {"fisher": "sampled"}]
)
def test_bad_settings_are_one_clear_error(kwargs):
    with pytest.raises(ConfigError, match=f"method.{next(iter(kwargs))}"):
        OnlineEWC(**kwargs)


@pytest.mark.parametrize("scenario", ["task", "domain", "class"])
def test_runs_in_every_scenario_with_one_running_fisher(tmp_path, scenario):
    record = run_method(tmp_path, "online_ewc", f"scenario={scenario}", "task.n_tasks=3")
    assert record["status"] == "completed"
    state = saved_method_state(record)
    heads = {"task": [0, 1, 2], "domain": [0], "class": [0]}[scenario]
    assert_importances_of_what_was_trained(state, heads)
