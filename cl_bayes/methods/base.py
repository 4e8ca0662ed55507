"""The small interface every continual-learning method implements.

For each task ``t`` the loop in ``cl_bayes.run`` calls::

    data = method.training_data(t, train_sets[: t + 1])  # what to train on (default: task t's)
    method.before_task(model, t, data)
    for batch in batches(data):                         # shuffled minibatches drawn by index
        method.train_step(model, batch, optimizer)      # default: loss, zero_grad, backward, step
    method.after_task(model, t, data)                   # e.g. Fisher, posterior -> prior

logs ``method.epoch_metrics(model)`` beside each epoch's loss, and evaluates with
``method.predict(model, data)``: log-probabilities ``(batch, n_outputs)`` (``data.y`` unused),
whose argmax is the prediction (``samples=True``: one row of them per Monte Carlo sample).
``training_data`` sees the tasks trained so far and never a later one. Whatever a method
keeps between tasks (anchors, Fisher information, memories, priors) lives on the method and
goes through ``state_dict`` / ``load_state_dict`` so that checkpoints restore it exactly;
state held as buffers of the model needs nothing more.

Which hooks a method overrides (the rest keep the defaults below):

==========  ===============  ===========  ===========  ==============  ===============  ========
method      training_data    before_task  loss         train_step      after_task       predict
==========  ===============  ===========  ===========  ==============  ===============  ========
EWC         .                .            + penalty    + penalty grad  Fisher           .
SI          .                .            + penalty    observes step   importance ω     .
LwF         .                snapshot     + distil     .               .                .
ER          keeps ``seen``   .            + replay     stores batch    .                .
A-GEM       keeps ``seen``   .            .            projects grad   update memory    .
DER++       keeps ``seen``   .            + replay     stores logits   .                .
VCL         coreset out      new heads    neg ELBO     .               posterior→prior  MC mean
MC dropout  .                .            .            .               .                MC mean
==========  ===============  ===========  ===========  ==============  ===============  ========

(EWC: the diagonal Fisher at the task's end, and the quadratic penalty's gradient added in
closed form between backward and step, which ``loss`` also states for autograd; SI: the path
integral ω of every step's gradient times parameter change; LwF: distillation towards the
model snapshot taken before the task; ER: a batch of its memory (positions in the tasks in
``seen``, from ``batch.index``) mixed into each step's loss, and each batch offered to the
memory after its step; A-GEM: the gradient projected against the memory's reference gradient
between backward and step; DER++: as ER, with the logits of each stored batch kept and
distilled; VCL: the posterior becomes the next prior, and prediction averages the softmax
over weight samples; MC dropout: dropout stays on at prediction, and the softmax is averaged
over dropout masks.)

``capturable_step`` (a class attribute, False by default) declares that :meth:`train_step`
may be captured once in a CUDA graph and replayed at every later step of the task
(``train.cuda_graphs``, :mod:`cl_bayes.cuda_graphs`). A replay repeats the captured kernels
and nothing else, so True is honest only for a step that never waits for the device (no
``.item()``, ``.tolist()``, ``nonzero()``, no CPU tensor copied to the device), takes no
Python branch on a tensor's value, makes tensors of the same shapes at every step, and
changes no Python state from step to step within a task (state fixed for the task, such as
LwF's snapshot, is fine: each task is captured afresh). Random numbers are fine when drawn
from torch's default CUDA generator, which every replay advances. The default step
(cross-entropy, zero_grad, backward, step) qualifies: ``Finetune`` and ``Joint`` declare
True, as LwF, MC dropout, VCL and the quadratic penalties (EWC, online EWC, SI, MAS, L2) do;
the loop replays only batches answered by one head. A method that is not sure keeps False
and trains eagerly: ER, A-GEM and DER++ do, each saying why in its own file. A method that
trains phases of its own (VCL's maximum-likelihood start and coreset tuning) replays them
from graphs where ``cuda_graph`` is True: the run sets it, once, to whether its own training
steps are replayed.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cl_bayes.data import LabelledData
from cl_bayes.training import plain_step


def logits(model: nn.Module, batch: LabelledData) -> Tensor:
    """The model's scores over the active outputs, shape ``(batch, n_outputs)``."""
    return model(batch.x, batch.head)[:, : batch.n_outputs]


class Method:
    """Base class: plain training on the current task's data with cross-entropy.

    Attributes
    ----------
    capturable_step
        Whether :meth:`train_step` may be captured in a CUDA graph and replayed (see the
        module's docstring for what that asks of a step). False unless a method declares it.
    cuda_graph
        Whether this run replays the training steps from CUDA graphs (set by the run from
        ``train.cuda_graphs``, the device and :attr:`capturable_step`); a method's own
        training phases follow it.
    restarts_model
        Whether :meth:`before_task` re-initialises trained parameters (joint training; VCL
        with ``start_from=fresh``): such a method cannot share one optimiser's state across
        tasks (``train.reset_optimizer=false``).
    """

    capturable_step: bool = False
    cuda_graph: bool = False
    restarts_model: bool = False

    def training_data(self, task_id: int, seen: Sequence[LabelledData]) -> LabelledData:
        """The data to train on for task ``task_id``.

        ``seen[j]`` is task ``j``'s training set, for the tasks trained so far and the current
        one (``j = 0 .. task_id``); later tasks are never passed.
        """
        return seen[task_id]

    def before_task(self, model: nn.Module, task_id: int, data: LabelledData) -> None:
        """Prepare for training on task ``task_id``."""

    def loss(self, model: nn.Module, batch: LabelledData) -> Tensor:
        """Scalar loss to minimise on ``batch``."""
        return F.cross_entropy(logits(model, batch), batch.y)

    def train_step(
        self, model: nn.Module, batch: LabelledData, optimizer: torch.optim.Optimizer
    ) -> Tensor:
        """One optimisation step on ``batch``; returns the detached loss.

        The default is :func:`~cl_bayes.training.plain_step` on :meth:`loss`: zero_grad,
        backward, step. Override it to touch the gradients between backward and step
        (A-GEM) or to observe each step (SI).
        """
        return plain_step(self.loss, model, batch, optimizer)

    def after_task(self, model: nn.Module, task_id: int, data: LabelledData) -> None:
        """Consolidate what was learnt on task ``task_id``."""

    @torch.no_grad()
    def predict(self, model: nn.Module, data: LabelledData, samples: bool = False) -> Tensor:
        """Log-probabilities ``(batch, n_outputs)`` over the active outputs.

        Each row's log-sum-exp is 0; the argmax is the prediction. With ``samples=True``,
        the log-probabilities of each Monte Carlo sample, ``(n_samples, batch, n_outputs)``,
        whose probabilities averaged over the first dimension are the predictive (what the
        epistemic part of the uncertainty is computed from); a deterministic method has
        one sample.
        """
        log_probabilities = logits(model, data).log_softmax(dim=-1)
        return log_probabilities.unsqueeze(0) if samples else log_probabilities

    def epoch_metrics(self, model: nn.Module) -> dict[str, float]:
        """Numbers logged beside each epoch's loss (none by default; VCL: its KL term)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """What the method keeps between tasks, for checkpoints."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
