"""Mean-field Gaussian linear layer with local reparameterisation.

Every weight and bias has an independent Gaussian posterior ``N(posterior_mean,
exp(posterior_log_var))`` (trainable parameters) and an independent Gaussian prior
``N(prior_mean, exp(prior_log_var))`` held as persistent buffers, so a checkpoint restores
the prior exactly and the optimiser never sees it.

The forward pass uses the local reparameterisation trick (Kingma, Salimans & Welling 2015):
instead of sampling weights, it samples pre-activations from their exact Gaussian
distribution given the input, ``mean = x W_m^T + b_m``, ``variance = x^2 exp(W_lv)^T +
exp(b_lv)``. For an input shared by all K samples (the first layer) the two products are
computed once and the K samples drawn from them in one vectorised pass.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from cl_bayes.bayes.gaussian import kl_diagonal_gaussians


class MeanFieldLinear(nn.Module):
    """Bayesian ``y = x W^T + b`` with a factorised Gaussian posterior and prior.

    Parameters
    ----------
    in_features, out_features
        Layer sizes; weights have shape ``(out_features, in_features)``.
    prior_var
        Variance of the initial prior ``N(0, prior_var)`` on every weight and bias.
    init_log_var
        Initial posterior log-variance of every weight and bias (-6 in Nguyen et al. 2018).
    init_std
        Standard deviation of the truncated normal (at two standard deviations) that
        draws the initial posterior means (0.1 in the official VCL code).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        prior_var: float = 1.0,
        init_log_var: float = -6.0,
        init_std: float = 0.1,
    ):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.prior_var, self.init_log_var, self.init_std = prior_var, init_log_var, init_std
        shapes = {"weight": (out_features, in_features), "bias": (out_features,)}
        for name, shape in shapes.items():
            self.register_parameter(f"{name}_posterior_mean", nn.Parameter(torch.empty(shape)))
            self.register_parameter(f"{name}_posterior_log_var", nn.Parameter(torch.empty(shape)))
            self.register_buffer(f"{name}_prior_mean", torch.empty(shape))
            self.register_buffer(f"{name}_prior_log_var", torch.empty(shape))
        self.reset_parameters()
        self.reset_prior()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Fresh posterior: truncated-normal means, log-variances ``init_log_var``."""
        for name in ("weight", "bias"):
            mean = getattr(self, f"{name}_posterior_mean")
            nn.init.trunc_normal_(
                mean, std=self.init_std, a=-2 * self.init_std, b=2 * self.init_std
            )
            getattr(self, f"{name}_posterior_log_var").fill_(self.init_log_var)

    @torch.no_grad()
    def reset_prior(self) -> None:
        """Prior ``N(0, prior_var)`` on every weight and bias."""
        for name in ("weight", "bias"):
            getattr(self, f"{name}_prior_mean").zero_()
            getattr(self, f"{name}_prior_log_var").fill_(math.log(self.prior_var))

    @torch.no_grad()
    def posterior_to_prior(self) -> None:
        """Make the current posterior the prior (a detached copy; VCL's step between tasks)."""
        for name in ("weight", "bias"):
            getattr(self, f"{name}_prior_mean").copy_(getattr(self, f"{name}_posterior_mean"))
            getattr(self, f"{name}_prior_log_var").copy_(getattr(self, f"{name}_posterior_log_var"))

    def kl(self) -> Tensor:
        """``KL(posterior || prior)`` summed over all weights and biases (a scalar)."""
        return sum(
            kl_diagonal_gaussians(
                getattr(self, f"{name}_posterior_mean"),
                getattr(self, f"{name}_posterior_log_var"),
                getattr(self, f"{name}_prior_mean"),
                getattr(self, f"{name}_prior_log_var"),
            )
            for name in ("weight", "bias")
        )

    def moments(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and variance of the pre-activations, each of shape ``x.shape[:-1] + (out,)``."""
        mean = nn.functional.linear(x, self.weight_posterior_mean, self.bias_posterior_mean)
        variance = nn.functional.linear(
            x * x, self.weight_posterior_log_var.exp(), self.bias_posterior_log_var.exp()
        )
        return mean, variance

    def forward(self, x: Tensor, n_samples: int | None = None) -> Tensor:
        """Sampled pre-activations, or the posterior-mean layer when ``n_samples`` is None.

        ``x`` is ``(batch, in)``, shared by all samples, or ``(K, batch, in)``, one input per
        sample. Returns ``(K, batch, out)`` when sampling (``K = n_samples`` for a shared
        input, ``x.shape[0]`` otherwise) and ``(..., out)`` in mean mode.
        """
        if n_samples is None:
            return nn.functional.linear(x, self.weight_posterior_mean, self.bias_posterior_mean)
        mean, variance = self.moments(x)
        if x.dim() == 2:  # shared input: moments once, K draws
            noise = torch.randn((n_samples,) + mean.shape, device=x.device, dtype=x.dtype)
        else:
            noise = torch.randn_like(mean)
        return mean + variance.sqrt() * noise

    def extra_repr(self) -> str:
        """Layer sizes, shown by ``print(model)``."""
        return f"in_features={self.in_features}, out_features={self.out_features}"
