"""Pure maths of diagonal Gaussians, parameterised by mean and log-variance."""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
from torch import Tensor


class DiagonalGaussianPrior(NamedTuple):
    """A fixed diagonal Gaussian over a list of tensors, in the form the KL reads it.

    ``means[i]`` and ``precisions[i] = exp(-log_var[i])`` have the shape of the ``i``-th
    tensor; ``constant = sum(log_var) - numel`` over all of them is the part of the KL that
    does not depend on the posterior. Build it with :func:`diagonal_gaussian_prior`; a prior
    that stays fixed over many steps (VCL's, within a task) is worth building once.
    """

    means: tuple[Tensor, ...]
    precisions: tuple[Tensor, ...]
    constant: Tensor

    @staticmethod
    def join(priors: Sequence[DiagonalGaussianPrior]) -> DiagonalGaussianPrior:
        """One prior over the tensors of all ``priors``, in order."""
        return DiagonalGaussianPrior(
            tuple(mean for prior in priors for mean in prior.means),
            tuple(precision for prior in priors for precision in prior.precisions),
            torch.stack([prior.constant for prior in priors]).sum(),
        )


def diagonal_gaussian_prior(
    means: Sequence[Tensor], log_vars: Sequence[Tensor]
) -> DiagonalGaussianPrior:
    """The prior ``N(means[i], exp(log_vars[i]))`` on each of a list of tensors.

    The prior is a constant of the KL: tensors that need gradients are refused.
    """
    if any(tensor.requires_grad for tensor in (*means, *log_vars)):
        raise ValueError(
            "kl_diagonal_gaussians differentiates the posterior only; pass the prior "
            "detached (prior.detach())."
        )
    precisions = torch._foreach_exp(torch._foreach_neg(tuple(log_vars)))
    constant = torch.stack([log_var.sum() - log_var.numel() for log_var in log_vars]).sum()
    return DiagonalGaussianPrior(tuple(means), tuple(precisions), constant)


def kl_to_prior(
    posterior_means: Sequence[Tensor],
    posterior_log_vars: Sequence[Tensor],
    prior: DiagonalGaussianPrior,
) -> Tensor:
    """``KL(q || p)`` of a diagonal Gaussian over a list of tensors, **summed** (a scalar).

    ``KL = 0.5 * sum(log s_p^2 - log s_q^2 + (s_q^2 + (m_q - m_p)^2) / s_p^2 - 1)`` over every
    element of every tensor, with one set of multi-tensor operations for the whole list.
    Gradients flow to the posterior only, computed in closed form: ``dKL/dm_q = (m_q - m_p) /
    s_p^2`` and ``dKL/dlog s_q^2 = (s_q^2 / s_p^2 - 1) / 2``, a fraction of the work and
    memory of differentiating the expression step by step.
    """
    n = len(posterior_means)
    if not n == len(posterior_log_vars) == len(prior.means):
        raise ValueError(
            f"kl_to_prior needs as many posterior means ({n}), log-variances "
            f"({len(posterior_log_vars)}) and prior tensors ({len(prior.means)})."
        )
    return _KLToPrior.apply(
        n, prior.constant, *posterior_means, *posterior_log_vars, *prior.means, *prior.precisions
    )


def kl_diagonal_gaussians(
    posterior_mean: Tensor,
    posterior_log_var: Tensor,
    prior_mean: Tensor,
    prior_log_var: Tensor,
) -> Tensor:
    """``KL(q || p)`` between diagonal Gaussians, **summed** over all elements (a scalar).

    All four tensors have the same shape; gradients flow to the posterior only (see
    :func:`kl_to_prior`).
    """
    prior = diagonal_gaussian_prior([prior_mean], [prior_log_var])
    return kl_to_prior([posterior_mean], [posterior_log_var], prior)


class _KLToPrior(torch.autograd.Function):
    @staticmethod
    def forward(ctx, n, constant, *tensors):
        means, log_vars = tensors[:n], tensors[n : 2 * n]
        prior_means, precisions = tensors[2 * n : 3 * n], tensors[3 * n :]
        variance_ratios = torch._foreach_exp(log_vars)
        torch._foreach_mul_(variance_ratios, precisions)
        differences = torch._foreach_sub(means, prior_means)
        scaled_differences = torch._foreach_mul(differences, precisions)
        # per element: s_q^2 / s_p^2 - log s_q^2 + (m_q - m_p)^2 / s_p^2
        terms = torch._foreach_sub(variance_ratios, log_vars)
        torch._foreach_addcmul_(terms, scaled_differences, differences)
        ctx.n = n
        ctx.save_for_backward(*scaled_differences, *variance_ratios)
        return 0.5 * (torch.stack([term.sum() for term in terms]).sum() + constant)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        n, saved = ctx.n, ctx.saved_tensors
        scaled_differences, variance_ratios = saved[:n], saved[n:]
        mean_grads = torch._foreach_mul(scaled_differences, grad)
        log_var_grads = torch._foreach_sub(variance_ratios, 1.0)
        torch._foreach_mul_(log_var_grads, 0.5 * grad)
        return (None, None, *mean_grads, *log_var_grads) + (None,) * (2 * n)
