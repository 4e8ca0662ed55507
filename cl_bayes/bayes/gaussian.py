"""Pure maths of diagonal Gaussians, parameterised by mean and log-variance."""

from __future__ import annotations

import torch
from torch import Tensor


def kl_diagonal_gaussians(
    posterior_mean: Tensor,
    posterior_log_var: Tensor,
    prior_mean: Tensor,
    prior_log_var: Tensor,
) -> Tensor:
    """``KL(q || p)`` between diagonal Gaussians, **summed** over all elements (a scalar).

    ``KL = 0.5 * sum(log s_p^2 - log s_q^2 + (s_q^2 + (m_q - m_p)^2) / s_p^2 - 1)``.
    All four tensors have the same shape. Gradients flow to the posterior only (the prior
    is a constant of VCL's objective), computed in closed form: ``dKL/dm_q = (m_q - m_p) /
    s_p^2`` and ``dKL/dlog s_q^2 = (s_q^2 / s_p^2 - 1) / 2``, which needs a third of the
    work and memory of differentiating the expression step by step.
    """
    return _KLDiagonalGaussians.apply(posterior_mean, posterior_log_var, prior_mean, prior_log_var)


class _KLDiagonalGaussians(torch.autograd.Function):
    @staticmethod
    def forward(ctx, posterior_mean, posterior_log_var, prior_mean, prior_log_var):
        if ctx.needs_input_grad[2] or ctx.needs_input_grad[3]:
            raise ValueError(
                "kl_diagonal_gaussians differentiates the posterior only; pass the prior "
                "detached (prior.detach())."
            )
        log_ratio = posterior_log_var - prior_log_var
        variance_ratio = log_ratio.exp()
        difference = posterior_mean - prior_mean
        scaled_difference = difference * (-prior_log_var).exp()
        ctx.save_for_backward(scaled_difference, variance_ratio)
        mean_term = torch.dot(scaled_difference.flatten(), difference.flatten())
        return 0.5 * (variance_ratio.sum() - log_ratio.sum() + mean_term - difference.numel())

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        scaled_difference, variance_ratio = ctx.saved_tensors
        return scaled_difference * grad, (variance_ratio - 1.0).mul_(0.5 * grad), None, None
