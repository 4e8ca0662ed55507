"""A-GEM: Averaged Gradient Episodic Memory.

Chaudhry, Ranzato, Rohrbach & Elhoseiny, "Efficient Lifelong Learning with A-GEM", ICLR 2019.

Every step computes the gradient ``g`` of the current batch's loss and, once the memory holds
examples, the reference gradient ``g_ref`` of the loss on a batch of ``reference_batch_size``
examples drawn uniformly from the whole memory (at the same parameters). Where they conflict
(``g·g_ref < 0``) the step follows the projection (eq. 11 of the paper)::

    g <- g - (g·g_ref / g_ref·g_ref) g_ref

so that, to first order, the loss on the memory does not increase; otherwise ``g`` is kept.
The vectors are flattened over the parameters that the current loss gives a gradient (in
the task scenario the other tasks' heads have none and are left untouched). Each memory
example is answered by its own task's head with its own scenario target.

Kept between tasks: the episodic memory, ``memory_per_task`` examples of each task trained
so far, drawn uniformly at random without replacement from the task's training set at the
task's end, as index tensors into the tasks' training sets.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cl_bayes.data import LabelledData
from cl_bayes.memory import EpisodicMemory, check_positive
from cl_bayes.methods.base import Method, logits


def project(gradient: Tensor, reference: Tensor) -> Tensor:
    """A-GEM's projection of ``gradient`` against ``reference`` (both flat, ``(p,)``).

    ``gradient - (gradient·reference / reference·reference) reference`` where the dot product
    is negative, ``gradient`` itself otherwise (no conflict, or a zero reference). Computed
    without a branch, so that a GPU never waits for the sign.
    """
    dot = gradient @ reference
    norm = (reference @ reference).clamp_min(torch.finfo(reference.dtype).tiny)
    return gradient - (dot / norm).clamp(max=0) * reference


class AGEM(Method):
    """Project each step's gradient so that the memory's loss does not increase.

    Parameters
    ----------
    memory_per_task
        Examples of each task kept in the episodic memory (250 in the paper's Permuted MNIST).
    reference_batch_size
        Memory examples drawn for each reference gradient (P_ref, 256 in the paper).
    """

    # Not capturable: the reference batch is gathered from the memory grouped by task on
    # the host (memory.batch reads their tasks with .tolist(), a device sync).
    capturable_step = False

    def __init__(self, memory_per_task: int = 250, reference_batch_size: int = 256):
        check_positive("memory_per_task", memory_per_task)
        check_positive("reference_batch_size", reference_batch_size)
        self.memory_per_task = memory_per_task
        self.reference_batch_size = reference_batch_size
        self.memory = EpisodicMemory()
        self._seen: Sequence[LabelledData] = ()

    def training_data(self, task_id: int, seen: Sequence[LabelledData]) -> LabelledData:
        """Task ``task_id``'s training set (the earlier ones are kept for the memory)."""
        self._seen = seen
        self.memory.to(seen[task_id].y.device)
        return seen[task_id]

    def train_step(
        self, model: nn.Module, batch: LabelledData, optimizer: torch.optim.Optimizer
    ) -> Tensor:
        """Loss, backward, A-GEM's projection against the memory's gradient, step."""
        value = self.loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        if len(self.memory):
            self._project_gradients(model, batch.n_outputs)
        optimizer.step()
        return value.detach()

    def _project_gradients(self, model: nn.Module, n_outputs: int) -> None:
        params = [p for p in model.parameters() if p.grad is not None]
        positions = self.memory.sample(self.reference_batch_size)
        reference_batch = self.memory.batch(positions, self._seen, n_outputs)
        reference_loss = F.cross_entropy(logits(model, reference_batch), reference_batch.y)
        reference = torch.autograd.grad(reference_loss, params, allow_unused=True)
        flat_reference = torch.cat(
            [
                (torch.zeros_like(p) if r is None else r).reshape(-1)
                for p, r in zip(params, reference, strict=True)
            ]
        )
        flat = project(torch.cat([p.grad.reshape(-1) for p in params]), flat_reference)
        for p, g in zip(params, flat.split([p.numel() for p in params]), strict=True):
            p.grad.copy_(g.view_as(p))

    def after_task(self, model: nn.Module, task_id: int, data: LabelledData) -> None:
        """Add ``memory_per_task`` random examples of the task to the memory."""
        task = self._seen[task_id]
        index = torch.randperm(len(task), device=task.y.device)[: self.memory_per_task]
        self.memory.extend(task_id, index, task.subset(index))

    def state_dict(self) -> dict[str, Any]:
        """The memory's entries."""
        return {"memory": self.memory.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.memory.load_state_dict(state["memory"])
