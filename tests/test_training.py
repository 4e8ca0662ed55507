import pytest
import torch

from cl_bayes.data import LabelledData
from cl_bayes.errors import TrainingDiverged
from cl_bayes.models.mlp import MLP
from cl_bayes.training import EXPLOSION_FACTOR, fit, plain_step


def _data(n: int = 32) -> LabelledData:
    g = torch.Generator().manual_seed(0)
    return LabelledData(
        torch.randn(n, 5, generator=g), torch.randint(0, 2, (n,), generator=g), 0, 2
    )


def _scripted_step(losses):
    """A step function returning the given losses in turn (one per call), touching nothing."""
    values = iter(losses)

    def step(model, batch, optimizer):
        return torch.tensor(float(next(values)))

    return step


def test_fit_calls_the_step_function_once_per_batch_and_averages_by_example():
    calls = []

    def step(model, batch, optimizer):
        calls.append(len(batch))
        return torch.tensor(float(len(calls)))

    model = MLP(5, [4], [2])
    history = fit(
        model, _data(10), step, torch.optim.SGD(model.parameters(), 0.1), 2, 4, "t", False
    )
    assert calls == [4, 4, 2, 4, 4, 2]
    # Example-weighted means of the batch losses 1, 2, 3 and then 4, 5, 6.
    assert history == pytest.approx([(4 * 1 + 4 * 2 + 2 * 3) / 10, (4 * 4 + 4 * 5 + 2 * 6) / 10])


def test_plain_step_takes_one_gradient_step_and_returns_the_detached_loss():
    torch.manual_seed(0)
    model = MLP(5, [4], [2])
    data = _data()
    before = [p.detach().clone() for p in model.parameters()]
    loss = torch.nn.functional.cross_entropy(model(data.x, 0), data.y)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    value = plain_step(
        lambda m, b: torch.nn.functional.cross_entropy(m(b.x, 0), b.y),
        model,
        data,
        torch.optim.SGD(model.parameters(), lr=0.5),
    )
    assert not value.requires_grad
    torch.testing.assert_close(value, loss.detach())
    for old, new, grad in zip(before, model.parameters(), grads, strict=True):
        torch.testing.assert_close(new.detach(), old - 0.5 * grad)


def test_a_loss_that_explodes_by_orders_of_magnitude_is_divergence():
    model = MLP(5, [4], [2])
    step = _scripted_step([0.7, 0.5, 0.7, 4 * EXPLOSION_FACTOR])
    with pytest.raises(TrainingDiverged, match=r"exploded .* task 3/5, epoch 2 .*optimizer.lr"):
        fit(model, _data(8), step, None, 3, 4, "task 3/5", False)


def test_a_loss_that_rises_but_stays_within_the_factor_is_training():
    model = MLP(5, [4], [2])
    # Far above the first batch's loss, yet below the factor times max(first loss, 1).
    history = fit(
        model,
        _data(8),
        _scripted_step([0.01, 0.01, 5.0, 5.0, 900.0, 900.0]),
        None,
        3,
        4,
        "t",
        False,
    )
    assert history == pytest.approx([0.01, 5.0, 900.0])


def test_a_nan_loss_is_divergence():
    model = MLP(5, [4], [2])
    with pytest.raises(TrainingDiverged, match="nan in t, epoch 1"):
        fit(model, _data(8), _scripted_step([0.5, float("nan")]), None, 1, 4, "t", False)


def test_steps_take_exactly_that_many_steps_the_last_pass_cut_short():
    calls = []

    def step(model, batch, optimizer):
        calls.append(len(batch))
        return torch.tensor(float(len(calls)))

    model = MLP(5, [4], [2])
    # 10 examples in batches of 4: 3 steps per pass; 7 steps = two passes and one step.
    history = fit(model, _data(10), step, None, 99, 4, "t", False, steps=7)
    assert calls == [4, 4, 2, 4, 4, 2, 4]
    assert history == pytest.approx([(4 * 1 + 4 * 2 + 2 * 3) / 10, (4 * 4 + 4 * 5 + 2 * 6) / 10, 7])


def test_without_steps_the_epochs_decide(tiny_cfg, tmp_path, cached_data):
    from cl_bayes.config import check_config
    from cl_bayes.errors import ConfigError

    with pytest.raises(ConfigError, match="train.steps must be a positive whole number"):
        check_config(tiny_cfg("train.steps=0"))
    check_config(tiny_cfg("train.steps=20"))
