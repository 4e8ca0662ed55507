"""Learning without Forgetting (Li & Hoiem, "Learning without Forgetting", ECCV 2016; TPAMI 2017).

Before each task after the first, the network is copied (a frozen snapshot in eval mode);
while the task trains, each batch's loss is the cross-entropy on the current task's labels
plus a knowledge-distillation term that keeps the network's outputs on the **current
inputs** close to the snapshot's::

    loss = CE(current outputs, y) + alpha * T**2 * mean_j KL(softmax(s_j / T) || softmax(z_j / T))

with ``s_j`` the snapshot's logits and ``z_j`` the network's logits of old head ``j`` on the
batch, ``T`` the temperature and ``alpha`` the distillation weight. Which outputs are
distilled depends on the scenario:

- task-incremental: every previous task's head (the snapshot's head ``j`` against the
  network's head ``j``), the KL **averaged over those heads**, so ``alpha`` keeps its meaning
  as tasks accumulate; the current task's head is trained on its labels only;
- domain-incremental: the shared head, which is also the one trained by the cross-entropy;
- class-incremental: the outputs of the classes seen before the current task (the
  snapshot's active outputs), while the cross-entropy runs over all active outputs.

The paper's loss ``L_old`` is the cross-entropy between the snapshot's and the network's
probabilities raised to ``1/T`` and renormalised, i.e. ``softmax(logits / T)``. The KL used
here differs from it by the snapshot's entropy, a constant during the task: the gradients
are the same, and the term is exactly 0 when the network equals its snapshot. The ``T**2``
factor (Hinton et al. 2015) keeps the gradient's scale independent of ``T``; the paper's
``lambda_o`` is ``alpha * T**2`` (``alpha = 1 / T**2`` gives its ``lambda_o = 1``). The paper's
warm-up (training the new head alone before all weights) and weight decay are not used. The
paper records the old network's responses on the task's images once before training; here
the snapshot answers each batch (one extra forward pass, no backward), which gives the same
targets for a network without stochastic layers and needs no index into the task's data.

Kept between tasks: the number of outputs trained so far on each head (which heads, and in
class-incremental which outputs, the snapshot distils). The snapshot itself is not kept: it
is rebuilt from the network at the start of every task and released at its end, so a run
resumed from a checkpoint (which holds the network's state at that task's start) distils
exactly the same snapshot.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cl_bayes.data import LabelledData
from cl_bayes.errors import ConfigError
from cl_bayes.methods.base import Method
from cl_bayes.models.mlp import MLP, route_heads


class LwF(Method):
    """Learning without Forgetting: distil the snapshot taken before each task.

    Parameters
    ----------
    distillation_weight
        Weight of the distillation term, ``alpha``; the paper's loss balance ``lambda_o``
        (Li & Hoiem 2017) is ``alpha * T**2``.
    temperature
        Softening temperature ``T`` of both the snapshot's and the network's outputs (2 in
        Li & Hoiem 2017).
    """

    # Cross-entropy plus distillation from a snapshot fixed for the task (taken in
    # before_task, before the task's capture); branches only on that task-long state.
    capturable_step = True

    def __init__(self, distillation_weight: float = 1.0, temperature: float = 2.0):
        if not _is_number(distillation_weight) or distillation_weight < 0:
            raise ConfigError(
                f"method.distillation_weight must be a number >= 0, got {distillation_weight!r}."
            )
        if not _is_number(temperature) or temperature <= 0:
            raise ConfigError(f"method.temperature must be a number > 0, got {temperature!r}.")
        self.distillation_weight = float(distillation_weight)
        self.temperature = float(temperature)
        # head index -> number of its outputs trained so far (tasks before the current one).
        self.trained_outputs: dict[int, int] = {}
        self.snapshot: nn.Module | None = None

    def before_task(self, model: nn.Module, task_id: int, data: LabelledData) -> None:
        """From the second task on, take a frozen snapshot of ``model`` (eval mode)."""
        self.snapshot = None
        if not self.trained_outputs:
            return
        snapshot = copy.deepcopy(model)
        snapshot.eval()
        snapshot.requires_grad_(False)
        self.snapshot = snapshot

    def loss(self, model: nn.Module, batch: LabelledData) -> Tensor:
        """Cross-entropy on ``batch`` plus ``alpha * T**2`` times the distillation term."""
        if self.snapshot is None or not self.distillation_weight:
            return super().loss(model, batch)
        heads = sorted(self.trained_outputs)
        current, old = head_logits(model, batch.x, batch.head, heads)
        with torch.no_grad():
            _, targets = head_logits(self.snapshot, batch.x, None, heads)
        sizes = [self.trained_outputs[h] for h in heads]
        distillation = self.distillation(
            [z[:, :k] for z, k in zip(old, sizes, strict=True)],
            [s[:, :k] for s, k in zip(targets, sizes, strict=True)],
        )
        return (
            F.cross_entropy(current[:, : batch.n_outputs], batch.y)
            + self.distillation_weight * distillation
        )

    def distillation(self, logits: list[Tensor], snapshot_logits: list[Tensor]) -> Tensor:
        """``T**2`` times the KL from the snapshot's softened outputs, averaged over heads.

        ``logits[j]`` and ``snapshot_logits[j]`` have shape ``(batch, outputs_j)`` (the old
        head ``j``'s distilled outputs); the KL is averaged over the batch, then over heads.
        """
        T = self.temperature
        total = sum(
            F.kl_div(
                (z / T).log_softmax(dim=-1),
                (s / T).log_softmax(dim=-1),
                reduction="batchmean",
                log_target=True,
            )
            for z, s in zip(logits, snapshot_logits, strict=True)
        )
        return T**2 * total / len(logits)

    def after_task(self, model: nn.Module, task_id: int, data: LabelledData) -> None:
        """Record the outputs the task trained on each of its heads; release the snapshot."""
        heads = [data.head] if isinstance(data.head, int) else data.head.unique().tolist()
        for head in heads:
            self.trained_outputs[head] = max(self.trained_outputs.get(head, 0), data.n_outputs)
        self.snapshot = None

    def state_dict(self) -> dict[str, Any]:
        """The outputs trained on each head, as ``{"heads": [...], "outputs": [...]}``."""
        heads = sorted(self.trained_outputs)
        return {"heads": heads, "outputs": [self.trained_outputs[h] for h in heads]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.trained_outputs = dict(zip(state["heads"], state["outputs"], strict=True))
        self.snapshot = None


def head_logits(
    model: nn.Module, x: Tensor, head: int | Tensor | None, heads: list[int]
) -> tuple[Tensor | None, list[Tensor]]:
    """Logits of ``x`` from its own ``head`` and from each of ``heads``, in one body pass.

    Returns ``(current, old)``: ``current`` of shape ``(batch, outputs)`` from ``head`` (one
    index, or one per example; ``None`` skips it), and ``old[k]`` of shape
    ``(batch, outputs)`` from head ``heads[k]``. An :class:`MLP` runs its body once for all
    of them; another network runs once per head, reusing ``current`` for its own head.
    """
    if isinstance(model, MLP):
        features = model.body(x)

        def run_head(index: int | Tensor) -> Tensor:
            return route_heads(model.heads, features, index)
    else:

        def run_head(index: int | Tensor) -> Tensor:
            return model(x, index)

    current = None if head is None else run_head(head)
    old = [current if isinstance(head, int) and h == head else run_head(h) for h in heads]
    return current, old


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
