import copy
import io
import math
from functools import partial

import torch
from torch.distributions import Normal, kl_divergence

from cl_bayes.bayes.layer import MeanFieldLayer
from cl_bayes.bayes.linear import MeanFieldLinear


def _layer(seed=0):
    torch.manual_seed(seed)
    layer = MeanFieldLinear(6, 3, prior_var=2.0, init_log_var=-1.0)
    with torch.no_grad():
        layer.weight_posterior_log_var.uniform_(-2, 0)
        layer.bias_posterior_log_var.uniform_(-2, 0)
    return layer


def test_prior_is_persistent_buffers_not_parameters():
    layer = _layer()
    names = {name for name, _ in layer.named_parameters()}
    assert names == {
        "weight_posterior_mean",
        "weight_posterior_log_var",
        "bias_posterior_mean",
        "bias_posterior_log_var",
    }
    state = layer.state_dict()
    for name in (
        "weight_prior_mean",
        "weight_prior_log_var",
        "bias_prior_mean",
        "bias_prior_log_var",
    ):
        assert name in state and not state[name].requires_grad
    assert torch.all(layer.weight_prior_mean == 0)
    assert torch.allclose(layer.weight_prior_log_var, torch.full((3, 6), math.log(2.0)))


def test_local_reparameterisation_has_the_analytic_moments():
    layer = _layer()
    x = torch.randn(4, 6)
    expected_mean = x @ layer.weight_posterior_mean.T + layer.bias_posterior_mean
    expected_var = (
        x**2
    ) @ layer.weight_posterior_log_var.exp().T + layer.bias_posterior_log_var.exp()
    torch.manual_seed(1)
    with torch.no_grad():
        samples = layer(x, n_samples=200_000)  # one vectorised pass, shared input
    assert samples.shape == (200_000, 4, 3)
    # Standard errors: sd / sqrt(n) for the mean, about var * sqrt(2 / n) for the variance.
    assert torch.allclose(
        samples.mean(0), expected_mean, atol=5 * (expected_var / 2e5).sqrt().max().item()
    )
    assert torch.allclose(samples.var(0), expected_var, rtol=5 * math.sqrt(2 / 2e5))


def test_local_reparameterisation_matches_sampling_weights():
    """Pre-activations drawn by the trick have the law of x W^T + b with W, b ~ posterior."""
    layer = _layer()
    x = torch.randn(2, 6)
    torch.manual_seed(2)
    n = 100_000
    with torch.no_grad():
        w = layer.weight_posterior_mean + layer.weight_posterior_log_var.mul(
            0.5
        ).exp() * torch.randn(n, 3, 6)
        b = layer.bias_posterior_mean + layer.bias_posterior_log_var.mul(0.5).exp() * torch.randn(
            n, 3
        )
        direct = torch.einsum("bi,noi->nbo", x, w) + b[:, None, :]
        trick = layer(x, n_samples=n)
    assert torch.allclose(direct.mean(0), trick.mean(0), atol=0.02)
    assert torch.allclose(direct.var(0), trick.var(0), rtol=0.03)


def test_per_sample_inputs_and_mean_mode():
    layer = _layer()
    x = torch.randn(5, 4, 6)
    assert layer(x, n_samples=5).shape == (5, 4, 3)
    flat = torch.randn(4, 6)
    mean = layer(flat)
    assert torch.allclose(mean, flat @ layer.weight_posterior_mean.T + layer.bias_posterior_mean)
    assert torch.equal(layer(flat), mean)  # deterministic


def test_kl_sums_weights_and_biases_and_vanishes_after_posterior_to_prior():
    layer = _layer()
    assert layer.kl() > 0
    layer.posterior_to_prior()
    assert torch.equal(layer.weight_prior_mean, layer.weight_posterior_mean.detach())
    assert torch.equal(layer.bias_prior_log_var, layer.bias_posterior_log_var.detach())
    assert layer.kl().abs() < 1e-5
    # The prior is a copy: moving the posterior leaves it where it was.
    before = layer.weight_prior_mean.clone()
    with torch.no_grad():
        layer.weight_posterior_mean.add_(1.0)
    assert torch.equal(layer.weight_prior_mean, before)
    # Prior buffers get no gradient from the KL.
    layer.kl().backward()
    assert layer.weight_prior_mean.grad is None and layer.weight_posterior_mean.grad is not None


def _reference_kl(layer):
    return sum(
        kl_divergence(
            Normal(
                getattr(layer, f"{name}_posterior_mean"),
                getattr(layer, f"{name}_posterior_log_var").mul(0.5).exp(),
            ),
            Normal(
                getattr(layer, f"{name}_prior_mean"),
                getattr(layer, f"{name}_prior_log_var").mul(0.5).exp(),
            ),
        ).sum()
        for name in ("weight", "bias")
    )


def test_the_kl_follows_every_change_of_the_prior():
    """In-place writes, loading, resetting, copying and casting: the KL reads the prior now."""
    layer = _layer()
    assert torch.allclose(layer.kl(), _reference_kl(layer))
    with torch.no_grad():  # an in-place write to a prior buffer
        layer.weight_prior_log_var.add_(0.5)
    assert torch.allclose(layer.kl(), _reference_kl(layer))
    other = _layer(seed=1)
    other.posterior_to_prior()
    layer.load_state_dict(other.state_dict())
    assert layer.kl().abs() < 1e-5
    with torch.no_grad():
        layer.weight_posterior_mean.add_(0.3)
    layer.reset_prior()
    assert torch.allclose(layer.kl(), _reference_kl(layer))
    layer.kl()
    layer.posterior_to_prior()
    assert copy.deepcopy(layer).kl().abs() < 1e-5
    layer.double()  # new buffer tensors
    assert layer.kl().dtype == torch.double
    assert torch.allclose(layer.kl(), _reference_kl(layer))


def test_the_prior_precision_is_kept_until_the_prior_changes():
    layer = _layer()
    kept = layer.prior_precision()
    assert all(a is b for a, b in zip(layer.prior_precision(), kept, strict=True))
    assert torch.allclose(kept[0], (-layer.weight_prior_log_var).exp())
    layer.posterior_to_prior()
    fresh = layer.prior_precision()
    assert fresh[0] is not kept[0]
    assert torch.allclose(fresh[0], (-layer.weight_posterior_log_var.detach()).exp())


def test_copies_and_reloaded_layers_use_their_own_prior_precision():
    """A copy's prior buffers start a new version count: the kept precision must not carry over."""
    layer = _layer()
    layer.kl()  # keeps the precision of the first prior
    layer.posterior_to_prior()
    buffer = io.BytesIO()
    torch.save(layer, buffer)
    buffer.seek(0)
    for other in (copy.deepcopy(layer), torch.load(buffer, weights_only=False)):
        with torch.no_grad():
            other.weight_posterior_mean.add_(0.3)
        assert torch.allclose(other.kl(), _reference_kl(other))


def test_a_layer_built_in_inference_mode_computes_its_kl():
    """Inference tensors keep no version counter: the precision is computed, not kept."""
    with torch.inference_mode():
        layer = _layer()
        inside = layer.kl()
        assert torch.allclose(inside, _reference_kl(layer))
        layer.weight_prior_log_var.add_(0.5)  # an untracked in-place write
        assert torch.allclose(layer.kl(), _reference_kl(layer))
    assert torch.allclose(layer.kl(), _reference_kl(layer))


def test_the_fused_local_reparameterisation_matches_autograd_through_its_steps():
    """One node with a hand-written backward: the generic layer's values and gradients."""
    layer = _layer().double()
    for n_samples, x in (
        (1, torch.randn(4, 6, dtype=torch.double)),  # the first layer, K = 1
        (3, torch.randn(4, 6, dtype=torch.double)),  # K samples share the moments
        (None, torch.randn(12, 6, dtype=torch.double, requires_grad=True)),  # one per row
    ):
        inputs = [x, *layer.parameters()] if x.requires_grad else list(layer.parameters())
        results = []
        for sample_local in (layer.sample_local, partial(MeanFieldLayer.sample_local, layer)):
            torch.manual_seed(5)
            out = sample_local(x, n_samples)
            loss = (out * torch.linspace(-1, 1, out.numel()).double().view_as(out)).sum()
            results.append((out, torch.autograd.grad(loss + (out**2).sum(), inputs)))
        (fused, fused_grads), (generic, generic_grads) = results
        assert fused.shape == generic.shape and torch.allclose(fused, generic)
        for got, want in zip(fused_grads, generic_grads, strict=True):
            assert torch.allclose(got, want)

    def with_fixed_noise(x, *parameters):  # gradcheck perturbs the parameters in place
        torch.manual_seed(6)
        return layer.sample_local(x, 2)

    x = torch.randn(3, 6, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(with_fixed_noise, (x, *layer.parameters()))
