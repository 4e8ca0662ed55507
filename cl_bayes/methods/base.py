"""The small interface every continual-learning method implements.

For each task ``t`` the loop in ``cl_bayes.run`` calls::

    data = method.training_data(t, train_sets)     # what to train on (default: task t's own)
    method.before_task(model, t, data)
    for batch in batches(data):                       # shuffled minibatches drawn by index
        loss = method.loss(model, batch)             # scalar to minimise
        ...backward, optimiser step...
    method.after_task(model, t, data)                # e.g. Fisher, posterior -> prior

and evaluates with ``method.predict(model, data)`` (``data.y`` unused). Whatever a method keeps
between tasks (anchors, Fisher information, buffers, priors) lives on the method and goes through
``state_dict`` / ``load_state_dict`` so that checkpoints restore it exactly; state held as
buffers of the model needs nothing more.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class LabelledData:
    """Inputs with scenario targets and the head that answers each example.

    ``x``: ``(n, ...)``; ``y``: ``(n,)`` long targets in the scenario's label space;
    ``head``: one head index for all examples, or an ``(n,)`` long tensor.
    ``n_outputs``: active outputs (class-incremental: the classes seen so far).
    """

    x: Tensor
    y: Tensor
    head: int | Tensor
    n_outputs: int

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, index: Tensor) -> LabelledData:
        """The examples at ``index`` (a ``(k,)`` long or ``(n,)`` bool tensor)."""
        head = self.head if isinstance(self.head, int) else self.head[index]
        return LabelledData(self.x[index], self.y[index], head, self.n_outputs)

    @staticmethod
    def concat(parts: Sequence[LabelledData]) -> LabelledData:
        """All examples of ``parts``, in order, each keeping its own head."""
        heads = [p.head for p in parts]
        if all(isinstance(h, int) for h in heads) and len(set(heads)) == 1:
            head: int | Tensor = heads[0]
        else:
            head = torch.cat(
                [
                    torch.full((len(p),), p.head, dtype=torch.long, device=p.y.device)
                    if isinstance(p.head, int)
                    else p.head
                    for p in parts
                ]
            )
        return LabelledData(
            torch.cat([p.x for p in parts]),
            torch.cat([p.y for p in parts]),
            head,
            max(p.n_outputs for p in parts),
        )


def logits(model: nn.Module, batch: LabelledData) -> Tensor:
    """The model's scores over the active outputs, shape ``(batch, n_outputs)``."""
    return model(batch.x, batch.head)[:, : batch.n_outputs]


class Method:
    """Base class: plain training on the current task's data with cross-entropy."""

    def training_data(self, task_id: int, train_sets: Sequence[LabelledData]) -> LabelledData:
        """The data to train on for task ``task_id``; ``train_sets[j]`` is task ``j``'s."""
        return train_sets[task_id]

    def before_task(self, model: nn.Module, task_id: int, data: LabelledData) -> None:
        """Prepare for training on task ``task_id``."""

    def loss(self, model: nn.Module, batch: LabelledData) -> Tensor:
        """Scalar loss to minimise on ``batch``."""
        return F.cross_entropy(logits(model, batch), batch.y)

    def after_task(self, model: nn.Module, task_id: int, data: LabelledData) -> None:
        """Consolidate what was learnt on task ``task_id``."""

    @torch.no_grad()
    def predict(self, model: nn.Module, data: LabelledData) -> Tensor:
        """Scores ``(batch, n_outputs)`` over the active outputs; the argmax is the prediction."""
        return logits(model, data)

    def state_dict(self) -> dict[str, Any]:
        """What the method keeps between tasks, for checkpoints."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
