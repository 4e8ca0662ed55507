"""The multi-head MLP: layer shapes, routing of examples to their own head, re-initialisation."""

import pytest
import torch

from cl_bayes.errors import ConfigError
from cl_bayes.models.mlp import MLP, reset_parameters, route_heads


@pytest.fixture
def model():
    torch.manual_seed(0)
    return MLP(input_shape=[3, 2, 2], hidden_sizes=[8, 6], head_sizes=[3, 3, 3])


def test_layers_follow_the_configured_sizes(model):
    linears = [m for m in model.body if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(12, 8), (8, 6)]
    assert [(h.in_features, h.out_features) for h in model.heads] == [(6, 3)] * 3
    # Images are flattened: (batch, channels, height, width) works as (batch, features).
    x = torch.randn(5, 3, 2, 2)
    torch.testing.assert_close(model(x, 1), model(x.flatten(1), 1))


def test_an_int_head_sends_the_whole_batch_through_that_head(model):
    x = torch.randn(7, 12)
    features = model.body(x)
    for k in range(3):
        torch.testing.assert_close(model(x, k), model.heads[k](features))
    assert not torch.allclose(model(x, 0), model(x, 1))  # the heads really differ


def test_a_mixed_batch_sends_each_example_to_its_own_head(model):
    x = torch.randn(9, 12)
    head = torch.tensor([2, 0, 1, 1, 2, 0, 0, 2, 1])
    out = model(x, head)
    assert out.shape == (9, 3)
    for i in range(9):
        torch.testing.assert_close(out[i : i + 1], model(x[i : i + 1], int(head[i])))


def test_a_mixed_batch_only_trains_the_heads_it_uses(model):
    x = torch.randn(6, 12)
    head = torch.tensor([0, 2, 2, 0, 2, 0])
    model(x, head).sum().backward()
    assert model.heads[1].weight.grad is None
    for k in (0, 2):
        assert model.heads[k].weight.grad.abs().sum() > 0
    # The gradient reaching head 2 comes from its own examples only.
    only_two = MLP(12, [8, 6], [3, 3, 3])
    only_two.load_state_dict(model.state_dict())
    only_two(x[head == 2], 2).sum().backward()
    torch.testing.assert_close(model.heads[2].weight.grad, only_two.heads[2].weight.grad)


def test_mixed_heads_route_samples_and_gradients_as_one_head_per_example(model):
    # Leading dimensions (Monte Carlo samples) before the batch, as MC dropout passes them.
    features = torch.randn(4, 9, 6, requires_grad=True)
    head = torch.tensor([2, 0, 2, 2, 0, 0, 0, 2, 2])  # head 1 unused
    out = route_heads(model.heads, features, head)
    assert out.shape == (4, 9, 3)
    one_by_one = torch.stack(
        [model.heads[int(k)](features[:, i]) for i, k in enumerate(head)], dim=1
    )
    torch.testing.assert_close(out, one_by_one)
    weights = torch.randn(4, 9, 3)
    (grad,) = torch.autograd.grad((out * weights).sum(), features)
    (expected,) = torch.autograd.grad((one_by_one * weights).sum(), features)
    torch.testing.assert_close(grad, expected)


@pytest.mark.parametrize("sizes", [[], [0], [16, -1]])
def test_hidden_sizes_must_be_positive_and_non_empty(sizes):
    with pytest.raises(ConfigError, match="hidden_sizes"):
        MLP(12, sizes, [2])


def test_reset_parameters_redraws_every_layer_from_the_torch_seed(model):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(1)
    reset_parameters(model)
    after = model.state_dict()
    assert all(not torch.equal(before[k], after[k]) for k in before)
    torch.manual_seed(1)
    fresh = MLP(12, [8, 6], [3, 3, 3])  # a new network drawn from the same seed
    for k, v in fresh.state_dict().items():
        torch.testing.assert_close(after[k], v, rtol=0, atol=0)


def test_without_dropout_the_network_and_its_parameter_names_are_unchanged(model):
    # The names every checkpoint written before dropout existed holds.
    names = ["body.1.weight", "body.1.bias", "body.3.weight", "body.3.bias"]
    names += [f"heads.{k}.{p}" for k in range(3) for p in ("weight", "bias")]
    assert list(model.state_dict()) == names
    with_dropout = MLP([3, 2, 2], [8, 6], [3, 3, 3], dropout=0.5)
    with_dropout.load_state_dict(model.state_dict())  # strict: the same names and shapes
    # Rate 0 drops nothing and draws nothing, in training mode too.
    x = torch.randn(5, 12)
    rng = torch.get_rng_state()
    out = model.train()(x, 1)
    assert torch.equal(torch.get_rng_state(), rng)
    h = x
    for linear in (model.body[1], model.body[3]):
        h = torch.relu(linear(h))
    torch.testing.assert_close(out, model.heads[1](h), rtol=0, atol=0)


def test_dropout_follows_each_hidden_relu_and_only_in_training_mode(model, monkeypatch):
    with_dropout = MLP([3, 2, 2], [8, 6], [3, 3, 3], dropout=0.3)
    with_dropout.load_state_dict(model.state_dict())
    x = torch.randn(5, 12)
    torch.testing.assert_close(with_dropout.eval()(x, 0), model.eval()(x, 0))
    dropped = []
    real = torch.nn.functional.dropout

    def spy(input, p=0.5, training=True, inplace=False):
        if training:
            dropped.append((tuple(input.shape), p, bool(torch.all(input >= 0))))
        return real(input, p, training, inplace)

    monkeypatch.setattr(torch.nn.functional, "dropout", spy)
    torch.manual_seed(0)
    out = with_dropout.train()(x, 0)
    # After the ReLU of each hidden layer (non-negative inputs), never on the inputs.
    assert dropped == [((5, 8), 0.3, True), ((5, 6), 0.3, True)]
    assert not torch.allclose(out, model(x, 0))


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5, True, "0.5"])
def test_dropout_must_be_a_probability_below_1(rate):
    with pytest.raises(ConfigError, match=r"model\.dropout must be a probability in \[0, 1\)"):
        MLP(12, [8], [2], dropout=rate)
