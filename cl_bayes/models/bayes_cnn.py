"""A mean-field Gaussian Bayesian CNN for image tasks such as Split CIFAR."""

from __future__ import annotations

import numbers
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cl_bayes.bayes.conv import MeanFieldConv2d
from cl_bayes.bayes.linear import MeanFieldLinear
from cl_bayes.errors import ConfigError
from cl_bayes.models.bayesian import BayesianNetwork, check_options
from cl_bayes.models.mlp import route_heads


class BayesCNN(BayesianNetwork):
    """3x3 :class:`MeanFieldConv2d` layers with max-pooling, then :class:`MeanFieldLinear` layers.

    Every convolution keeps the image size (padding 1) and is followed by a ReLU; a 2x2
    max-pool follows every ``pool_every``-th convolution. The feature maps are then flattened
    into fully connected ReLU layers and the heads.

    Parameters
    ----------
    input_shape
        Shape of one input, ``(channels, height, width)``.
    conv_channels
        Output channels of each convolution, e.g. ``[32, 32, 64, 64]``.
    pool_every
        A 2x2 max-pool after every this many convolutions (0: no pooling).
    hidden_sizes
        Widths of the fully connected layers after the convolutions (may be empty).
    head_sizes
        Outputs of each head: one head per task (task-incremental) or a single shared head.
    prior_var, init_log_var, sampling
        As for :class:`~cl_bayes.models.bayes_mlp.BayesMLP`.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        conv_channels: Sequence[int],
        pool_every: int,
        hidden_sizes: Sequence[int],
        head_sizes: Sequence[int],
        prior_var: float = 1.0,
        init_log_var: float = -6.0,
        sampling: str = "local",
    ):
        super().__init__()
        if isinstance(input_shape, numbers.Integral) or len(input_shape) != 3:
            raise ConfigError(
                f"model=bayes_cnn needs image inputs (channels, height, width); this task's "
                f"inputs have shape {input_shape}."
            )
        check_conv_options(conv_channels, pool_every)
        input_shape, conv_channels = list(input_shape), list(conv_channels)
        hidden_sizes = list(hidden_sizes)
        check_options(hidden_sizes, prior_var, sampling)
        channels, height, width = input_shape
        n_pools = len(conv_channels) // pool_every if pool_every else 0
        height, width = height >> n_pools, width >> n_pools
        if height < 1 or width < 1:
            raise ConfigError(
                f"model=bayes_cnn pools {n_pools} times, which shrinks a "
                f"{input_shape[1]}x{input_shape[2]} image to nothing: raise model.pool_every "
                "or use fewer convolutions."
            )
        options = dict(prior_var=prior_var, init_log_var=init_log_var, sampling=sampling)
        convs = [
            MeanFieldConv2d(a, b, kernel_size=3, padding=1, **options)
            for a, b in zip([channels] + conv_channels[:-1], conv_channels, strict=True)
        ]
        widths = [conv_channels[-1] * height * width] + hidden_sizes
        linears = [
            MeanFieldLinear(a, b, **options) for a, b in zip(widths[:-1], widths[1:], strict=True)
        ]
        self.n_convs, self.pool_every = len(convs), pool_every
        self.body = nn.ModuleList(convs + linears)
        self.heads = nn.ModuleList(MeanFieldLinear(widths[-1], s, **options) for s in head_sizes)

    def forward(self, x: Tensor, head: int | Tensor = 0, n_samples: int | None = None) -> Tensor:
        """Logits for images ``x`` of shape ``(batch, channels, height, width)``.

        With ``n_samples = K`` the logits are sampled and have shape ``(K, batch, outputs)``;
        with ``None`` the posterior-mean network gives ``(batch, outputs)``.
        """
        h = x
        for index, layer in enumerate(self.body):
            if index == self.n_convs:
                h = h.flatten(-3)
            h = torch.relu(layer(h, n_samples))
            if index < self.n_convs and self.pool_every and (index + 1) % self.pool_every == 0:
                # Pool (K, batch, C, H, W) samples and (batch, C, H, W) means alike.
                h = F.max_pool2d(h.flatten(0, -4), 2).unflatten(0, h.shape[:-3])
        if len(self.body) == self.n_convs:
            h = h.flatten(-3)
        return route_heads(self.heads, h, head, n_samples)


def check_conv_options(conv_channels: Sequence[int], pool_every: int) -> None:
    """One clear :class:`ConfigError` for convolution options that cannot work.

    Called by :class:`BayesCNN` and, before any data loads, by ``check_config``.
    """
    if (
        isinstance(conv_channels, str)
        or not isinstance(conv_channels, Sequence)
        or not conv_channels
        or any(
            isinstance(c, bool) or not isinstance(c, numbers.Integral) or c < 1
            for c in conv_channels
        )
    ):
        raise ConfigError(
            "model.conv_channels must list at least one positive channel count, e.g. "
            f"[32, 32, 64, 64]; got {conv_channels}."
        )
    if (
        isinstance(pool_every, bool)
        or not isinstance(pool_every, numbers.Integral)
        or pool_every < 0
    ):
        raise ConfigError(
            f"model.pool_every must be a whole number >= 0 (0: no pooling); got {pool_every!r}."
        )
