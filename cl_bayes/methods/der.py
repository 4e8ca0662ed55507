"""Dark Experience Replay: DER and DER++.

Buzzega, Boschini, Porrello, Abati & Calderara, "Dark Experience for General Continual
Learning: a Strong, Simple Baseline", NeurIPS 2020.

A reservoir memory of ``memory_size`` training examples in total keeps, with each example,
the logits the network gave it when it was stored. Each step minimises (eq. 6 of the paper)::

    CE(f(x), y) + alpha * MSE(f(x'), z') + beta * CE(f(x''), y'')

over the current batch ``(x, y)`` and two batches drawn independently from the memory: the
stored logits ``z'`` of one, the labels ``y''`` of the other (each of ``replay_batch_size``
examples). ``beta = 0`` is DER, ``beta > 0`` DER++. As in the paper's code, the memory is
replayed whenever it holds examples (from the first task's second step on), and after every
step the batch is offered to the reservoir (:mod:`cl_bayes.memory`) with the logits of that
step's forward pass (detached, before the update), over the outputs active then: in the task
scenario those of the example's own head. All three batches go through the network in one
forward pass, each example answered by its own head; an entry drawn into both memory batches
goes through once, its scores serving both terms (the same loss and gradient on fewer rows;
with dropout in the network, such an entry gets one dropout mask where it used to get two).

In the class scenario an example stored during an earlier task has logits only for the
classes seen then; the MSE compares those outputs only (the mean over stored outputs), and
the outputs added since are left free. Mammoth, the paper's code, stores every output of
its single full-size head, untrained ones included, and pulls all of them towards the
stored values.

Kept between tasks: the memory, as index tensors into the tasks' training sets with the
stored logits, and its counters.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cl_bayes.data import LabelledData
from cl_bayes.errors import ConfigError
from cl_bayes.memory import EpisodicMemory, check_positive
from cl_bayes.methods.base import Method, logits


def masked_mse(scores: Tensor, stored: Tensor, n_stored: Tensor) -> Tensor:
    """Mean squared difference over the stored outputs only.

    ``scores`` ``(k, outputs)``; ``stored`` ``(k, width)``, of which row ``i`` holds
    ``n_stored[i]`` logits (the rest is padding); the first ``min(outputs, width)`` columns
    are compared. With every output stored it is ``F.mse_loss(scores, stored)``.
    """
    width = min(scores.shape[1], stored.shape[1])
    mask = torch.arange(width, device=scores.device) < n_stored[:, None]
    squared = (scores[:, :width] - stored[:, :width]).square() * mask
    return squared.sum() / mask.sum().clamp_min(1)


class DER(Method):
    """Dark Experience Replay (``beta = 0``) and DER++ (``beta > 0``).

    Parameters
    ----------
    memory_size
        Examples held in the reservoir memory in total.
    replay_batch_size
        Examples in each of the two memory batches; ``None``: as many as the batch holds.
    alpha
        Weight of the logit-matching MSE term (α in Buzzega et al. 2020).
    beta
        Weight of the memory's cross-entropy term (β; 0 gives DER).
    """

    # Not capturable: as ER, the memory grows during the task and its batches are drawn and
    # grouped on the host; stored logits are written after every step.
    capturable_step = False

    def __init__(
        self,
        memory_size: int = 500,
        replay_batch_size: int | None = 128,
        alpha: float = 0.5,
        beta: float = 0.5,
    ):
        check_positive("memory_size", memory_size)
        if replay_batch_size is not None:
            check_positive("replay_batch_size", replay_batch_size)
        for key, value in (("alpha", alpha), ("beta", beta)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"method.{key} must be a number >= 0, got {value!r}.")
        self.memory_size, self.replay_batch_size = memory_size, replay_batch_size
        self.alpha, self.beta = float(alpha), float(beta)
        self.memory = EpisodicMemory(memory_size, "reservoir")
        self._seen: Sequence[LabelledData] = ()
        self._task = 0

    def training_data(self, task_id: int, seen: Sequence[LabelledData]) -> LabelledData:
        """Task ``task_id``'s training set; the tasks in ``seen`` are what the memory indexes."""
        self._seen, self._task = seen, task_id
        self.memory.to(seen[task_id].y.device)
        return seen[task_id]

    def loss(self, model: nn.Module, batch: LabelledData) -> Tensor:
        """``CE(current) + alpha * MSE(memory logits) + beta * CE(memory labels)``."""
        return self.loss_and_logits(model, batch)[0]

    def loss_and_logits(self, model: nn.Module, batch: LabelledData) -> tuple[Tensor, Tensor]:
        """The loss on ``batch`` (with inputs) and the batch's logits ``(batch, n_outputs)``."""
        if not len(self.memory) or not (self.alpha or self.beta):
            scores = logits(model, batch)
            return F.cross_entropy(scores, batch.y), scores
        size = self.replay_batch_size or len(batch)
        distil = self.memory.sample(size) if self.alpha else batch.y[:0]
        labelled = self.memory.sample(size) if self.beta else batch.y[:0]
        # Both memory batches join the current one in a single forward pass, each entry once:
        # two batches of 128 from a memory of 500 share 33 entries on average, of 200, 82.
        positions = torch.cat([distil, labelled])
        if self.alpha and self.beta:
            drawn, where = self.memory.distinct(positions)
        else:  # one memory batch (DER, or beta only): its entries are distinct already
            drawn, where = positions, torch.arange(len(positions), device=positions.device)
        joined = self.memory.batch(drawn, self._seen, batch.n_outputs, first=batch)
        scores = logits(model, joined)
        current, replayed = scores[: len(batch)], scores[len(batch) :][where]
        value = F.cross_entropy(current, batch.y)
        if self.alpha:
            stored, n_stored = self.memory.stored_logits(distil)
            value = value + self.alpha * masked_mse(replayed[: len(distil)], stored, n_stored)
        if self.beta:
            targets = joined.y[len(batch) :][where[len(distil) :]]
            value = value + self.beta * F.cross_entropy(replayed[len(distil) :], targets)
        return value, current

    def train_step(
        self, model: nn.Module, batch: LabelledData, optimizer: torch.optim.Optimizer
    ) -> Tensor:
        """One step; the batch is then offered to the memory with this step's logits.

        A batch whose examples' positions are unknown (``batch.index`` is ``None``) is
        trained on but not stored.
        """
        index = batch.index
        value, scores = self.loss_and_logits(model, batch)
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()
        if index is not None:
            self.memory.add(self._task, index, batch, logits=scores.detach())
        return value.detach()

    def state_dict(self) -> dict[str, Any]:
        """The memory's entries, stored logits and counters."""
        return {"memory": self.memory.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.memory.load_state_dict(state["memory"])
