"""The epoch loop shared by every training phase (a task, VCL's ML start, coreset tuning)."""

from __future__ import annotations

import math
from typing import Callable

import torch
from tqdm.auto import tqdm

from cl_bayes.errors import TrainingDiverged
from cl_bayes.methods.base import LabelledData

LossFunction = Callable[[torch.nn.Module, LabelledData], torch.Tensor]


def fit(
    model: torch.nn.Module,
    data: LabelledData,
    loss: LossFunction,
    optimizer: torch.optim.Optimizer,
    epochs: int,
    batch_size: int | None,
    label: str,
    progress: bool = True,
    on_epoch: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Minimise ``loss(model, batch)`` over ``epochs`` passes of ``data``; returns epoch losses.

    Minibatches are drawn by indexing the in-memory tensors with a fresh random permutation
    every epoch; ``batch_size=None`` (or one at least the data size) takes the whole data
    as one batch. The epoch loss is the example-weighted mean of the batch losses; a NaN or
    infinite one stops training with :class:`TrainingDiverged` naming ``label`` and the epoch.
    ``on_epoch(epoch, loss)``, when given, is called after every epoch (counted from 0).
    """
    n = len(data)
    batch_size = min(batch_size or n, n)
    device = data.y.device
    model.train()
    history = []
    bar = tqdm(range(epochs), desc=label, disable=not progress, leave=False)
    for epoch in bar:
        total = torch.zeros((), device=device)
        if batch_size >= n:
            batches = [data]
        else:
            order = torch.randperm(n, device=device)
            batches = (data.subset(index) for index in order.split(batch_size))
        for batch in batches:
            value = loss(model, batch)
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
            total += value.detach() * len(batch)
        epoch_loss = (total / n).item()  # one device sync per epoch
        if not math.isfinite(epoch_loss):
            raise TrainingDiverged(
                f"Training loss became {epoch_loss} in {label}, epoch {epoch + 1}: "
                f"try a lower optimizer.lr."
            )
        bar.set_postfix(loss=f"{epoch_loss:.4f}")
        history.append(epoch_loss)
        if on_epoch is not None:
            on_epoch(epoch, epoch_loss)
    bar.close()
    return history
