"""The quadratic penalty shared by EWC, online EWC, SI, MAS and L2.

Each of these methods trains on the current task's cross-entropy plus

    scale * sum_i importance_i * (theta_i - anchor_i)^2 + constant

over the *anchored* parameters: the shared body and the heads of the tasks trained before.
The current task's head, when it is new (task-incremental), is not anchored. The methods
differ only in the importance (Fisher, path integral, output sensitivity, ones), in the
anchor and in ``scale``, which each method sets so that its ``penalty_weight`` is its
paper's symbol (``lambda / 2`` for EWC and L2, ``c`` for SI, ``lambda`` for MAS).

The penalty's gradient ``2 * scale * importance * (theta - anchor)`` is added to the task
loss's gradient directly in :meth:`QuadraticPenalty.train_step`: three multi-tensor
operations (``torch._foreach_*``, as torch's optimisers use; on a GPU each is one launch for
all the parameters) instead of an autograd graph over every parameter, which made a penalised
step markedly slower.
:meth:`QuadraticPenalty.loss` builds the same penalty with autograd.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import Tensor, nn

from cl_bayes.data import LabelledData
from cl_bayes.errors import ConfigError
from cl_bayes.methods.base import Method


def heads_of(data: LabelledData) -> list[int]:
    """The heads that answer ``data``'s examples."""
    return [data.head] if isinstance(data.head, int) else data.head.unique().tolist()


def trained_parameters(model: nn.Module, heads: Iterable[int]) -> dict[str, nn.Parameter]:
    """The body's parameters and those of ``heads``: every other head's are left out.

    A model without a ``heads`` list is all body.
    """
    heads = set(heads)
    others = {
        id(p)
        for k, head in enumerate(getattr(model, "heads", ()))
        if k not in heads
        for p in head.parameters()
    }
    return {name: p for name, p in model.named_parameters() if id(p) not in others}


def check_weight(value: float, key: str = "penalty_weight") -> float:
    """``value`` if it is a finite number of at least 0, else a :class:`ConfigError`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1e308:
        raise ConfigError(f"method.{key} must be a finite number >= 0, got {value!r}.")
    return float(value)


class QuadraticPenalty(Method):
    """Cross-entropy plus ``scale * sum importance * (theta - anchor)^2 + constant``.

    Subclasses set :attr:`importance` and :attr:`anchor` (``name -> tensor`` over the
    anchored parameters, detached copies) through :meth:`set_penalty` after each task.

    Parameters
    ----------
    scale
        The factor in front of the sum (e.g. ``lambda / 2`` for EWC).
    """

    # Capturable: the step never waits for the device (the first task's zero penalty is made
    # on the parameters' device) and keeps no per-step Python state (SI's path integral is
    # tensors updated in place). Captured on an NVIDIA H200, EWC, online EWC, SI, MAS and L2
    # trained with Adam as eagerly, within allclose(rtol=1e-3, atol=1e-4), in task- and
    # class-incremental runs (results/gpu/pytest_gpu_tests.txt).
    capturable_step = True

    def __init__(self, scale: float):
        self.scale = scale
        self.importance: dict[str, Tensor] = {}
        self.anchor: dict[str, Tensor] = {}
        self.constant = 0.0
        self.seen_heads: list[int] = []
        self._terms: tuple[nn.Module, list[Tensor], list[Tensor], list[Tensor]] | None = None

    def set_penalty(
        self, importance: dict[str, Tensor], anchor: dict[str, Tensor], constant: float = 0.0
    ) -> None:
        """Penalise ``importance * (theta - anchor)^2`` (same keys) from now on."""
        self.importance, self.anchor, self.constant = importance, anchor, constant
        self._terms = None

    def _bound(self, model: nn.Module) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """Anchored parameters, their anchors and ``sqrt(importance)``, in matching order."""
        if self._terms is None or self._terms[0] is not model:
            named = dict(model.named_parameters())
            params = [named[name] for name in self.importance]
            anchors = [self.anchor[n].to(p) for n, p in zip(self.importance, params, strict=True)]
            roots = [
                self.importance[n].to(p).sqrt()
                for n, p in zip(self.importance, params, strict=True)
            ]
            self._terms = (model, params, anchors, roots)
        return self._terms[1:]

    def penalty(self, model: nn.Module) -> Tensor:
        """The penalty's value at the model's parameters (differentiable, a scalar)."""
        params, anchors, roots = self._bound(model)
        total = sum(
            (((p - a) * r).square().sum() for p, a, r in zip(params, anchors, roots, strict=True))
        )
        return self.scale * torch.as_tensor(total) + self.constant

    def task_loss(self, model: nn.Module, batch: LabelledData) -> Tensor:
        """The current task's loss without the penalty: cross-entropy over the active outputs."""
        return super().loss(model, batch)

    def loss(self, model: nn.Module, batch: LabelledData) -> Tensor:
        """Task loss plus penalty (a scalar)."""
        return self.task_loss(model, batch) + self.penalty(model)

    @torch.no_grad()
    def add_penalty_gradient(self, model: nn.Module) -> Tensor:
        """Add the penalty's gradient to the parameters' ``.grad``; the penalty's value.

        ``grad += 2 * scale * importance * (theta - anchor)``, as the backward pass of
        :meth:`penalty` would. An anchored parameter the batch did not reach (a past task's
        head) gets a ``.grad`` holding just this.
        """
        params, anchors, roots = self._bound(model)
        if not params:  # the first task: nothing anchored yet
            return torch.zeros((), device=next(model.parameters()).device)
        grads = [_grad(p) for p in params]
        scaled = torch._foreach_sub(params, anchors)
        torch._foreach_mul_(scaled, roots)  # sqrt(importance) * (theta - anchor)
        torch._foreach_addcmul_(grads, roots, scaled, value=2 * self.scale)
        return self.scale * torch.stack(torch._foreach_norm(scaled)).square().sum() + self.constant

    def train_step(
        self, model: nn.Module, batch: LabelledData, optimizer: torch.optim.Optimizer
    ) -> Tensor:
        """Backward through the task loss, add the penalty's gradient, step; the full loss."""
        loss = self.task_loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        penalty = self.add_penalty_gradient(model)
        optimizer.step()
        return loss.detach() + penalty

    def state_dict(self) -> dict[str, Any]:
        """Importance, anchor, constant and the heads trained so far."""
        return {
            "importance": dict(self.importance),
            "anchor": dict(self.anchor),
            "constant": self.constant,
            "seen_heads": list(self.seen_heads),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.set_penalty(dict(state["importance"]), dict(state["anchor"]), state["constant"])
        self.seen_heads = list(state["seen_heads"])


def _grad(p: Tensor) -> Tensor:
    """``p.grad``, created as zeros where the batch did not reach ``p``."""
    if p.grad is None:
        p.grad = torch.zeros_like(p)
    return p.grad


def snapshot(params: dict[str, Tensor]) -> dict[str, Tensor]:
    """Detached copies (never views) of ``params``."""
    return {name: p.detach().clone() for name, p in params.items()}
