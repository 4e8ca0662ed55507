"""Mean-field Gaussian linear layer: local reparameterisation or weight sampling (``layer.py``).

Both run as one autograd node with a hand-written backward pass each, instead of the
nodes that autograd records for their steps one by one (squared input, exponentials,
products, square root, noise for the local trick; exponentials, products, sums and the
matrix product for weight sampling). The arithmetic is the same up to float rounding;
what goes is the per-operation overhead, a sizeable share of a step at batch 128 on a CPU
and one kernel launch per operation on a GPU. The nodes give first-order gradients only
(no double backward).

Weight sampling draws the K samples' weights as one ``(K, out_features, in_features)``
tensor (one ``randn``, as the generic layer does, so a seed gives the same draws) and
applies them with one batched matrix product, ``baddbmm``, to a ``(K, batch,
in_features)`` input, the shared input of the first layer broadcast without a copy.
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
        As for :class:`~cl_bayes.bayes.layer.MeanFieldLayer`. With ``sampling="weights"``
        the K samples' weights are drawn as one ``(K, out_features, in_features)`` tensor
        and applied in one batched matrix product (``baddbmm``), with no loop over samples.
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

    def sample_weights(self, x: Tensor, n_samples: int) -> Tensor:
        """Outputs ``(n_samples, batch, out_features)`` for one weight draw per sample.

        ``x`` is ``(batch, in_features)``, shared by the samples, or ``(n_samples, batch,
        in_features)``. The noise is drawn as in the generic
        :meth:`~cl_bayes.bayes.layer.MeanFieldLayer.sample_weights` (weights, then biases,
        each for all samples at once), so the same seed gives the same draws; the K
        products are one ``baddbmm`` in a single autograd node.
        """
        weight_shape = self.weight_posterior_mean.shape
        weight_noise = torch.randn((n_samples, *weight_shape), device=x.device, dtype=x.dtype)
        bias_noise = torch.randn((n_samples, weight_shape[0]), device=x.device, dtype=x.dtype)
        return _WeightSampledLinear.apply(
            x,
            self.weight_posterior_mean,
            self.bias_posterior_mean,
            self.weight_posterior_log_var,
            self.bias_posterior_log_var,
            weight_noise,
            bias_noise,
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


class _WeightSampledLinear(torch.autograd.Function):
    """K weight draws of a linear layer, each shared by the batch, as one autograd node.

    ``W_k = W_m + exp(W_lv / 2) * noise_w[k]`` and ``b_k = b_m + exp(b_lv / 2) *
    noise_b[k]``, then ``out[k] = x[k] W_k^T + b_k`` for all k in one ``baddbmm``; ``x`` is
    ``(K, batch, in)``, or ``(batch, in)`` shared by the K draws (broadcast, not copied).

    Backward, with ``g`` the output's gradient ``(K, batch, out)``: ``dW_k = g[k]^T x[k]``
    (one ``bmm``), ``dW_m = sum_K dW_k``, ``dW_lv = sum_K(dW_k * noise_w) * std_w / 2``,
    the same for the biases with ``db_k = sum_batch g[k]``, and ``dx[k] = g[k] W_k`` (for a
    shared ``x``, summed over K in one matrix product). The draws ``W_k`` are kept for the
    backward pass only where ``x`` needs a gradient (not for the first layer).
    """

    @staticmethod
    def forward(
        ctx, x, weight_mean, bias_mean, weight_log_var, bias_log_var, weight_noise, bias_noise
    ):
        weight_std, bias_std = weight_log_var.mul(0.5).exp(), bias_log_var.mul(0.5).exp()
        weights = torch.addcmul(weight_mean, weight_std, weight_noise)  # (K, out, in)
        biases = torch.addcmul(bias_mean, bias_std, bias_noise)  # (K, out)
        per_sample_x = x if x.dim() == 3 else x.expand(len(weights), *x.shape)
        out = torch.baddbmm(biases.unsqueeze(1), per_sample_x, weights.transpose(1, 2))
        kept_weights = weights if ctx.needs_input_grad[0] else None
        ctx.save_for_backward(x, kept_weights, weight_std, bias_std, weight_noise, bias_noise)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, weights, weight_std, bias_std, weight_noise, bias_noise = ctx.saved_tensors
        needs = ctx.needs_input_grad
        grad_x = grad_weight_mean = grad_bias_mean = grad_weight_log_var = grad_bias_log_var = None
        if needs[0]:
            if x.dim() == 3:
                grad_x = torch.bmm(grad, weights)
            else:  # sum_K g[k] W_k as one (batch, K * out) by (K * out, in) product
                grad_x = grad.transpose(0, 1).reshape(len(x), -1).mm(weights.flatten(0, 1))
        if needs[1] or needs[3]:
            per_sample_x = x if x.dim() == 3 else x.expand(len(grad), *x.shape)
            grad_weights = torch.bmm(grad.transpose(1, 2), per_sample_x)  # (K, out, in)
            if needs[1]:
                grad_weight_mean = grad_weights.sum(0)
            if needs[3]:
                grad_weights.mul_(weight_noise)
                grad_weight_log_var = grad_weights.sum(0).mul_(weight_std).mul_(0.5)
        if needs[2] or needs[4]:
            grad_biases = grad.sum(1)  # (K, out)
            if needs[2]:
                grad_bias_mean = grad_biases.sum(0)
            if needs[4]:
                grad_bias_log_var = grad_biases.mul_(bias_noise).sum(0).mul_(bias_std).mul_(0.5)
        return (
            grad_x,
            grad_weight_mean,
            grad_bias_mean,
            grad_weight_log_var,
            grad_bias_log_var,
            None,
            None,
        )
