"""Mean-field Gaussian linear layer: local reparameterisation or weight sampling (``layer.py``)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from cl_bayes.bayes.layer import MeanFieldLayer


class MeanFieldLinear(MeanFieldLayer):
    """Bayesian ``y = x W^T + b`` with a factorised Gaussian posterior and prior.

    Parameters
    ----------
    in_features, out_features
        Layer sizes; weights have shape ``(out_features, in_features)``. Inputs are
        ``(batch, in_features)``, or ``(K, batch, in_features)`` with one per sample.
    prior_var, init_log_var, init_std, sampling
        As for :class:`~cl_bayes.bayes.layer.MeanFieldLayer`.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        prior_var: float = 1.0,
        init_log_var: float = -6.0,
        init_std: float = 0.1,
        sampling: str = "local",
    ):
        self.in_features, self.out_features = in_features, out_features
        super().__init__(
            (out_features, in_features),
            (out_features,),
            2,
            prior_var,
            init_log_var,
            init_std,
            sampling,
        )

    def linear_op(self, x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        """``x W^T + b``."""
        return nn.functional.linear(x, weight, bias)

    def per_sample_op(self, x: Tensor, weights: Tensor, biases: Tensor) -> Tensor:
        """``x[k] W_k^T + b_k`` for every sample ``k`` (a shared ``x`` broadcasts)."""
        return torch.matmul(x, weights.transpose(-1, -2)) + biases.unsqueeze(-2)

    def extra_repr(self) -> str:
        """Layer sizes, shown by ``print(model)``."""
        return f"in_features={self.in_features}, out_features={self.out_features}"
