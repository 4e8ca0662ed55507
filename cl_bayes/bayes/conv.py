"""Mean-field Gaussian 2-D convolution (local reparameterisation or weight sampling; ``layer.py``).

For CIFAR-sized models. The variance of an output is the convolution of the squared input
with the weights' variances (plus the bias variance): the same local reparameterisation as
the linear layer, as in Kingma, Salimans & Welling (2015).
"""

from __future__ import annotations

from torch import Tensor, nn

from cl_bayes.bayes.layer import MeanFieldLayer


class MeanFieldConv2d(MeanFieldLayer):
    """Bayesian ``conv2d`` with a factorised Gaussian posterior and prior.

    Parameters
    ----------
    in_channels, out_channels, kernel_size
        Weights have shape ``(out_channels, in_channels, kernel_size, kernel_size)``. Inputs
        are ``(batch, in_channels, height, width)``, or ``(K, batch, ...)`` with one per sample.
    stride, padding
        As for :func:`torch.nn.functional.conv2d`.
    prior_var, init_log_var, init_std, sampling
        As for :class:`~cl_bayes.bayes.layer.MeanFieldLayer`.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        prior_var: float = 1.0,
        init_log_var: float = -6.0,
        init_std: float = 0.1,
        sampling: str = "local",
    ):
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        weight_shape = (out_channels, in_channels, kernel_size, kernel_size)
        super().__init__(
            weight_shape, (out_channels,), 4, prior_var, init_log_var, init_std, sampling
        )

    def linear_op(self, x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        """``conv2d(x, weight) + bias``."""
        return nn.functional.conv2d(x, weight, bias, stride=self.stride, padding=self.padding)

    def per_sample_op(self, x: Tensor, weights: Tensor, biases: Tensor) -> Tensor:
        """Sample ``k``'s convolution on ``x[k]``: one grouped convolution, a group per sample."""
        k = weights.shape[0]
        if x.dim() == self.input_dims:
            x = x.expand(k, *x.shape)
        out = nn.functional.conv2d(
            x.transpose(0, 1).flatten(1, 2),  # (batch, K * in_channels, H, W)
            weights.flatten(0, 1),  # (K * out_channels, in_channels, kh, kw)
            biases.flatten(),
            stride=self.stride,
            padding=self.padding,
            groups=k,
        )
        return out.unflatten(1, (k, self.out_channels)).transpose(0, 1)

    def extra_repr(self) -> str:
        """Layer sizes, shown by ``print(model)``."""
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}"
        )
