"""``sampling="weights"``: one weight draw per Monte Carlo sample, shared by the batch."""

import math
from functools import partial

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from cl_bayes.bayes.conv import MeanFieldConv2d
from cl_bayes.bayes.layer import MeanFieldLayer
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


def _loop_over_samples(layer, x, n_samples):
    """Reference: the layer's K weight draws applied one sample at a time.

    Draws the noise as the layer does (all the weights' draws, then all the biases'), so
    after the same seed it uses the same numbers.
    """
    weight_noise = torch.randn((n_samples, *layer.weight_posterior_mean.shape), dtype=x.dtype)
    bias_noise = torch.randn((n_samples, *layer.bias_posterior_mean.shape), dtype=x.dtype)
    weight_std = layer.weight_posterior_log_var.mul(0.5).exp()
    bias_std = layer.bias_posterior_log_var.mul(0.5).exp()
    outputs = []
    for k in range(n_samples):
        weight = layer.weight_posterior_mean + weight_std * weight_noise[k]
        bias = layer.bias_posterior_mean + bias_std * bias_noise[k]
        outputs.append(torch.nn.functional.linear(x if x.dim() == 2 else x[k], weight, bias))
    return torch.stack(outputs)


def _weighted_sum(out):
    """A loss whose gradient differs from element to element."""
    return (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum()


@pytest.mark.parametrize("shared", [True, False], ids=["shared input", "one input per sample"])
def test_batched_weight_sampling_equals_a_loop_over_samples_with_the_same_noise(shared):
    layer = _linear().double()
    k = 5
    x = torch.randn((4, 6) if shared else (k, 4, 6), dtype=torch.double, requires_grad=True)
    inputs = [x, *layer.parameters()]
    results = []
    for forward in (layer, partial(_loop_over_samples, layer)):
        torch.manual_seed(3)
        out = forward(x, n_samples=k) if forward is layer else forward(x, k)
        results.append((out, torch.autograd.grad(_weighted_sum(out) + (out**2).sum(), inputs)))
    (batched, batched_grads), (loop, loop_grads) = results
    assert batched.shape == loop.shape == (k, 4, 3)
    assert torch.allclose(batched, loop)
    assert not torch.allclose(batched[0], batched[1])  # K distinct draws
    for got, want in zip(batched_grads, loop_grads, strict=True):
        assert got.abs().sum() > 0 and torch.allclose(got, want)


def test_the_batched_linear_layer_draws_what_the_generic_layer_draws():
    """Same seed, same draws (the generic path draws weight by weight as before)."""
    layer = _linear()
    x = torch.randn(4, 6)
    results = []
    for sample_weights in (layer.sample_weights, partial(MeanFieldLayer.sample_weights, layer)):
        torch.manual_seed(4)
        out = sample_weights(x, 7)
        results.append((out, torch.autograd.grad(_weighted_sum(out), list(layer.parameters()))))
    (batched, batched_grads), (generic, generic_grads) = results
    # float32: equal up to rounding (a fused multiply-add, a batched product)
    assert torch.allclose(batched, generic, rtol=1e-6, atol=1e-6)
    for got, want in zip(batched_grads, generic_grads, strict=True):
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-6)


def test_batched_weight_sampling_passes_gradcheck():
    layer = _linear().double()

    def with_fixed_noise(x, *parameters):  # gradcheck perturbs the parameters in place
        torch.manual_seed(6)
        return layer(x, n_samples=3)

    for shape in ((4, 6), (3, 4, 6)):
        x = torch.randn(shape, dtype=torch.double, requires_grad=True)
        assert torch.autograd.gradcheck(with_fixed_noise, (x, *layer.parameters()))


def test_per_example_heads_get_their_own_head_with_k_weight_samples():
    """Routing to per-example heads: each head's rows get that head's K draws."""
    torch.manual_seed(0)
    model = BayesMLP(6, [5, 4], [3, 3, 3], init_log_var=-1.0, sampling="weights").double()
    x = torch.randn(7, 6, dtype=torch.double)
    x[1] = x[2] = x[0]
    heads = torch.tensor([2, 0, 2, 1, 0, 2, 1])
    k = 4
    parameters = list(model.parameters())
    torch.manual_seed(8)
    routed = model(x, heads, n_samples=k)
    routed_loss = _weighted_sum(routed) + model.kl([0, 1, 2])
    routed_grads = torch.autograd.grad(routed_loss, parameters)

    torch.manual_seed(8)
    h = x
    for layer in model.body:
        h = torch.relu(_loop_over_samples(layer, h, k))
    expected = torch.empty(k, 7, 3, dtype=torch.double)
    for head in range(3):  # route_heads visits the heads in increasing index order
        rows = heads == head
        expected[:, rows] = _loop_over_samples(model.heads[head], h[:, rows], k)
    kl = sum(
        kl_divergence(
            Normal(getattr(layer, f"{name}_posterior_mean"), posterior_std),
            Normal(getattr(layer, f"{name}_prior_mean"), 1.0),
        ).sum()
        for layer in model.layers([0, 1, 2])
        for name in ("weight", "bias")
        for posterior_std in [getattr(layer, f"{name}_posterior_log_var").mul(0.5).exp()]
    )
    expected_grads = torch.autograd.grad(_weighted_sum(expected) + kl, parameters)

    assert routed.shape == (k, 7, 3) and torch.allclose(routed, expected)
    assert torch.allclose(model.kl([0, 1, 2]), kl)
    for got, want in zip(routed_grads, expected_grads, strict=True):
        assert got.abs().sum() > 0 and torch.allclose(got, want)
    # One input: through the same head, the same draws; through another head, other draws.
    assert torch.equal(routed[:, 0], routed[:, 2])
    assert not torch.allclose(routed[:, 0], routed[:, 1])
