"""Synaptic Intelligence (Zenke, Poole & Ganguli, ICML 2017).

Zenke, Poole & Ganguli, "Continual Learning Through Synaptic Intelligence", ICML 2017.

Every optimisation step of a task adds to each parameter's path integral
``omega += -g * delta`` (the step's gradient times its parameter change). The gradient ``g``
is that of the *unregularised* task loss, as in the paper's code (its ``unreg_grads``);
the step itself follows the full loss, penalty included. At the end of the task the
importance grows by ``omega / (Delta^2 + xi)``, with ``Delta`` the parameter's change over the
whole task and ``xi`` the damping, and is clipped at 0 as the paper's code does (a negative
importance would reward moving away from the anchor). Importances accumulate over tasks;
``omega`` starts from 0 at every task. Later tasks train on cross-entropy plus ``c sum Omega
(theta - theta*)^2`` (the paper's form, no 1/2) over the body and the heads of the tasks
trained so far, anchored at copies of the parameters after the previous task; the current
task's new head is not penalised.

Kept between tasks: the importances ``Omega``, the anchor and the heads trained so far (the
running ``omega`` and the task's starting point live only within a task).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from cl_bayes.data import LabelledData
from cl_bayes.errors import ConfigError
from cl_bayes.methods.quadratic import (
    QuadraticPenalty,
    check_weight,
    heads_of,
    snapshot,
    trained_parameters,
)


class SI(QuadraticPenalty):
    """Synaptic Intelligence: path-integral importances observed at every step.

    Parameters
    ----------
    penalty_weight
        ``c`` in Zenke et al. (2017): the penalty is ``c sum Omega (theta - theta*)^2``.
    damping
        ``xi`` in Zenke et al. (2017), > 0: ``Omega += omega / (Delta^2 + xi)``.
    """

    def __init__(self, penalty_weight: float = 1.0, damping: float = 1e-3):
        penalty_weight = check_weight(penalty_weight)
        if isinstance(damping, bool) or not isinstance(damping, (int, float)) or not damping > 0:
            raise ConfigError(f"method.damping must be a number > 0, got {damping!r}.")
        super().__init__(scale=penalty_weight)
        self.penalty_weight, self.damping = penalty_weight, float(damping)
        # Within a task: the observed parameters, their values at the task's start, the path
        # integral omega, and per-step buffers (the unregularised gradient, the parameters
        # before the step), all in matching order.
        self.names: list[str] = []
        self.start: dict[str, Tensor] = {}
        self.omega: dict[str, Tensor] = {}
        self._observed: tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor]] | None = None

    def before_task(self, model: nn.Module, task_id: int, data: LabelledData) -> None:
        """Start a path integral at 0 for the body and the heads trained so far and now."""
        params = trained_parameters(model, self.seen_heads + heads_of(data))
        self.names = list(params)
        self.start = snapshot(params)
        self.omega = {name: torch.zeros_like(p) for name, p in params.items()}
        values = list(params.values())
        self._observed = (
            values,
            list(self.omega.values()),
            [torch.zeros_like(p) for p in values],
            [torch.zeros_like(p) for p in values],
        )

    def train_step(
        self, model: nn.Module, batch: LabelledData, optimizer: torch.optim.Optimizer
    ) -> Tensor:
        """A penalised step that adds ``-g * delta`` to ``omega`` (``g``: unregularised)."""
        if self._observed is None:  # a step outside a task (no before_task): observe it all
            self.before_task(model, len(self.seen_heads), batch)
        params, omega, grads, before = self._observed
        loss = self.task_loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        with torch.no_grad():
            # Copies, never views: a view would follow the update and make every omega 0.
            torch._foreach_copy_(grads, [_grad(p) for p in params])
            torch._foreach_copy_(before, params)
        penalty = self.add_penalty_gradient(model)
        optimizer.step()
        with torch.no_grad():
            torch._foreach_sub_(before, params)  # -delta
            torch._foreach_addcmul_(omega, grads, before)  # omega += g * (-delta)
        return loss.detach() + penalty

    def after_task(self, model: nn.Module, task_id: int, data: LabelledData) -> None:
        """``Omega = max(0, Omega + omega / (Delta^2 + xi))``; anchor at a copy of the weights."""
        if self._observed is None:  # no before_task: nothing was observed, omega is 0
            self.before_task(model, task_id, data)
        params = dict(model.named_parameters())
        importance = dict(self.importance)
        for name in self.names:
            change = params[name].detach() - self.start[name]
            new = self.omega[name] / (change.square() + self.damping)
            if name in importance:
                new = new + importance[name]
            importance[name] = new.clamp_min(0)
        self.seen_heads = sorted(set(self.seen_heads) | set(heads_of(data)))
        self.set_penalty(importance, snapshot(trained_parameters(model, self.seen_heads)))
        self._observed = None


def _grad(p: Tensor) -> Tensor:
    """``p``'s gradient; zeros where the batch did not reach it (a past task's head)."""
    return p.grad if p.grad is not None else torch.zeros_like(p)
