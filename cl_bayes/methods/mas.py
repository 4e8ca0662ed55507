"""Memory Aware Synapses (Aljundi et al., ECCV 2018).

Aljundi, Babiloni, Elhoseiny, Rohrbach & Tuytelaars, "Memory Aware Synapses: Learning what
(not) to forget", ECCV 2018.

After each task the importance of every parameter is the mean over the task's training
examples of ``|d ||f(x)||_2^2 / d theta|``, with ``f(x)`` the network's outputs (logits) over
the active outputs: unsupervised (labels unused), and per example as in the paper's
definition, each example's own gradient taken before its absolute value (computed like EWC's
Fisher, :func:`cl_bayes.methods.ewc.per_example_gradient_sums`). Importances are *summed*
across tasks, as the paper's code does (``accumelate_reg_params``: previous omega plus the
new one); within a task they are averaged over the examples (its running average). Later
tasks train on cross-entropy plus ``lambda sum Omega (theta - theta*)^2`` (the paper's form,
no 1/2) over the body and the heads of the tasks trained so far; the anchor is the latest
task's final parameters and the current task's new head is not penalised.

Kept between tasks: the summed importances, the anchor and the heads trained so far.
"""

from __future__ import annotations

from torch import Tensor, nn

from cl_bayes.data import LabelledData
from cl_bayes.methods.ewc import per_example_gradient_sums
from cl_bayes.methods.quadratic import (
    QuadraticPenalty,
    check_weight,
    heads_of,
    snapshot,
    trained_parameters,
)


def squared_norm_objective(z: Tensor, y: Tensor) -> tuple[Tensor, None]:
    """``||f(x)||_2^2`` over the active outputs, ``(batch, 1)``, unweighted (labels unused)."""
    return z.square().sum(dim=1, keepdim=True), None


class MAS(QuadraticPenalty):
    """Memory Aware Synapses: output-sensitivity importances, summed across tasks.

    Parameters
    ----------
    penalty_weight
        ``lambda`` in Aljundi et al. (2018): the penalty is ``lambda sum Omega (theta -
        theta*)^2``.
    """

    def __init__(self, penalty_weight: float = 1.0):
        penalty_weight = check_weight(penalty_weight)
        super().__init__(scale=penalty_weight)
        self.penalty_weight = penalty_weight

    def compute_importance(self, model: nn.Module, data: LabelledData) -> dict[str, Tensor]:
        """``mean_n |d ||f(x_n)||^2 / d theta|`` over ``data``: ``name -> (param shape)``."""
        params = trained_parameters(model, self.seen_heads + heads_of(data))
        sums = per_example_gradient_sums(model, data, squared_norm_objective, 1, params)
        return {name: s / max(len(data), 1) for name, s in sums.items()}

    def after_task(self, model: nn.Module, task_id: int, data: LabelledData) -> None:
        """Add the task's importances to the running sum; anchor at a copy of the parameters."""
        importance = self.compute_importance(model, data)
        for name, previous in self.importance.items():
            importance[name] = importance[name] + previous
        self.seen_heads = sorted(set(self.seen_heads) | set(heads_of(data)))
        self.set_penalty(importance, snapshot(trained_parameters(model, self.seen_heads)))
