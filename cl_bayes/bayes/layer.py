"""What every mean-field Gaussian layer shares: its posterior, its prior and their KL.

Every weight and bias has an independent Gaussian posterior ``N(posterior_mean,
exp(posterior_log_var))`` (trainable parameters) and an independent Gaussian prior
``N(prior_mean, exp(prior_log_var))`` held as persistent buffers, so a checkpoint restores
the prior exactly and the optimiser never sees it.

The forward pass uses the local reparameterisation trick (Kingma, Salimans & Welling 2015):
instead of sampling weights, it samples pre-activations from their exact Gaussian
distribution given the input: ``mean = op(x, W_m) + b_m``, ``variance = op(x^2, exp(W_lv)) +
exp(b_lv)`` for the layer's linear operation ``op`` (a matrix product, a convolution). For
an input shared by all K samples (the first layer) the two products are computed once and
the K samples drawn from them in one vectorised pass.

``sampling="weights"`` draws instead one set of weights and biases per sample, shared by
every example of the batch, as the official VCL code does (Nguyen et al. 2018). Both
estimate the same expected log-likelihood; the local trick has lower gradient variance, and
sampling weights costs K input-layer products where the local trick needs two.
"""

from __future__ import annotations

import abc
import math
from typing import Iterable

import torch
from torch import Tensor, nn

from cl_bayes.bayes.gaussian import kl_diagonal_gaussians

NAMES = ("weight", "bias")
SAMPLING = ("local", "weights")


class MeanFieldLayer(nn.Module, abc.ABC):
    """Base of the mean-field Gaussian layers.

    A subclass defines :meth:`linear_op` (the deterministic operation) and
    :meth:`per_sample_op` (the same with one set of weights per sample).

    Parameters
    ----------
    weight_shape, bias_shape
        Shapes of the weight and bias tensors.
    input_dims
        Dimensions of one batch of inputs shared by all samples (2 for ``(batch, in)``,
        4 for ``(batch, channels, height, width)``); one more means one input per sample.
    prior_var
        Variance of the initial prior ``N(0, prior_var)`` on every weight and bias.
    init_log_var
        Initial posterior log-variance of every weight and bias (-6 in Nguyen et al. 2018).
    init_std
        Standard deviation of the truncated normal (at two standard deviations) that
        draws the initial posterior means (0.1 in the official VCL code).
    sampling
        ``"local"`` (local reparameterisation, one draw per example) or ``"weights"`` (one
        weight draw per sample, shared by the batch).
    """

    def __init__(
        self,
        weight_shape: tuple[int, ...],
        bias_shape: tuple[int, ...],
        input_dims: int,
        prior_var: float = 1.0,
        init_log_var: float = -6.0,
        init_std: float = 0.1,
        sampling: str = "local",
    ):
        super().__init__()
        if sampling not in SAMPLING:
            raise ValueError(f"sampling must be one of {SAMPLING}, got {sampling!r}.")
        self.sampling = sampling
        self.input_dims = input_dims
        self.prior_var, self.init_log_var, self.init_std = prior_var, init_log_var, init_std
        for name, shape in zip(NAMES, (weight_shape, bias_shape), strict=True):
            self.register_parameter(f"{name}_posterior_mean", nn.Parameter(torch.empty(shape)))
            self.register_parameter(f"{name}_posterior_log_var", nn.Parameter(torch.empty(shape)))
            self.register_buffer(f"{name}_prior_mean", torch.empty(shape))
            self.register_buffer(f"{name}_prior_log_var", torch.empty(shape))
        self._prior_precision: tuple[list, list[Tensor]] = ([], [])
        self.reset_parameters()
        self.reset_prior()

    def __setstate__(self, state: dict) -> None:
        """Copies and unpickled layers forget the kept prior precision (see ``prior_precision``).

        Their buffers are new tensors whose version counters start again, so a kept key
        could match them while the precision belongs to an earlier prior.
        """
        super().__setstate__(state)
        self._prior_precision = ([], [])

    @abc.abstractmethod
    def linear_op(self, x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        """The layer's deterministic operation on a shared-shape input ``x``."""

    @abc.abstractmethod
    def per_sample_op(self, x: Tensor, weights: Tensor, biases: Tensor) -> Tensor:
        """The operation with sample ``k``'s own ``weights[k]``, ``biases[k]`` on ``x[k]``.

        ``x`` is ``(K, batch, ...)``, or a shared-shape input used by every sample;
        returns ``(K, batch, ...)``.
        """

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Fresh posterior: truncated-normal means, log-variances ``init_log_var``."""
        for name in NAMES:
            mean = getattr(self, f"{name}_posterior_mean")
            std = self.init_std
            nn.init.trunc_normal_(mean, std=std, a=-2 * std, b=2 * std)
            getattr(self, f"{name}_posterior_log_var").fill_(self.init_log_var)

    @torch.no_grad()
    def reset_prior(self) -> None:
        """Prior ``N(0, prior_var)`` on every weight and bias."""
        for name in NAMES:
            getattr(self, f"{name}_prior_mean").zero_()
            getattr(self, f"{name}_prior_log_var").fill_(math.log(self.prior_var))

    @torch.no_grad()
    def posterior_to_prior(self) -> None:
        """Make the current posterior the prior (a detached copy; VCL's step between tasks)."""
        for name in NAMES:
            getattr(self, f"{name}_prior_mean").copy_(getattr(self, f"{name}_posterior_mean"))
            getattr(self, f"{name}_prior_log_var").copy_(getattr(self, f"{name}_posterior_log_var"))

    def kl(self) -> Tensor:
        """``KL(posterior || prior)`` summed over all weights and biases (a scalar)."""
        return summed_kl([self])

    def gaussians(self) -> tuple[list[Tensor], ...]:
        """The arguments of :func:`~cl_bayes.bayes.gaussian.kl_diagonal_gaussians` for this layer.

        Posterior means, posterior log-variances, prior means, prior log-variances and prior
        precisions, each a list ``[weight, bias]``.
        """
        # Straight from the dictionaries: this runs at every training step, where
        # nn.Module.__getattr__'s lookups add up.
        parameters, buffers = self._parameters, self._buffers
        return (
            [parameters["weight_posterior_mean"], parameters["bias_posterior_mean"]],
            [parameters["weight_posterior_log_var"], parameters["bias_posterior_log_var"]],
            [buffers["weight_prior_mean"], buffers["bias_prior_mean"]],
            [buffers["weight_prior_log_var"], buffers["bias_prior_log_var"]],
            self.prior_precision(),
        )

    def prior_precision(self) -> list[Tensor]:
        """``[exp(-weight_prior_log_var), exp(-bias_prior_log_var)]``, kept while the prior is.

        The KL needs the prior's precision at every step but the prior changes only between
        tasks, so it is computed again only when a prior log-variance buffer has been replaced
        by another tensor (``.to()``, ``.double()``, an assignment) or written in place
        (``posterior_to_prior``, ``reset_prior``, ``load_state_dict``, any in-place operation,
        each of which bumps the tensor's version counter); copies and unpickled layers start
        afresh (``__setstate__``). A write through ``.data`` bypasses the version counter:
        write the buffer itself, under ``torch.no_grad()``.
        """
        sources = [self._buffers["weight_prior_log_var"], self._buffers["bias_prior_log_var"]]
        if any(source.is_inference() for source in sources):
            # A layer built under torch.inference_mode(): its tensors keep no version
            # counter, so nothing would tell that they changed. Nothing is kept.
            with torch.no_grad():
                return torch._foreach_exp(torch._foreach_neg(sources))
        key = [(source, source._version) for source in sources]
        cached_key, precision = self._prior_precision
        if len(cached_key) != len(key) or any(
            cached is not source or cached_version != version
            for (cached, cached_version), (source, version) in zip(cached_key, key, strict=True)
        ):
            with torch.no_grad():
                precision = torch._foreach_exp(torch._foreach_neg(sources))
            self._prior_precision = (key, precision)
        return list(precision)

    def moments(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and variance of the pre-activations for a shared-shape input ``x``."""
        mean = self.linear_op(x, self.weight_posterior_mean, self.bias_posterior_mean)
        variance = self.linear_op(
            x * x, self.weight_posterior_log_var.exp(), self.bias_posterior_log_var.exp()
        )
        return mean, variance

    def forward(self, x: Tensor, n_samples: int | None = None) -> Tensor:
        """Sampled pre-activations, or the posterior-mean layer when ``n_samples`` is None.

        ``x`` has ``input_dims`` dimensions, shared by all samples, or one more in front,
        ``(K, ...)``, one input per sample. Sampling returns ``(K, batch, ...)`` (``K =
        n_samples`` for a shared input, ``x.shape[0]`` otherwise); mean mode returns the
        deterministic layer's output for ``x``'s shape.
        """
        per_sample = x.dim() == self.input_dims + 1
        flat = x.flatten(0, 1) if per_sample else x
        if n_samples is None:
            out = self.linear_op(flat, self.weight_posterior_mean, self.bias_posterior_mean)
            return out.unflatten(0, x.shape[:2]) if per_sample else out
        if self.sampling == "weights":
            return self.sample_weights(x, x.shape[0] if per_sample else n_samples)
        out = self.sample_local(flat, None if per_sample else n_samples)
        return out.unflatten(0, x.shape[:2]) if per_sample else out

    def sample_local(self, x: Tensor, n_samples: int | None) -> Tensor:
        """Pre-activations drawn by local reparameterisation for a shared-shape batch ``x``.

        ``n_samples = K`` draws K samples for every example, ``(K, batch, ...)``, from moments
        computed once; ``None`` draws one per example, ``(batch, ...)``.
        """
        mean, variance = self.moments(x)
        shape = mean.shape if n_samples is None else (n_samples, *mean.shape)
        noise = torch.randn(shape, device=x.device, dtype=x.dtype)
        return torch.addcmul(mean, variance.sqrt(), noise)

    def sample_weights(self, x: Tensor, n_samples: int) -> Tensor:
        """Outputs for ``n_samples`` weight draws, each shared by the whole batch.

        All the draws of a tensor come from one ``randn`` (weights, then biases) and go to
        :meth:`per_sample_op` together, one batched operation for the K samples;
        :class:`~cl_bayes.bayes.linear.MeanFieldLinear` does the same in one autograd node.
        """
        draws = []
        for name in NAMES:
            mean = getattr(self, f"{name}_posterior_mean")
            std = getattr(self, f"{name}_posterior_log_var").mul(0.5).exp()
            noise = torch.randn((n_samples,) + mean.shape, device=x.device, dtype=x.dtype)
            draws.append(mean + std * noise)
        return self.per_sample_op(x, *draws)


def summed_kl(layers: Iterable[MeanFieldLayer]) -> Tensor:
    """``KL(posterior || prior)`` summed over every weight and bias of ``layers`` (a scalar).

    One multi-tensor KL for all the layers together, not one per layer and tensor.
    """
    columns: tuple[list[Tensor], ...] = ([], [], [], [], [])
    for layer in layers:
        for column, tensors in zip(columns, layer.gaussians(), strict=True):
            column.extend(tensors)
    return kl_diagonal_gaussians(*columns)
