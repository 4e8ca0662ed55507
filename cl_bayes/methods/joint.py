"""Joint training: the upper bound that trains on all data of the tasks seen so far.

At task ``t`` the network is **re-initialised and retrained from scratch** on the union of
the training sets of tasks ``0 .. t`` (each example answered by its own task's head), so
row ``t`` of its accuracy matrix is the joint model of tasks ``0 .. t``: the reference
``a*_t`` of the intransigence measure (Chaudhry et al. 2018). It keeps the earlier tasks'
training data, which is what makes it an upper bound rather than a continual method.
"""

from __future__ import annotations

from typing import Sequence

from torch import nn

from cl_bayes.data import LabelledData
from cl_bayes.methods.base import Method
from cl_bayes.models.mlp import reset_parameters


class Joint(Method):
    """Retrain from scratch on tasks ``0 .. t`` after each new task ``t``."""

    # The default step, on the union of the tasks. Where their examples have several heads
    # (task-incremental) the network routes them on the host: the loop trains those eagerly.
    capturable_step = True
    restarts_model = True

    def training_data(self, task_id: int, seen: Sequence[LabelledData]) -> LabelledData:
        """All training examples of tasks ``0 .. task_id``, each with its own head."""
        return LabelledData.concat(seen[: task_id + 1])

    def before_task(self, model: nn.Module, task_id: int, data: LabelledData) -> None:
        """Re-initialise every parameter: each task retrains from scratch."""
        reset_parameters(model)
