"""The epoch loop shared by every training phase (a task, VCL's ML start, coreset tuning).

The loop draws the batches and calls a step function; what one step does (the loss, the
gradients, the optimiser) belongs to the method (``Method.train_step``). The loop imports no
method. On a GPU the step may be replayed from a CUDA graph instead (``cuda_graph``; see
:mod:`cl_bayes.cuda_graphs`), on the same batches.
"""

from __future__ import annotations

import itertools
import math
from typing import Callable

import torch
from tqdm.auto import tqdm

from cl_bayes.cuda_graphs import CapturedStep
from cl_bayes.data import LabelledData
from cl_bayes.errors import TrainingDiverged

LossFunction = Callable[[torch.nn.Module, LabelledData], torch.Tensor]
StepFunction = Callable[[torch.nn.Module, LabelledData, torch.optim.Optimizer], torch.Tensor]

# An epoch loss this many times above the first batch's loss (or above 1, if that is larger)
# is an explosion, not learning: with `optimizer.lr=1e6` the loss of a finetune run reaches
# 1e14 while its accuracy drops to chance. Treated like a NaN loss.
EXPLOSION_FACTOR = 1e6


def plain_step(
    loss: LossFunction,
    model: torch.nn.Module,
    batch: LabelledData,
    optimizer: torch.optim.Optimizer,
) -> torch.Tensor:
    """One gradient step on ``loss(model, batch)``: zero_grad, backward, step; the detached loss."""
    value = loss(model, batch)
    optimizer.zero_grad(set_to_none=True)
    value.backward()
    optimizer.step()
    return value.detach()


def fit(
    model: torch.nn.Module,
    data: LabelledData,
    step: StepFunction,
    optimizer: torch.optim.Optimizer,
    epochs: int,
    batch_size: int | None,
    label: str,
    progress: bool = True,
    on_epoch: Callable[[int, float], None] | None = None,
    steps: int | None = None,
    cuda_graph: bool = False,
) -> list[float]:
    """Run ``step(model, batch, optimizer)`` over ``epochs`` passes of ``data``; epoch losses.

    Minibatches are drawn by indexing the in-memory tensors with a fresh random permutation
    every epoch; ``batch_size=None`` (or one at least the data size) takes the whole data
    as one batch. With ``steps``, training takes exactly that many steps instead of
    ``epochs`` passes (as protocols counted in iterations ask): as many passes as needed, the
    last one cut short. ``step`` returns the batch's detached scalar loss; the epoch loss is
    the example-weighted mean of the batch losses (of the steps taken, in a cut pass). A NaN
    or infinite epoch loss, or one :data:`EXPLOSION_FACTOR` times the first batch's (or 1, if
    larger), stops training with :class:`TrainingDiverged` naming ``label`` and the epoch.
    ``on_epoch(epoch, loss)``, when given, is called after every epoch (counted from 0).
    With ``cuda_graph``, the step is captured and replayed from a CUDA graph
    (:class:`~cl_bayes.cuda_graphs.CapturedStep`) on the same batches; the caller has checked
    that the step, the data, the device and the optimiser allow it
    (:func:`~cl_bayes.cuda_graphs.use_cuda_graphs`, :func:`~cl_bayes.cuda_graphs.replayable`).
    """
    n = len(data)
    batch_size = min(batch_size or n, n)
    device = data.y.device
    per_epoch = math.ceil(n / batch_size)
    if steps is not None:
        epochs = math.ceil(steps / per_epoch)
    left = steps if steps is not None else epochs * per_epoch

    def eager_step(positions: torch.Tensor | None) -> torch.Tensor:
        return step(model, data if positions is None else data.subset(positions), optimizer)

    take_step = CapturedStep(step, model, optimizer, data, batch_size) if cuda_graph else eager_step
    model.train()
    history = []
    first_loss: float | None = None
    bar = tqdm(range(epochs), desc=label, disable=not progress, leave=False)
    for epoch in bar:
        total = torch.zeros((), device=device)
        seen = 0
        # Each batch as its positions in ``data``; None: all of it.
        if batch_size >= n:
            batches = [None]
        else:
            batches = torch.randperm(n, device=device).split(batch_size)
        for positions in itertools.islice(batches, min(left, per_epoch)):
            value = take_step(positions)
            if first_loss is None:
                first_loss = value.item()  # one device sync, once per training phase
            size = n if positions is None else len(positions)
            total += value * size
            seen += size
        left -= per_epoch
        epoch_loss = (total / seen).item()  # one device sync per epoch
        _check_loss(epoch_loss, first_loss, label, epoch)
        bar.set_postfix(loss=f"{epoch_loss:.4f}")
        history.append(epoch_loss)
        if on_epoch is not None:
            on_epoch(epoch, epoch_loss)
    bar.close()
    return history


def _check_loss(epoch_loss: float, first_loss: float | None, label: str, epoch: int) -> None:
    if not math.isfinite(epoch_loss):
        raise TrainingDiverged(
            f"Training loss became {epoch_loss} in {label}, epoch {epoch + 1}: "
            f"try a lower optimizer.lr."
        )
    reference = max(abs(first_loss or 0.0), 1.0)
    if epoch_loss > EXPLOSION_FACTOR * reference:
        raise TrainingDiverged(
            f"Training loss exploded to {epoch_loss:.3g} in {label}, epoch {epoch + 1} "
            f"(the first batch's was {first_loss:.3g}): try a lower optimizer.lr."
        )
