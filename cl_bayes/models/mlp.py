"""A multilayer perceptron with one or more output heads."""

from __future__ import annotations

import math
import numbers
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cl_bayes.errors import ConfigError


def route_heads(heads: nn.ModuleList, features: Tensor, head: int | Tensor, *args) -> Tensor:
    """Send each example's ``features`` to its own head (extra ``args`` go to the heads).

    ``features`` has shape ``(..., batch, hidden)``; ``head`` is one head index for the
    whole batch or a ``(batch,)`` tensor of indices (mixed-task batches, as in replay or
    joint training). All heads have the same number of outputs; returns
    ``(..., batch, outputs)``.
    """
    if isinstance(head, int):
        return heads[head](features, *args)
    used = head.unique()
    indices = used.tolist()
    if not args and all(type(heads[i]) is nn.Linear and heads[i].bias is not None for i in indices):
        return _gather_linear_heads([heads[i] for i in indices], features, used, head)
    out = features.new_empty(features.shape[:-1] + (heads[0].out_features,))
    for index in indices:
        rows = head == index
        out[..., rows, :] = heads[index](features[..., rows, :], *args)
    return out


def _gather_linear_heads(
    used_heads: list[nn.Linear], features: Tensor, used: Tensor, head: Tensor
) -> Tensor:
    """Every example through all ``used_heads`` at once, each keeping its own head's outputs.

    One matmul against the used heads' stacked weights and one gather replace a masked
    forward per head (about half the routing's cost on a 384-row replay batch). Only the
    heads that some example uses enter the graph: the others get no gradient, as before.
    """
    weight = torch.cat([h.weight for h in used_heads])
    bias = torch.cat([h.bias for h in used_heads])
    outputs = used_heads[0].out_features
    every = F.linear(features, weight, bias).unflatten(-1, (len(used_heads), outputs))
    position = torch.searchsorted(used, head)  # ``used`` is sorted: each row's slot
    position = position.view(-1, 1, 1).expand(*features.shape[:-1], 1, outputs)
    return every.gather(-2, position).squeeze(-2)


def flat_size(input_shape: int | Sequence[int]) -> int:
    """Number of input features: ``input_shape`` itself, or the product of a shape."""
    if isinstance(input_shape, numbers.Integral):
        return int(input_shape)
    return math.prod(input_shape)


class MLP(nn.Module):
    """Fully connected ReLU network; images are flattened first.

    Parameters
    ----------
    input_shape
        Shape of one input, ``(channels, height, width)``, or its flattened size.
    hidden_sizes
        Width of each hidden layer, e.g. ``[256, 256]``.
    head_sizes
        Outputs of each head: one head per task (task-incremental) or a single shared head.
    dropout
        Probability of zeroing each hidden unit, after every hidden layer's ReLU (never on
        the inputs), while the model is in training mode (Srivastava et al., JMLR 2014);
        0.5 is Gal & Ghahramani's (ICML 2016) rate for classification. 0, the default, drops
        nothing: the outputs, parameters and random draws are those of the network without
        dropout.
    """

    def __init__(
        self,
        input_shape: int | Sequence[int],
        hidden_sizes: Sequence[int],
        head_sizes: Sequence[int],
        dropout: float = 0.0,
    ):
        super().__init__()
        hidden_sizes = list(hidden_sizes)
        if not hidden_sizes or any(int(h) < 1 for h in hidden_sizes):
            raise ConfigError(
                f"model.hidden_sizes must list at least one positive width, got {hidden_sizes}."
            )
        if (
            isinstance(dropout, bool)
            or not isinstance(dropout, numbers.Real)
            or not 0 <= dropout < 1
        ):
            raise ConfigError(
                f"model.dropout must be a probability in [0, 1), got {dropout!r}: set it to "
                "0 for no dropout, or e.g. 0.5 (model=dropout_mlp)."
            )
        layers: list[nn.Module] = [nn.Flatten()]
        width = flat_size(input_shape)
        for hidden in hidden_sizes:
            # ReLU and dropout share one slot of the body, so that the parameters keep the
            # names of the network without dropout (body.1.weight, body.3.weight, ...) and
            # checkpoints written before dropout existed still load.
            activation = nn.Sequential(nn.ReLU(), nn.Dropout(float(dropout)))
            layers += [nn.Linear(width, hidden), activation]
            width = hidden
        self.body = nn.Sequential(*layers)
        self.heads = nn.ModuleList(nn.Linear(width, size) for size in head_sizes)

    def forward(self, x: Tensor, head: int | Tensor = 0) -> Tensor:
        """Logits of shape ``(batch, outputs)`` for inputs ``x`` of shape ``(batch, ...)``."""
        return route_heads(self.heads, self.body(x), head)


def reset_parameters(model: nn.Module) -> None:
    """Re-initialise every layer of ``model`` that knows how (draws from torch's global RNG)."""
    with torch.no_grad():
        for module in model.modules():
            if module is not model and hasattr(module, "reset_parameters"):
                module.reset_parameters()
