"""Coreset selection (Nguyen et al. 2018, section 4): small per-task memories, as indices."""

from __future__ import annotations

import torch
from torch import Tensor


def random_coreset(n: int, size: int, device: torch.device | None = None) -> Tensor:
    """``size`` distinct indices of ``range(n)`` drawn uniformly (torch's global RNG)."""
    return torch.randperm(n, device=device)[:size].sort().values


def k_center_coreset(x: Tensor, size: int) -> Tensor:
    """Greedy k-center: start from example 0, then repeatedly add the farthest example.

    Distances are Euclidean in input space (``x`` is ``(n, ...)``, flattened). Deterministic;
    returns the ``size`` chosen indices in the order they were picked.
    """
    points = x.flatten(1)
    size = min(size, len(points))
    chosen = torch.empty(size, dtype=torch.long, device=x.device)
    distance = torch.full((len(points),), float("inf"), device=x.device)
    current = 0
    for i in range(size):
        chosen[i] = current
        distance = torch.minimum(distance, (points - points[current]).norm(dim=1))
        current = int(distance.argmax())
    return chosen
