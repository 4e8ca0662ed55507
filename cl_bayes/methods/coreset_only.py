"""Coreset only: the baseline of Nguyen, Li, Bui & Turner (ICLR 2018, section 5).

The network never trains on the tasks' data. After each task, a copy of the untouched
Bayesian network (its initial posterior, prior ``N(0, prior_var)``) is trained by variational
inference on the coresets alone (all of them merged for a shared head; each task's own for its
head), and that copy predicts, exactly as VCL's coreset step does. It shows how much of
VCL + coreset's accuracy the coresets explain by themselves.

Kept between tasks: each task's coreset (an index tensor into that task's training set).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from cl_bayes.data import LabelledData
from cl_bayes.errors import ConfigError
from cl_bayes.methods.vcl import VCL


class CoresetOnly(VCL):
    """Predict with a copy of the initial Bayesian network trained on the coresets only.

    Parameters
    ----------
    epochs, batch_size, optimizer, beta, train_samples, predict_samples, coreset_method, progress,
    steps
        As for :class:`~cl_bayes.methods.vcl.VCL`; they set the coreset training.
    coreset_size
        Coreset examples per task (must be positive: the coresets are all this method sees).
    """

    def __init__(
        self,
        epochs: int,
        batch_size: int | None,
        optimizer: Callable[..., torch.optim.Optimizer],
        beta: float = 1.0,
        train_samples: int = 10,
        predict_samples: int = 100,
        coreset_size: int = 200,
        coreset_method: str = "random",
        progress: bool = True,
        steps: int | None = None,
    ):
        if coreset_size < 1:
            raise ConfigError(
                f"method=coreset_only needs method.coreset_size >= 1, got {coreset_size}."
            )
        super().__init__(
            epochs,
            batch_size,
            optimizer,
            beta=beta,
            train_samples=train_samples,
            predict_samples=predict_samples,
            coreset_size=coreset_size,
            coreset_method=coreset_method,
            ml_init=False,
            progress=progress,
            steps=steps,
        )

    def training_data(self, task_id: int, seen: Sequence[LabelledData]) -> LabelledData:
        """No examples: the task's coreset is selected, and the rest is never trained on."""
        rest = super().training_data(task_id, seen)
        return rest.subset(torch.zeros(0, dtype=torch.long, device=rest.y.device))

    def after_task(self, model: nn.Module, task_id: int, data: LabelledData) -> None:
        """Train the predicting copies on the coresets; the prior stays ``N(0, prior_var)``."""
        self._use_predictors(self._tune_on_coresets(model, task_id))
