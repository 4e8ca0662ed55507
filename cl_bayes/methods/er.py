"""ER: Experience Replay from a tiny episodic memory.

Chaudhry, Rohrbach, Elhoseiny, Ajanthan, Dokania, Torr & Ranzato, "On Tiny Episodic Memories
in Continual Learning", arXiv:1902.10486, 2019.

A small episodic memory of ``memory_size`` training examples in total is replayed in every
step from the second task on: a batch of ``replay_batch_size`` examples drawn uniformly from
the memory is concatenated with the current batch, and the loss is the mean cross-entropy
over the concatenated batch (the paper's single step on the joint batch). Each replayed
example is answered by its own task's head with its own scenario target; in the class
scenario its outputs are the current task's (every class seen so far).

The memory is updated after every step, as in the paper: with ``memory_policy=reservoir``,
by reservoir sampling over the stream of training examples (every epoch offers its examples
again, so an example may hold two slots); with ``class_balanced``, by equal quotas over the
classes seen so far, each a reservoir of its own (see :mod:`cl_bayes.memory`). Replay starts
with the second task, but the memory holds the current task's examples too.

Kept between tasks: the memory, as index tensors into the tasks' training sets (never copies
of the inputs), and its counters.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cl_bayes.data import LabelledData
from cl_bayes.errors import ConfigError
from cl_bayes.memory import POLICIES, EpisodicMemory, check_positive
from cl_bayes.methods.base import Method, logits
from cl_bayes.training import plain_step


class ER(Method):
    """Experience replay from a bounded episodic memory.

    Parameters
    ----------
    memory_size
        Examples held in the memory in total (|M| in Chaudhry et al. 2019).
    replay_batch_size
        Memory examples replayed with each batch; ``None``: as many as the batch holds.
    memory_policy
        ``reservoir`` (the paper's) or ``class_balanced`` (equal slots per class seen).
    """

    # Not capturable: the memory grows during the task, and replay batches are drawn and
    # grouped by task on the host (memory.batch reads their tasks with .tolist()).
    capturable_step = False

    def __init__(
        self,
        memory_size: int = 500,
        replay_batch_size: int | None = 128,
        memory_policy: str = "reservoir",
    ):
        check_positive("memory_size", memory_size)
        if replay_batch_size is not None:
            check_positive("replay_batch_size", replay_batch_size)
        if memory_policy not in POLICIES:
            raise ConfigError(
                f"method.memory_policy must be one of {', '.join(POLICIES)}, got {memory_policy!r}."
            )
        self.memory_size, self.replay_batch_size = memory_size, replay_batch_size
        self.memory = EpisodicMemory(memory_size, memory_policy)
        self._seen: Sequence[LabelledData] = ()
        self._task = 0

    def training_data(self, task_id: int, seen: Sequence[LabelledData]) -> LabelledData:
        """Task ``task_id``'s training set; the tasks in ``seen`` are what the memory indexes."""
        self._seen, self._task = seen, task_id
        self.memory.to(seen[task_id].y.device)
        return seen[task_id]

    def loss(self, model: nn.Module, batch: LabelledData) -> Tensor:
        """Mean cross-entropy over the batch and, from the second task on, a replay batch."""
        if self._task > 0 and len(self.memory):
            size = self.replay_batch_size or len(batch)
            positions = self.memory.sample(size)
            batch = self.memory.batch(positions, self._seen, batch.n_outputs, first=batch)
        return F.cross_entropy(logits(model, batch), batch.y)

    def train_step(
        self, model: nn.Module, batch: LabelledData, optimizer: torch.optim.Optimizer
    ) -> Tensor:
        """One step on the batch with replay, then the batch is offered to the memory.

        A batch whose examples' positions are unknown (``batch.index`` is ``None``) is
        trained on but not stored.
        """
        index = batch.index
        value = plain_step(self.loss, model, batch, optimizer)
        if index is not None:
            self.memory.add(self._task, index, batch)
        return value

    def state_dict(self) -> dict[str, Any]:
        """The memory's entries and counters."""
        return {"memory": self.memory.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.memory.load_state_dict(state["memory"])
