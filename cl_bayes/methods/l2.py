"""L2: a quadratic pull towards the previous task's parameters, the regularisers' sanity floor.

Later tasks train on cross-entropy plus ``(lambda / 2) ||theta - theta*||^2``, with
``theta*`` the parameters after the previous task, over the body and the heads of the tasks
trained so far: every parameter counts the same, which is what EWC, SI and MAS improve on
with their importances. The current task's new head (task-incremental) is not penalised.
Class-incremental, the one head is penalised whole, including the rows of classes not yet
seen (pulled towards their initial values).

Kept between tasks: the anchor (and unit importances over the anchored parameters) and the
heads trained so far.
"""

from __future__ import annotations

import torch
from torch import nn

from cl_bayes.data import LabelledData
from cl_bayes.methods.quadratic import (
    QuadraticPenalty,
    check_weight,
    heads_of,
    snapshot,
    trained_parameters,
)


class L2(QuadraticPenalty):
    """Isotropic quadratic penalty towards the previous task's parameters.

    Parameters
    ----------
    penalty_weight
        ``lambda``: the penalty is ``(lambda / 2) ||theta - theta*||^2``.
    """

    def __init__(self, penalty_weight: float = 1.0):
        penalty_weight = check_weight(penalty_weight)
        super().__init__(scale=penalty_weight / 2)
        self.penalty_weight = penalty_weight

    def after_task(self, model: nn.Module, task_id: int, data: LabelledData) -> None:
        """Anchor at a copy of the parameters of the body and the heads trained so far."""
        self.seen_heads = sorted(set(self.seen_heads) | set(heads_of(data)))
        anchor = snapshot(trained_parameters(model, self.seen_heads))
        self.set_penalty({name: torch.ones_like(a) for name, a in anchor.items()}, anchor)
