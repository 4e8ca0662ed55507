import pytest
import torch
import torch.nn.functional as F

from cl_bayes.bayes.conv import MeanFieldConv2d
from cl_bayes.bayes.linear import MeanFieldLinear
from cl_bayes.errors import ConfigError
from cl_bayes.models.bayes_cnn import BayesCNN


def _model(**options):
    torch.manual_seed(0)
    settings = dict(input_shape=[3, 8, 8], conv_channels=[4, 6], pool_every=1, hidden_sizes=[7])
    settings.update(options)
    return BayesCNN(head_sizes=[2, 2, 2], **settings)


def test_layers_follow_the_configuration():
    model = _model()
    kinds = [type(layer) for layer in model.body]
    assert kinds == [MeanFieldConv2d, MeanFieldConv2d, MeanFieldLinear]
    assert model.body[1].weight_posterior_mean.shape == (6, 4, 3, 3)
    # Two 2x2 pools: 8x8 -> 2x2, so the first linear layer sees 6 * 2 * 2 features.
    assert model.body[2].weight_posterior_mean.shape == (7, 24)
    assert model.heads[0].weight_posterior_mean.shape == (2, 7)
    pooled_twice_as_often = _model(pool_every=2)  # one pool: 8x8 -> 4x4
    assert pooled_twice_as_often.body[2].weight_posterior_mean.shape == (7, 6 * 4 * 4)


def test_mean_mode_is_the_deterministic_cnn_of_the_posterior_means():
    model = _model()
    x = torch.rand(5, 3, 8, 8)

    def conv(layer, h):
        return F.conv2d(h, layer.weight_posterior_mean, layer.bias_posterior_mean, padding=1)

    def linear(layer, h):
        return F.linear(h, layer.weight_posterior_mean, layer.bias_posterior_mean)

    h = F.max_pool2d(torch.relu(conv(model.body[0], x)), 2)
    h = F.max_pool2d(torch.relu(conv(model.body[1], h)), 2)
    h = torch.relu(linear(model.body[2], h.flatten(1)))
    assert torch.allclose(model(x, 1), linear(model.heads[1], h), atol=1e-6)


@pytest.mark.parametrize("sampling", ["local", "weights"])
def test_samples_have_their_shape_and_collapse_to_the_mean_without_variance(sampling):
    model = _model(sampling=sampling)
    x = torch.rand(5, 3, 8, 8)
    assert model(x, 2, n_samples=4).shape == (4, 5, 2)
    heads = torch.tensor([0, 2, 1, 2, 0])
    assert model(x, heads, n_samples=3).shape == (3, 5, 2)
    assert not torch.allclose(model(x, 0, n_samples=2)[0], model(x, 0, n_samples=2)[1])
    with torch.no_grad():
        for layer in model.layers([0, 1, 2]):
            layer.weight_posterior_log_var.fill_(-40.0)
            layer.bias_posterior_log_var.fill_(-40.0)
    sampled = model(x, heads, n_samples=3)
    mean = model(x, heads)
    for k in range(3):
        assert torch.allclose(sampled[k], mean, atol=1e-5)


@pytest.mark.parametrize(
    "pool_every, input_shape, flat_features",
    [(0, [3, 8, 8], 6 * 8 * 8), (3, [3, 8, 8], 6 * 8 * 8), (1, [3, 9, 7], 6 * 2 * 1)],
)
def test_pooling_options_and_odd_image_sizes(pool_every, input_shape, flat_features):
    model = _model(pool_every=pool_every, input_shape=input_shape)
    assert model.body[2].weight_posterior_mean.shape == (7, flat_features)
    assert model(torch.rand(2, *input_shape), 0, n_samples=3).shape == (3, 2, 2)


def test_convolutions_straight_into_the_heads():
    model = _model(hidden_sizes=[])
    assert model(torch.rand(2, 3, 8, 8), 0, n_samples=3).shape == (3, 2, 2)
    assert model.heads[0].weight_posterior_mean.shape == (2, 24)


def test_kl_covers_convolutions_linear_layers_and_the_given_heads():
    model = _model()
    with torch.no_grad():
        for layer in model.layers([0, 1, 2]):
            layer.posterior_to_prior()
    assert model.kl([0, 1, 2]).abs() < 1e-3
    with torch.no_grad():
        model.body[0].weight_posterior_mean.add_(0.5)
    conv_only = model.body[0].kl()
    assert conv_only > 1 and torch.isclose(model.kl([0]), conv_only, rtol=1e-4)
    model.kl([0]).backward()
    assert model.body[0].weight_posterior_mean.grad.abs().sum() > 0
    assert model.heads[1].weight_posterior_mean.grad is None


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(input_shape=[784]), "needs image inputs"),
        (dict(input_shape=784), "needs image inputs"),
        (dict(pool_every=1.5), "model.pool_every"),
        (dict(pool_every=-1), "model.pool_every"),
        (dict(conv_channels=[]), "model.conv_channels"),
        (dict(conv_channels=[4, 4, 4, 4]), "shrinks a 8x8 image"),
        (dict(sampling="flipout"), "model.sampling"),
        (dict(prior_var=0.0), "model.prior_var"),
    ],
)
def test_bad_options_are_config_errors(options, message):
    with pytest.raises(ConfigError, match=message):
        _model(**options)
