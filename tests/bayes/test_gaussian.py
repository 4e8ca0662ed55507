import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from cl_bayes.bayes.gaussian import kl_diagonal_gaussians


def test_kl_matches_torch_distributions_summed():
    generator = torch.Generator().manual_seed(0)
    shape = (7, 5)
    mq, mp = torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)
    lvq, lvp = torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)
    expected = kl_divergence(Normal(mq, (0.5 * lvq).exp()), Normal(mp, (0.5 * lvp).exp())).sum()
    assert torch.allclose(kl_diagonal_gaussians(mq, lvq, mp, lvp), expected, rtol=1e-5)


def test_kl_is_zero_when_posterior_equals_prior_and_positive_otherwise():
    mean, log_var = torch.randn(10), torch.randn(10)
    assert kl_diagonal_gaussians(mean, log_var, mean, log_var).abs() < 1e-6
    assert kl_diagonal_gaussians(mean + 0.1, log_var, mean, log_var) > 0
    assert kl_diagonal_gaussians(mean, log_var - 0.1, mean, log_var) > 0


def test_kl_gradient_vanishes_at_the_prior():
    mean = torch.randn(4, requires_grad=True)
    log_var = torch.randn(4, requires_grad=True)
    kl_diagonal_gaussians(mean, log_var, mean.detach(), log_var.detach()).backward()
    assert mean.grad.abs().max() < 1e-6 and log_var.grad.abs().max() < 1e-6


def test_kl_closed_form_gradients_match_autograd_of_the_formula():
    generator = torch.Generator().manual_seed(3)
    mq, lvq, mp, lvp = (torch.randn(6, 4, generator=generator, dtype=torch.double) for _ in "1234")
    mq.requires_grad_(), lvq.requires_grad_()
    assert torch.autograd.gradcheck(lambda m, lv: kl_diagonal_gaussians(m, lv, mp, lvp), (mq, lvq))
    reference = 0.5 * ((lvp - lvq) + (lvq.exp() + (mq - mp) ** 2) / lvp.exp() - 1).sum()
    grads = torch.autograd.grad(kl_diagonal_gaussians(mq, lvq, mp, lvp), (mq, lvq))
    expected = torch.autograd.grad(reference, (mq, lvq))
    for got, want in zip(grads, expected, strict=True):
        assert torch.allclose(got, want)
    # Backward is linear in the incoming gradient (a scaled loss scales the gradients).
    scaled = torch.autograd.grad(3.0 * kl_diagonal_gaussians(mq, lvq, mp, lvp), (mq, lvq))
    for got, want in zip(scaled, expected, strict=True):
        assert torch.allclose(got, 3.0 * want)


def test_a_prior_that_needs_gradients_is_refused():
    mean, log_var = torch.randn(3, requires_grad=True), torch.randn(3, requires_grad=True)
    prior_mean = torch.randn(3, requires_grad=True)
    with pytest.raises(ValueError, match="differentiates the posterior only"):
        kl_diagonal_gaussians(mean, log_var, prior_mean, torch.zeros(3))
    kl_diagonal_gaussians(mean, log_var, prior_mean.detach(), torch.zeros(3)).backward()


def test_kl_at_the_prior_is_exactly_zero_in_float32_even_for_extreme_variances():
    """The variance ratio comes from the difference of log-variances, not from exp(+-80)."""
    generator = torch.Generator().manual_seed(2)
    mean = torch.randn(256, 784, generator=generator)
    log_var = torch.randn(256, 784, generator=generator) - 6
    log_var[0] = torch.linspace(-80.0, 80.0, 784)
    assert kl_diagonal_gaussians(mean, log_var, mean, log_var) == 0
    shifted = log_var + 0.5  # every variance e^0.5 times the prior's
    expected = 0.5 * (math.exp(0.5) - 0.5 - 1) * mean.numel()
    assert math.isclose(kl_diagonal_gaussians(mean, shifted, mean, log_var), expected, rel_tol=1e-4)


def test_a_sequence_of_tensors_sums_their_kls_and_backward_keeps_the_saved_tensors():
    generator = torch.Generator().manual_seed(4)
    shapes = [(5, 3), (3,), (2, 5)]
    mq, lvq, mp, lvp = (
        [torch.randn(s, generator=generator, dtype=torch.double) for s in shapes] for _ in "1234"
    )
    for tensor in mq + lvq:
        tensor.requires_grad_()
    each = sum(kl_diagonal_gaussians(*parts) for parts in zip(mq, lvq, mp, lvp, strict=True))
    together = kl_diagonal_gaussians(mq, lvq, mp, lvp)
    assert torch.allclose(together, each)
    precision = [(-t).exp() for t in lvp]
    assert torch.allclose(kl_diagonal_gaussians(mq, lvq, mp, lvp, precision), each)
    expected = torch.autograd.grad(each, mq + lvq)
    # Twice through the same graph: the first backward must not spoil what the second needs.
    first = torch.autograd.grad(together, mq + lvq, retain_graph=True)
    second = torch.autograd.grad(together, mq + lvq)
    for a, b, want in zip(first, second, expected, strict=True):
        assert torch.allclose(a, want) and torch.equal(a, b)


def test_mismatched_numbers_of_posterior_and_prior_tensors_are_refused():
    tensors = [torch.zeros(3), torch.zeros(2)]
    with pytest.raises(ValueError, match="as many prior tensors as posterior tensors"):
        kl_diagonal_gaussians(tensors, tensors, tensors[:1], tensors)
    with pytest.raises(ValueError, match="at least one posterior tensor"):
        kl_diagonal_gaussians([], [], [], [])
