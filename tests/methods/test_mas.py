"""MAS: per-example output sensitivity (closed form for a linear model), summed over tasks."""

import io

import pytest
import torch
from torch import nn

from cl_bayes.data import LabelledData
from cl_bayes.errors import ConfigError
from cl_bayes.methods.mas import MAS
from cl_bayes.models.mlp import MLP
from tests.methods.runs import (
    assert_importances_of_what_was_trained,
    run_method,
    saved_method_state,
)


class LinearHeads(nn.Module):
    """``f(x) = W x + b`` per head, from ``nn.Linear`` (the outer-product shortcut)."""

    def __init__(self, inputs=4, outputs=5, heads=2):
        super().__init__()
        self.heads = nn.ModuleList(nn.Linear(inputs, outputs) for _ in range(heads))

    def forward(self, x, head=0):
        return self.heads[head](x)


class RawLinear(nn.Module):
    """``f(x) = W x + b`` from bare parameters (``torch.func``'s per-example Jacobians)."""

    def __init__(self, inputs=4, outputs=5):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(outputs, inputs))
        self.bias = nn.Parameter(torch.randn(outputs))

    def forward(self, x, head=0):
        return x @ self.weight.T + self.bias


def _data(n=30, n_outputs=5, head=0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return LabelledData(
        torch.randn(n, 4, generator=g), torch.zeros(n, dtype=torch.long), head, n_outputs
    )


@pytest.mark.parametrize("make_model", [LinearHeads, RawLinear])
@pytest.mark.parametrize("n_outputs", [5, 3])  # class-incremental: only the active outputs
def test_the_importance_of_a_linear_model_is_its_closed_form(make_model, n_outputs):
    torch.manual_seed(0)
    model = make_model()
    data = _data(n_outputs=n_outputs)
    method = MAS(penalty_weight=1.0)
    method.after_task(model, 0, data)
    prefix = "heads.0." if make_model is LinearHeads else ""
    weight, bias = (getattr(model.heads[0] if prefix else model, k) for k in ("weight", "bias"))
    # d ||f||^2 / dW = 2 f x^T and d ||f||^2 / db = 2 f, per example, over the active outputs.
    f = (data.x @ weight.T + bias).detach()
    f[:, n_outputs:] = 0
    by_hand_w = (2 * f[:, :, None] * data.x[:, None, :]).abs().mean(0)
    by_hand_b = (2 * f).abs().mean(0)
    torch.testing.assert_close(method.importance[prefix + "weight"], by_hand_w)
    torch.testing.assert_close(method.importance[prefix + "bias"], by_hand_b)
    # Per example: the absolute value of the batch's summed gradient would be smaller.
    batch = (2 * f[:, :, None] * data.x[:, None, :]).mean(0).abs()
    assert (by_hand_w - batch).sum() > 0.1 * by_hand_w.sum()
    assert (method.importance[prefix + "weight"][n_outputs:] == 0).all()


def test_importances_are_summed_across_tasks():
    torch.manual_seed(0)
    model = MLP(4, [6], [5])
    method = MAS(penalty_weight=1.0)
    method.after_task(model, 0, _data(seed=0))
    first = {k: v.clone() for k, v in method.importance.items()}
    with torch.no_grad():
        for p in model.parameters():
            p += 0.2
    second = method.compute_importance(model, _data(seed=1))
    method.after_task(model, 1, _data(seed=1))
    for name, total in method.importance.items():
        torch.testing.assert_close(total, first[name] + second[name])
    assert all(second[name].sum() > 0 for name in second)


def test_the_penalty_is_lambda_omega_d2_anchored_at_the_latest_parameters():
    torch.manual_seed(0)
    model = MLP(4, [6], [5, 5])
    method = MAS(penalty_weight=3.0)
    method.after_task(model, 0, _data(head=0))
    assert set(method.importance) == {
        "body.1.weight",
        "body.1.bias",
        "heads.0.weight",
        "heads.0.bias",
    }
    assert method.penalty(model) == 0
    anchor = {name: p.detach().clone() for name, p in model.named_parameters()}
    with torch.no_grad():
        for p in model.parameters():
            p -= 0.1
    params = dict(model.named_parameters())
    by_hand = sum(
        3.0 * (w * (params[name] - anchor[name]).square()).sum()
        for name, w in method.importance.items()
    )
    torch.testing.assert_close(method.penalty(model), by_hand)


def test_the_importances_survive_a_state_dict_round_trip():
    torch.manual_seed(0)
    model = MLP(4, [6], [5])
    method = MAS(penalty_weight=1.0)
    method.after_task(model, 0, _data())
    buffer = io.BytesIO()
    torch.save(method.state_dict(), buffer)
    buffer.seek(0)
    restored = MAS(penalty_weight=1.0)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    for mine, theirs in [
        (method.importance, restored.importance),
        (method.anchor, restored.anchor),
    ]:
        assert mine.keys() == theirs.keys()
        assert all(torch.equal(mine[k], theirs[k]) for k in mine)


def test_a_negative_strength_is_one_clear_error():
    with pytest.raises(ConfigError, match="method.penalty_weight"):
        MAS(penalty_weight=-1.0)


@pytest.mark.parametrize("scenario", ["task", "domain", "class"])
def test_runs_in_every_scenario_with_importances_for_what_was_trained(tmp_path, scenario):
    record = run_method(tmp_path, "mas", f"scenario={scenario}")
    assert record["status"] == "completed"
    state = saved_method_state(record)
    heads = {"task": [0, 1], "domain": [0], "class": [0]}[scenario]
    assert_importances_of_what_was_trained(state, heads)
