"""EWC: the Fisher from per-example gradients (both kinds), its penalty, heads and state."""

import copy
import io

import pytest
import torch
from torch import nn

from cl_bayes.data import LabelledData
from cl_bayes.errors import ConfigError
from cl_bayes.methods.base import Method, logits
from cl_bayes.methods.ewc import EWC, fisher_information
from cl_bayes.methods.quadratic import trained_parameters
from cl_bayes.models.mlp import MLP
from tests.methods.runs import run_method, saved_method_state


def _data(n=20, head=0, n_outputs=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return LabelledData(
        torch.randn(n, 5, generator=g), torch.randint(0, n_outputs, (n,), generator=g), head, 3
    )


class Tempered(nn.Module):
    """An MLP whose logits are divided by a learnt temperature: not all ``nn.Linear``."""

    def __init__(self):
        super().__init__()
        self.mlp = MLP(5, [7, 6], [3, 3])
        self.temperature = nn.Parameter(torch.tensor(1.5))
        self.heads = self.mlp.heads

    def forward(self, x, head=0):
        return self.mlp(x, head) / self.temperature


def _hand_fisher(model, data, params, kind):
    """Mean over single examples, one autograd call per example and output."""
    fisher = {name: torch.zeros_like(p) for name, p in params.items()}
    for i in range(len(data)):
        log_p = logits(model, data.subset(torch.tensor([i])))[0].log_softmax(-1)
        if kind == "empirical":
            terms = [(int(data.y[i]), 1.0)]
        else:
            terms = [(k, log_p[k].detach().exp().item()) for k in range(len(log_p))]
        for k, weight in terms:
            grads = torch.autograd.grad(
                log_p[k], list(params.values()), retain_graph=True, allow_unused=True
            )
            for name, g in zip(params, grads, strict=True):
                if g is not None:
                    fisher[name] += weight * g.square() / len(data)
    return fisher


def _assert_all_close(actual, expected, **kwargs):
    assert actual.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], **kwargs)


@pytest.mark.parametrize("make_model", [lambda: MLP(5, [7, 6], [3, 3]), Tempered])
@pytest.mark.parametrize("kind", ["empirical", "expected"])
def test_the_fisher_is_the_mean_of_per_example_squared_gradients(make_model, kind):
    # MLP: the outer-product shortcut over nn.Linear layers; Tempered: torch.func's vmap.
    torch.manual_seed(0)
    model = make_model()
    data = _data(head=1)
    params = trained_parameters(model, [1])
    fisher = fisher_information(model, data, params, kind)
    named = dict(model.named_parameters())  # still the model's own parameters afterwards
    assert all(named[name] is p and isinstance(p, nn.Parameter) for name, p in params.items())
    _assert_all_close(fisher, _hand_fisher(model, data, params, kind), atol=1e-7, rtol=1e-5)
    assert all(f.abs().sum() > 0 for f in fisher.values())

    # Not the square of the batch-mean gradient (a common bug), which is far smaller.
    loss = -logits(model, data).log_softmax(-1).gather(1, data.y[:, None]).mean()
    batch = torch.autograd.grad(loss, list(params.values()))
    for f, g in zip(fisher.values(), batch, strict=True):
        assert not torch.allclose(f, g.square(), rtol=0.1, atol=0)
    assert sum(f.sum() for f in fisher.values()) > 2 * sum(g.square().sum() for g in batch)


def test_empirical_and_expected_fisher_differ():
    torch.manual_seed(0)
    model = MLP(5, [7, 6], [3])
    data = _data()
    params = trained_parameters(model, [0])
    empirical = fisher_information(model, data, params, "empirical")
    expected = fisher_information(model, data, params, "expected")
    for name in params:
        assert not torch.allclose(empirical[name], expected[name], rtol=0.05)


def test_the_fisher_is_taken_in_training_mode_with_gradients_whatever_the_callers_mode():
    torch.manual_seed(0)
    model = MLP(5, [7], [3])
    data = _data()
    model.eval()
    method = EWC(penalty_weight=1.0)
    with torch.no_grad():  # a zero Fisher from no_grad is the classic trap
        method.after_task(model, 0, data)
    assert not model.training  # the caller's mode is restored
    params = trained_parameters(model, [0])
    _assert_all_close(method.fisher[0], _hand_fisher(model, data, params, "expected"))
    assert all(f.abs().sum() > 0 for f in method.fisher[0].values())


def test_fisher_samples_average_over_that_many_random_examples():
    torch.manual_seed(0)
    model = MLP(5, [7], [3])
    data = _data(n=30)
    method = EWC(penalty_weight=1.0, fisher="empirical", fisher_samples=8)
    torch.manual_seed(5)
    method.after_task(model, 0, data)
    torch.manual_seed(5)
    chosen = data.subset(torch.randperm(30)[:8])
    expected = _hand_fisher(model, chosen, trained_parameters(model, [0]), "empirical")
    _assert_all_close(method.fisher[0], expected)


def _moved(model, seed=1, scale=0.3):
    """Shift every parameter by a random amount; returns the shifts."""
    g = torch.Generator().manual_seed(seed)
    shifts = {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            shifts[name] = scale * torch.randn(p.shape, generator=g)
            p += shifts[name]
    return shifts


def test_the_penalty_is_zero_at_the_anchor_and_half_lambda_f_d2_elsewhere():
    torch.manual_seed(0)
    model = MLP(5, [7], [3])
    data = _data()
    method = EWC(penalty_weight=3.0)
    method.after_task(model, 0, data)
    assert method.penalty(model) == 0
    torch.testing.assert_close(method.loss(model, data), Method().loss(model, data))

    shifts = _moved(model)
    by_hand = (
        0.5 * 3.0 * sum((f * shifts[name].square()).sum() for name, f in method.fisher[0].items())
    )
    assert by_hand > 0
    torch.testing.assert_close(method.penalty(model), by_hand)
    torch.testing.assert_close(method.loss(model, data), Method().loss(model, data) + by_hand)


def test_one_penalty_per_past_task():
    torch.manual_seed(0)
    model = MLP(5, [7], [3])
    method = EWC(penalty_weight=2.0)
    method.after_task(model, 0, _data(seed=0))
    _moved(model, seed=1)
    method.after_task(model, 1, _data(seed=1))
    assert len(method.fisher) == len(method.anchors) == 2
    _moved(model, seed=2)
    params = dict(model.named_parameters())
    by_hand = sum(
        0.5 * 2.0 * (f[name] * (params[name] - a[name]).square()).sum()
        for f, a in zip(method.fisher, method.anchors, strict=True)
        for name in f
    )
    torch.testing.assert_close(method.penalty(model), by_hand)


def test_a_step_follows_the_gradient_of_the_penalised_loss():
    # Task-incremental, second task: the step on head 1 must also pull the body and the past
    # head 0 (which this batch does not reach) back towards their anchors.
    torch.manual_seed(0)
    model = MLP(5, [7], [3, 3])
    method = EWC(penalty_weight=5.0)
    method.after_task(model, 0, _data(head=0))
    _moved(model)
    batch = _data(head=1, seed=3)
    reference = copy.deepcopy(model)
    expected_loss = method.loss(reference, batch)
    expected_loss.backward()
    loss = method.train_step(model, batch, torch.optim.SGD(model.parameters(), lr=1.0))
    torch.testing.assert_close(loss, expected_loss.detach())
    for (name, before), after in zip(reference.named_parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(before - after, before.grad, msg=name)
    assert reference.heads[0].weight.grad.abs().sum() > 0


def test_task_incremental_penalises_the_body_and_past_heads_but_not_the_new_head():
    torch.manual_seed(0)
    model = MLP(5, [7], [3, 3])
    method = EWC(penalty_weight=1.0)
    method.after_task(model, 0, _data(head=0))
    assert set(method.importance) == {
        "body.1.weight",
        "body.1.bias",
        "heads.0.weight",
        "heads.0.bias",
    }
    with torch.no_grad():
        model.heads[1].weight += 1.0  # training the new head costs nothing
    assert method.penalty(model) == 0
    method.after_task(model, 1, _data(head=1))
    # Task 1's Fisher comes from head 1 only; task 0's never saw head 1.
    assert method.fisher[1]["heads.0.weight"].abs().sum() == 0
    assert method.fisher[1]["heads.1.weight"].abs().sum() > 0
    assert "heads.1.weight" not in method.fisher[0]


def test_the_fisher_and_anchors_survive_a_state_dict_round_trip():
    torch.manual_seed(0)
    model = MLP(5, [7], [3, 3])
    method = EWC(penalty_weight=4.0)
    method.after_task(model, 0, _data(head=0))
    _moved(model)
    method.after_task(model, 1, _data(head=1))
    buffer = io.BytesIO()
    torch.save(method.state_dict(), buffer)
    buffer.seek(0)
    restored = EWC(penalty_weight=4.0)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    for a, b in [(method.fisher, restored.fisher), (method.anchors, restored.anchors)]:
        assert len(a) == len(b) == 2
        for x, y in zip(a, b, strict=True):
            _assert_all_close(y, x, atol=0, rtol=0)
    assert restored.seen_heads == [0, 1]
    _moved(model, seed=4)
    assert torch.equal(restored.penalty(model), method.penalty(model))


@pytest.mark.parametrize(
    "kwargs",
    [{"penalty_weight": -1.0}, {"fisher": "true"}, {"fisher_samples": 0}, {"fisher_samples": 2.5}],
)
def test_bad_settings_are_one_clear_error(kwargs):
    key = next(iter(kwargs))
    with pytest.raises(ConfigError, match=f"method.{key}"):
        EWC(**kwargs)


@pytest.mark.parametrize("scenario", ["task", "domain", "class"])
def test_runs_in_every_scenario_with_a_fisher_per_task(tmp_path, scenario):
    record = run_method(tmp_path, "ewc", f"scenario={scenario}")
    assert record["status"] == "completed"
    state = saved_method_state(record)
    assert len(state["fisher"]) == 2
    heads = {"task": [0, 1], "domain": [0], "class": [0]}[scenario]
    assert state["seen_heads"] == heads
    assert {f"heads.{h}.weight" for h in heads} <= set(state["fisher"][1])
    assert all(f["body.1.weight"].sum() > 0 for f in state["fisher"])
