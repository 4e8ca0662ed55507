"""Mean-field Gaussian 2-D convolution with local reparameterisation (see ``layer.py``).

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
    prior_var, init_log_var, init_std
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
    ):
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        weight_shape = (out_channels, in_channels, kernel_size, kernel_size)
        super().__init__(weight_shape, (out_channels,), 4, prior_var, init_log_var, init_std)

    def linear_op(self, x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        """``conv2d(x, weight) + bias``."""
        return nn.functional.conv2d(x, weight, bias, stride=self.stride, padding=self.padding)

    def extra_repr(self) -> str:
        """Layer sizes, shown by ``print(model)``."""
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}"
        )
