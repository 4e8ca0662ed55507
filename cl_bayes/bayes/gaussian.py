"""Pure maths of diagonal Gaussians, parameterised by mean and log-variance."""

from __future__ import annotations

from torch import Tensor


def kl_diagonal_gaussians(
    posterior_mean: Tensor,
    posterior_log_var: Tensor,
    prior_mean: Tensor,
    prior_log_var: Tensor,
) -> Tensor:
    """``KL(q || p)`` between diagonal Gaussians, **summed** over all elements (a scalar).

    ``KL = 0.5 * sum(log s_p^2 - log s_q^2 + (s_q^2 + (m_q - m_p)^2) / s_p^2 - 1)``.
    All four tensors broadcast to the same shape.
    """
    variance_ratio = (posterior_log_var - prior_log_var).exp()
    mean_term = (posterior_mean - prior_mean).pow(2) * (-prior_log_var).exp()
    return 0.5 * (variance_ratio + mean_term - 1.0 - (posterior_log_var - prior_log_var)).sum()
