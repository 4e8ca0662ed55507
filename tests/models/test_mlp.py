"""The multi-head MLP: layer shapes, routing of examples to their own head, re-initialisation."""

import pytest
import torch

from cl_bayes.errors import ConfigError
from cl_bayes.models.mlp import MLP, reset_parameters


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
