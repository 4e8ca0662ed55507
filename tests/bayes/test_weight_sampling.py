"""``sampling="weights"``: one weight draw per Monte Carlo sample, shared by the batch."""

import math

import pytest
import torch

from cl_bayes.bayes.conv import MeanFieldConv2d
from cl_bayes.bayes.linear import MeanFieldLinear
from cl_bayes.errors import ConfigError
from cl_bayes.models.bayes_mlp import BayesMLP


def _with_random_variances(layer):
    with torch.no_grad():
        layer.weight_posterior_log_var.uniform_(-2, 0)
        layer.bias_posterior_log_var.uniform_(-2, 0)
    return layer


def _linear(sampling="weights"):
    torch.manual_seed(0)
    return _with_random_variances(MeanFieldLinear(6, 3, init_log_var=-1.0, sampling=sampling))


def _conv(sampling="weights"):
    torch.manual_seed(0)
    layer = MeanFieldConv2d(2, 3, kernel_size=3, stride=2, padding=1, sampling=sampling)
    return _with_random_variances(layer)


@pytest.mark.parametrize("make", [_linear, _conv], ids=["linear", "conv"])
def test_per_sample_op_applies_sample_k_weights_to_input_k(make):
    layer = make()
    k = 4
    weights = torch.randn((k,) + layer.weight_posterior_mean.shape)
    biases = torch.randn((k,) + layer.bias_posterior_mean.shape)
    shape = (5, 6) if isinstance(layer, MeanFieldLinear) else (5, 2, 7, 7)
    per_sample_x, shared_x = torch.randn((k,) + shape), torch.randn(shape)
    per_sample = layer.per_sample_op(per_sample_x, weights, biases)
    shared = layer.per_sample_op(shared_x, weights, biases)
    for i in range(k):
        expected = layer.linear_op(per_sample_x[i], weights[i], biases[i])
        assert torch.allclose(per_sample[i], expected, atol=1e-5)
        assert torch.allclose(
            shared[i], layer.linear_op(shared_x, weights[i], biases[i]), atol=1e-5
        )


@pytest.mark.parametrize("make", [_linear, _conv], ids=["linear", "conv"])
def test_one_draw_is_shared_by_the_whole_batch(make):
    layer = make()
    one = torch.randn((1, 6) if isinstance(layer, MeanFieldLinear) else (1, 2, 7, 7))
    batch = one.repeat(3, *([1] * (one.dim() - 1)))
    with torch.no_grad():
        out = layer(batch, n_samples=5)
        out_per_sample = layer(batch.expand(5, *batch.shape), n_samples=5)
    for sampled in (out, out_per_sample):
        assert torch.equal(sampled[:, 0], sampled[:, 1]) and torch.equal(
            sampled[:, 0], sampled[:, 2]
        )
        assert not torch.allclose(sampled[0], sampled[1])  # samples differ from each other
    # The local trick draws each example separately: identical inputs get different outputs.
    local = make("local")
    with torch.no_grad():
        out = local(batch, n_samples=5)
    assert not torch.allclose(out[:, 0], out[:, 1])


def test_weight_draws_have_the_posterior_moments_and_correlate_examples():
    layer = _linear()
    x = torch.randn(2, 6)
    w_var, b_var = layer.weight_posterior_log_var.exp(), layer.bias_posterior_log_var.exp()
    expected_mean = x @ layer.weight_posterior_mean.T + layer.bias_posterior_mean
    expected_var = (x**2) @ w_var.T + b_var
    expected_cov = (x[0] * x[1]) @ w_var.T + b_var  # shared weights: examples covary
    n = 200_000
    torch.manual_seed(1)
    with torch.no_grad():
        samples = layer(x, n_samples=n)
    centred = samples - samples.mean(0)
    sd = expected_var.sqrt().max().item()
    assert torch.allclose(samples.mean(0), expected_mean.detach(), atol=5 * sd / math.sqrt(n))
    assert torch.allclose(samples.var(0), expected_var.detach(), rtol=5 * math.sqrt(2 / n))
    covariance = (centred[:, 0] * centred[:, 1]).mean(0)
    assert torch.allclose(covariance, expected_cov.detach(), atol=6 * sd**2 / math.sqrt(n))


def test_weight_sampling_trains_means_and_variances():
    layer = _linear()
    layer(torch.randn(4, 6), n_samples=3).square().sum().backward()
    for parameter in layer.parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0


def test_bayes_mlp_passes_sampling_to_every_layer_and_rejects_unknown_modes():
    model = BayesMLP(8, [5, 4], [2, 2], sampling="weights")
    assert all(layer.sampling == "weights" for layer in model.layers([0, 1]))
    assert model(torch.randn(3, 8), head=1, n_samples=6).shape == (6, 3, 2)
    with pytest.raises(ConfigError, match="model.sampling must be one of local, weights"):
        BayesMLP(8, [5], [2], sampling="flipout")
    with pytest.raises(ValueError, match="sampling"):
        MeanFieldLinear(3, 2, sampling="flipout")
