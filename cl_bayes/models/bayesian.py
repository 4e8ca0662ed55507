"""What a Bayesian network offers VCL: its mean-field layers and their summed KL."""

from __future__ import annotations

from typing import Iterable

from torch import Tensor, nn

from cl_bayes.bayes.layer import SAMPLING, MeanFieldLayer, summed_kl
from cl_bayes.errors import ConfigError


class BayesianNetwork(nn.Module):
    """A network of mean-field layers: ``body`` (a list of layers) then per-task ``heads``.

    Subclasses build ``self.body`` and ``self.heads`` (``nn.ModuleList``) and define
    ``forward(x, head, n_samples)``.
    """

    body: nn.ModuleList
    heads: nn.ModuleList

    def layers(self, heads: Iterable[int]) -> list[MeanFieldLayer]:
        """The body layers and the given heads."""
        return list(self.body) + [self.heads[i] for i in heads]

    def kl(self, heads: Iterable[int]) -> Tensor:
        """``KL(posterior || prior)`` over the body and the given heads, summed."""
        return summed_kl(self.layers(heads))


def check_options(hidden_sizes: list[int], prior_var: float, sampling: str) -> None:
    """One clear :class:`ConfigError` for a Bayesian model option that cannot work."""
    if any(int(h) < 1 for h in hidden_sizes):
        raise ConfigError(f"model.hidden_sizes must list positive widths, got {hidden_sizes}.")
    if prior_var <= 0:
        raise ConfigError(f"model.prior_var must be positive, got {prior_var}.")
    if sampling not in SAMPLING:
        raise ConfigError(f"model.sampling must be one of {', '.join(SAMPLING)}, got {sampling!r}.")
