"""A mean-field Gaussian Bayesian MLP with one or more output heads."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from cl_bayes.bayes.linear import MeanFieldLinear
from cl_bayes.errors import ConfigError
from cl_bayes.models.bayesian import BayesianNetwork, check_options
from cl_bayes.models.mlp import flat_size, route_heads


class BayesMLP(BayesianNetwork):
    """ReLU network of :class:`MeanFieldLinear` layers; images are flattened first.

    Parameters
    ----------
    input_shape
        Shape of one input, ``(channels, height, width)``, or its flattened size.
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
        input_shape: int | Sequence[int],
        hidden_sizes: Sequence[int],
        head_sizes: Sequence[int],
        prior_var: float = 1.0,
        init_log_var: float = -6.0,
        sampling: str = "local",
    ):
        super().__init__()
        hidden_sizes = list(hidden_sizes)
        if not hidden_sizes:
            raise ConfigError("model.hidden_sizes must list at least one width, e.g. [256, 256].")
        check_options(hidden_sizes, prior_var, sampling)
        widths = [flat_size(input_shape)] + hidden_sizes
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
