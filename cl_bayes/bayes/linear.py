"""Mean-field Gaussian linear layer: local reparameterisation or weight sampling (``layer.py``).

Its local reparameterisation runs as one autograd node with a hand-written backward pass,
instead of the nine or so nodes that autograd records for its steps one by one (squared
input, two exponentials, two products, square root, noise). The arithmetic is the same;
what goes is the per-operation overhead, a sizeable share of a step at batch 128 on a CPU.
The node gives first-order gradients only (no double backward).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

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

    def sample_local(self, x: Tensor, n_samples: int | None) -> Tensor:
        """Local reparameterisation of ``x`` ``(batch, in_features)`` in one autograd node.

        Returns ``(n_samples, batch, out_features)``, or ``(batch, out_features)`` with one
        draw per example when ``n_samples`` is None; the same values as the generic
        :meth:`~cl_bayes.bayes.layer.MeanFieldLayer.sample_local` for the same noise.
        """
        shape = (x.shape[0], self.out_features)
        if n_samples is not None:
            shape = (n_samples, *shape)
        noise = torch.randn(shape, device=x.device, dtype=x.dtype)
        return _LocalReparameterisedLinear.apply(
            x,
            self.weight_posterior_mean,
            self.bias_posterior_mean,
            self.weight_posterior_log_var,
            self.bias_posterior_log_var,
            noise,
        )

    def per_sample_op(self, x: Tensor, weights: Tensor, biases: Tensor) -> Tensor:
        """``x[k] W_k^T + b_k`` for every sample ``k`` (a shared ``x`` broadcasts)."""
        return torch.matmul(x, weights.transpose(-1, -2)) + biases.unsqueeze(-2)

    def extra_repr(self) -> str:
        """Layer sizes, shown by ``print(model)``."""
        return f"in_features={self.in_features}, out_features={self.out_features}"


class _LocalReparameterisedLinear(torch.autograd.Function):
    """Local reparameterisation of a linear layer as one autograd node.

    ``mean + sqrt(variance) * noise`` with ``mean = x W_m^T + b_m`` and ``variance = x^2
    exp(W_lv)^T + exp(b_lv)``; ``noise`` is ``(K, batch, out)`` (K draws sharing the
    moments) or ``(batch, out)``.

    Backward, with ``g`` the output's gradient summed over K and ``g_v = sum_K(g * noise) /
    (2 sqrt(variance))`` the variance's: ``dW_m = g^T x``, ``db_m = sum_batch g``, ``dW_lv =
    (g_v^T x^2) * exp(W_lv)``, ``db_lv = sum_batch(g_v) * exp(b_lv)`` and ``dx = g W_m + 2 x
    (g_v exp(W_lv))``.
    """

    @staticmethod
    def forward(ctx, x, weight_mean, bias_mean, weight_log_var, bias_log_var, noise):
        weight_var, bias_var = weight_log_var.exp(), bias_log_var.exp()
        x_squared = x * x
        mean = torch.addmm(bias_mean, x, weight_mean.t())
        std = torch.addmm(bias_var, x_squared, weight_var.t()).sqrt_()
        ctx.save_for_backward(x, x_squared, weight_mean, weight_var, bias_var, std, noise)
        return torch.addcmul(mean, std, noise)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, x_squared, weight_mean, weight_var, bias_var, std, noise = ctx.saved_tensors
        needs = ctx.needs_input_grad
        grad_std = grad * noise
        if grad.dim() == 3:  # K draws of the same moments: their gradients add up
            if len(grad) == 1:
                grad, grad_std = grad[0], grad_std[0]
            else:
                grad, grad_std = grad.sum(0), grad_std.sum(0)
        grad_var = grad_std.div_(std).mul_(0.5)
        grad_x = grad_weight_mean = grad_bias_mean = grad_weight_log_var = grad_bias_log_var = None
        if needs[0]:
            grad_x = torch.addcmul(grad.mm(weight_mean), grad_var.mm(weight_var), x, value=2.0)
        if needs[1]:
            grad_weight_mean = grad.t().mm(x)
        if needs[2]:
            grad_bias_mean = grad.sum(0)
        if needs[3]:
            grad_weight_log_var = grad_var.t().mm(x_squared).mul_(weight_var)
        if needs[4]:
            grad_bias_log_var = grad_var.sum(0).mul_(bias_var)
        return (
            grad_x,
            grad_weight_mean,
            grad_bias_mean,
            grad_weight_log_var,
            grad_bias_log_var,
            None,
        )
