import math

import pytest
import torch
import torch.nn.functional as F

from cl_bayes.bayes.conv import MeanFieldConv2d
from cl_bayes.bayes.gaussian import kl_diagonal_gaussians
from cl_bayes.bayes.layer import MeanFieldLayer


def _layer(seed=0):
    torch.manual_seed(seed)
    layer = MeanFieldConv2d(2, 3, kernel_size=3, padding=1, prior_var=2.0, init_log_var=-1.0)
    with torch.no_grad():
        layer.weight_posterior_log_var.uniform_(-2, 0)
        layer.bias_posterior_log_var.uniform_(-2, 0)
    return layer


def test_shapes_prior_buffers_and_mean_mode():
    layer = _layer()
    assert layer.weight_posterior_mean.shape == (3, 2, 3, 3)
    assert {name for name, _ in layer.named_parameters()} == {
        "weight_posterior_mean",
        "weight_posterior_log_var",
        "bias_posterior_mean",
        "bias_posterior_log_var",
    }
    assert "weight_prior_log_var" in layer.state_dict()
    assert torch.allclose(layer.weight_prior_log_var, torch.full((3, 2, 3, 3), math.log(2.0)))
    x = torch.rand(4, 2, 5, 5)
    expected = F.conv2d(x, layer.weight_posterior_mean, layer.bias_posterior_mean, padding=1)
    assert torch.allclose(layer(x), expected)
    assert layer(x, n_samples=7).shape == (7, 4, 3, 5, 5)  # shared input, K draws
    per_sample = torch.rand(7, 4, 2, 5, 5)
    assert layer(per_sample, n_samples=7).shape == (7, 4, 3, 5, 5)
    assert torch.allclose(layer(per_sample)[2], layer(per_sample[2]), atol=1e-6)


def test_local_reparameterisation_has_the_analytic_moments():
    layer = _layer()
    x = torch.randn(2, 2, 4, 4)
    expected_mean = F.conv2d(x, layer.weight_posterior_mean, layer.bias_posterior_mean, padding=1)
    expected_var = F.conv2d(
        x**2,
        layer.weight_posterior_log_var.exp(),
        layer.bias_posterior_log_var.exp(),
        padding=1,
    )
    n = 100_000
    torch.manual_seed(1)
    with torch.no_grad():
        samples = layer(x, n_samples=n)
    sd_of_mean = (expected_var / n).sqrt().max().item()
    assert torch.allclose(samples.mean(0), expected_mean.detach(), atol=5 * sd_of_mean)
    assert torch.allclose(samples.var(0), expected_var.detach(), rtol=5 * math.sqrt(2 / n))


def test_local_reparameterisation_matches_sampling_the_kernels():
    layer = _layer()
    x = torch.randn(1, 2, 3, 3)
    n = 20_000
    torch.manual_seed(2)
    with torch.no_grad():
        weight_sd = layer.weight_posterior_log_var.mul(0.5).exp()
        bias_sd = layer.bias_posterior_log_var.mul(0.5).exp()
        direct = torch.stack(
            [
                F.conv2d(
                    x,
                    layer.weight_posterior_mean + weight_sd * torch.randn_like(weight_sd),
                    layer.bias_posterior_mean + bias_sd * torch.randn_like(bias_sd),
                    padding=1,
                )
                for _ in range(n)
            ]
        )
        trick = layer(x, n_samples=n)
    assert torch.allclose(direct.mean(0), trick.mean(0), atol=0.05)
    assert torch.allclose(direct.var(0), trick.var(0), rtol=0.06)


def test_kl_is_summed_over_kernels_and_biases_and_vanishes_after_posterior_to_prior():
    layer = _layer()
    expected = sum(
        torch.distributions.kl_divergence(
            torch.distributions.Normal(
                getattr(layer, f"{name}_posterior_mean"),
                getattr(layer, f"{name}_posterior_log_var").mul(0.5).exp(),
            ),
            torch.distributions.Normal(
                getattr(layer, f"{name}_prior_mean"),
                getattr(layer, f"{name}_prior_log_var").mul(0.5).exp(),
            ),
        ).sum()
        for name in ("weight", "bias")
    )
    assert torch.allclose(layer.kl(), expected)
    assert torch.allclose(
        layer.kl(),
        kl_diagonal_gaussians(
            layer.weight_posterior_mean,
            layer.weight_posterior_log_var,
            layer.weight_prior_mean,
            layer.weight_prior_log_var,
        )
        + kl_diagonal_gaussians(
            layer.bias_posterior_mean,
            layer.bias_posterior_log_var,
            layer.bias_prior_mean,
            layer.bias_prior_log_var,
        ),
    )
    layer.posterior_to_prior()
    assert layer.kl().abs() < 1e-5
    layer.kl().backward()
    assert layer.weight_prior_mean.grad is None and layer.weight_posterior_mean.grad is not None


def test_the_base_layer_needs_its_linear_operation():
    with pytest.raises(TypeError, match="linear_op"):
        MeanFieldLayer((3, 2), (3,), 2)
