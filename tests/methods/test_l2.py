"""L2: a pull of (lambda / 2) ||theta - theta*||^2 towards the previous task's parameters."""

import copy
import io
from pathlib import Path

import pytest
import torch

from cl_bayes import checkpoint
from cl_bayes.data import LabelledData
from cl_bayes.errors import ConfigError
from cl_bayes.methods.base import Method
from cl_bayes.methods.l2 import L2
from cl_bayes.models.mlp import MLP
from tests.methods.runs import run_method


def _data(head=0, seed=0, n=16):
    g = torch.Generator().manual_seed(seed)
    return LabelledData(
        torch.randn(n, 5, generator=g), torch.randint(0, 3, (n,), generator=g), head, 3
    )


def _shift(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    shifts = {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            shifts[name] = 0.2 * torch.randn(p.shape, generator=g)
            p += shifts[name]
    return shifts


def test_the_penalty_is_half_lambda_squared_distance_over_the_body_and_past_heads():
    torch.manual_seed(0)
    model = MLP(5, [7], [3, 3])
    method = L2(penalty_weight=4.0)
    method.after_task(model, 0, _data(head=0))
    assert method.penalty(model) == 0
    shifts = _shift(model)
    # Task-incremental: the second task's head (heads.1) is new and not penalised.
    by_hand = 0.5 * 4.0 * sum(s.square().sum() for n, s in shifts.items() if "heads.1" not in n)
    torch.testing.assert_close(method.penalty(model), by_hand)
    batch = _data(head=1)
    torch.testing.assert_close(method.loss(model, batch), Method().loss(model, batch) + by_hand)


def test_the_anchor_is_a_copy_of_the_previous_tasks_parameters():
    torch.manual_seed(0)
    model = MLP(5, [7], [3])
    method = L2(penalty_weight=1.0)
    method.after_task(model, 0, _data())
    first = copy.deepcopy(dict(model.named_parameters()))
    _shift(model)
    for name, anchor in method.anchor.items():
        assert torch.equal(anchor, first[name])  # not moved along with the parameters
    method.after_task(model, 1, _data(seed=1))
    assert method.penalty(model) == 0  # re-anchored at the latest parameters


def test_a_step_follows_the_gradient_of_the_penalised_loss():
    torch.manual_seed(0)
    model = MLP(5, [7], [3, 3])
    method = L2(penalty_weight=2.0)
    method.after_task(model, 0, _data(head=0))
    _shift(model)
    batch = _data(head=1, seed=2)
    reference = copy.deepcopy(model)
    expected = method.loss(reference, batch)
    expected.backward()
    loss = method.train_step(model, batch, torch.optim.SGD(model.parameters(), lr=1.0))
    torch.testing.assert_close(loss, expected.detach())
    for (name, before), after in zip(reference.named_parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(before - after, before.grad, msg=name)


def test_the_anchor_survives_a_state_dict_round_trip():
    torch.manual_seed(0)
    model = MLP(5, [7], [3])
    method = L2(penalty_weight=1.0)
    method.after_task(model, 0, _data())
    buffer = io.BytesIO()
    torch.save(method.state_dict(), buffer)
    buffer.seek(0)
    restored = L2(penalty_weight=1.0)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    _shift(model)
    assert torch.equal(restored.penalty(model), method.penalty(model))


def test_a_negative_strength_is_one_clear_error():
    with pytest.raises(ConfigError, match="method.penalty_weight"):
        L2(penalty_weight=-0.5)


@pytest.mark.parametrize("scenario", ["task", "domain", "class"])
def test_runs_in_every_scenario_anchored_at_what_was_trained(tmp_path, scenario):
    record = run_method(tmp_path, "l2", f"scenario={scenario}")
    assert record["status"] == "completed"
    saved = checkpoint.load(Path(record["record_path"]).parent / checkpoint.CHECKPOINT_NAME)
    heads = {"task": [0, 1], "domain": [0], "class": [0]}[scenario]
    assert saved["method"]["seen_heads"] == heads
    assert set(saved["method"]["anchor"]) == {
        name
        for name in saved["model"]
        if name.startswith("body") or int(name.split(".")[1]) in heads
    }
    for name, anchor in saved["method"]["anchor"].items():
        assert torch.equal(anchor, saved["model"][name])
