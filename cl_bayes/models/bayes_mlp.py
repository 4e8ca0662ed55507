"""A mean-field Gaussian Bayesian MLP with one or more output heads."""

from __future__ import annotations

from typing import Iterable, Sequence

import torch
from torch import Tensor, nn

from cl_bayes.bayes.layer import SAMPLING
from cl_bayes.bayes.linear import MeanFieldLinear
from cl_bayes.errors import ConfigError
from cl_bayes.models.mlp import route_heads


class BayesMLP(nn.Module):
    """ReLU network of :class:`MeanFieldLinear` layers; images are flattened first.

    Parameters
    ----------
    in_features
        Input size (``channels * height * width``).
    hidden_sizes
        Width of each hidden layer, e.g. ``[256, 256]``.
    head_sizes
        Outputs of each head: one head per task (task-incremental) or a single shared head.
    prior_var
        Variance of the initial prior ``N(0, prior_var)`` of every weight and bias.
    init_log_var
        Initial posterior log-variance.
    sampling
        ``"local"``: local reparameterisation, one draw per example (the default, lower
        gradient variance). ``"weights"``: one weight draw per Monte Carlo sample shared by
        the batch, as in the official VCL code.
    """

    def __init__(
        self,
        in_features: int,
        hidden_sizes: Sequence[int],
        head_sizes: Sequence[int],
        prior_var: float = 1.0,
        init_log_var: float = -6.0,
        sampling: str = "local",
    ):
        super().__init__()
        hidden_sizes = list(hidden_sizes)
        if not hidden_sizes or any(int(h) < 1 for h in hidden_sizes):
            raise ConfigError(
                f"model.hidden_sizes must list at least one positive width, got {hidden_sizes}."
            )
        if prior_var <= 0:
            raise ConfigError(f"model.prior_var must be positive, got {prior_var}.")
        if sampling not in SAMPLING:
            raise ConfigError(
                f"model.sampling must be one of {', '.join(SAMPLING)}, got {sampling!r}."
            )
        widths = [in_features] + hidden_sizes
        self.body = nn.ModuleList(
            MeanFieldLinear(a, b, prior_var, init_log_var, sampling=sampling)
            for a, b in zip(widths[:-1], widths[1:], strict=True)
        )
        self.heads = nn.ModuleList(
            MeanFieldLinear(widths[-1], size, prior_var, init_log_var, sampling=sampling)
            for size in head_sizes
        )

    def forward(self, x: Tensor, head: int | Tensor = 0, n_samples: int | None = None) -> Tensor:
        """Logits for inputs ``x`` of shape ``(batch, ...)``.

        With ``n_samples = K`` the logits are sampled (see ``sampling``) and have shape
        ``(K, batch, outputs)``; with ``None`` the posterior-mean network gives
        ``(batch, outputs)``.
        """
        h = x.flatten(1)
        for layer in self.body:
            # The first layer draws K samples for an input shared by all of them (2-D);
            # later layers get one input per sample (3-D).
            h = torch.relu(layer(h, n_samples))
        return route_heads(self.heads, h, head, n_samples)

    def layers(self, heads: Iterable[int]) -> list[MeanFieldLinear]:
        """The body layers and the given heads."""
        return list(self.body) + [self.heads[i] for i in heads]

    def kl(self, heads: Iterable[int]) -> Tensor:
        """``KL(posterior || prior)`` over the body and the given heads, summed."""
        return sum(layer.kl() for layer in self.layers(heads))
