"""Bayesian linear regression with an orthogonal design: mean-field VI is exact there.

With known noise variance and X^T X diagonal, the exact posterior of the weights is a
diagonal Gaussian, so minimising the negative ELBO over a MeanFieldLinear layer must
recover it; and fitting task 1, turning the posterior into the prior, then fitting task 2
must equal fitting both tasks at once (Bayes' rule applied sequentially).
"""

import itertools

import torch

from cl_bayes.bayes.linear import MeanFieldLinear

NOISE_VAR = 0.5
PRIOR_VAR = 2.0


def _task(scale: float, seed: int):
    design = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=3)))  # orthogonal, centred
    x = scale * design.repeat(3, 1)
    generator = torch.Generator().manual_seed(seed)
    y = (
        x @ torch.tensor([0.7, -1.2, 0.3])
        + 0.4
        + NOISE_VAR**0.5 * torch.randn(len(x), generator=generator)
    )
    return x.double(), y.double()


def _neg_elbo(layer: MeanFieldLinear, x, y):
    mean, variance = layer.moments(x)
    expected_nll = ((y[:, None] - mean) ** 2 + variance).sum() / (2 * NOISE_VAR)
    return expected_nll + layer.kl()


def _fit(layer, x, y):
    optimizer = torch.optim.LBFGS(
        layer.parameters(),
        lr=1,
        max_iter=500,
        tolerance_grad=1e-12,
        tolerance_change=1e-14,
        line_search_fn="strong_wolfe",
    )

    def closure():
        optimizer.zero_grad()
        loss = _neg_elbo(layer, x, y)
        loss.backward()
        return loss

    for _ in range(5):
        optimizer.step(closure)


def _exact(xs, ys):
    """Exact Gaussian posterior of (weights, bias) given all data, prior N(0, PRIOR_VAR)."""
    x = torch.cat([torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1) for x in xs])
    y = torch.cat(ys)
    precision = torch.eye(4, dtype=x.dtype) / PRIOR_VAR + x.T @ x / NOISE_VAR
    covariance = torch.linalg.inv(precision)
    return covariance @ x.T @ y / NOISE_VAR, covariance


def _new_layer():
    torch.manual_seed(0)
    return MeanFieldLinear(3, 1, prior_var=PRIOR_VAR, init_log_var=-3.0).double()


def _posterior(layer):
    mean = torch.cat([layer.weight_posterior_mean[0], layer.bias_posterior_mean]).detach()
    var = (
        torch.cat([layer.weight_posterior_log_var[0], layer.bias_posterior_log_var]).exp().detach()
    )
    return mean, var


def test_mean_field_vi_recovers_the_exact_posterior():
    x, y = _task(1.0, seed=1)
    layer = _new_layer()
    _fit(layer, x, y)
    mean, covariance = _exact([x], [y])
    assert torch.allclose(covariance, torch.diag(torch.diag(covariance)), atol=1e-12)
    fitted_mean, fitted_var = _posterior(layer)
    assert torch.allclose(fitted_mean, mean, atol=1e-6)
    assert torch.allclose(fitted_var, torch.diag(covariance), rtol=1e-5)


def test_sequential_posterior_to_prior_equals_fitting_both_tasks_at_once():
    (x1, y1), (x2, y2) = _task(1.0, seed=1), _task(2.0, seed=2)

    sequential = _new_layer()
    _fit(sequential, x1, y1)
    sequential.posterior_to_prior()
    _fit(sequential, x2, y2)

    joint = _new_layer()
    _fit(joint, torch.cat([x1, x2]), torch.cat([y1, y2]))

    seq_mean, seq_var = _posterior(sequential)
    joint_mean, joint_var = _posterior(joint)
    assert torch.allclose(seq_mean, joint_mean, atol=1e-6)
    assert torch.allclose(seq_var, joint_var, rtol=1e-5)
    exact_mean, exact_cov = _exact([x1, x2], [y1, y2])
    assert torch.allclose(seq_mean, exact_mean, atol=1e-6)
    # The prior of task 2 was task 1's posterior, not N(0, PRIOR_VAR).
    assert not torch.allclose(
        sequential.weight_prior_log_var, torch.full((1, 3), PRIOR_VAR).log().double()
    )
