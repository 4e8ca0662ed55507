"""Continual-learning metrics: pure functions over the accuracy matrix.

Convention (used everywhere in cl_bayes): ``R`` is a ``(T, T)`` array with
``R[i, j]`` = test accuracy (a fraction in [0, 1]) on task ``j`` after training through
task ``i``, tasks numbered from 0. Only the lower triangle (``j <= i``) is needed for ACC,
BWT and forgetting; ``R[j - 1, j]`` (just above the diagonal) is needed for FWT.
Undefined values (a single task, FWT with untrained heads) are returned as ``nan``.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

ArrayLike = Sequence[Sequence[float]] | np.ndarray


def _matrix(R: ArrayLike) -> np.ndarray:
    R = np.asarray(R, dtype=float)
    if R.ndim != 2 or R.shape[0] != R.shape[1]:
        raise ValueError(f"the accuracy matrix must be square (T, T), got shape {R.shape}")
    return R


def average_accuracy(R: ArrayLike) -> np.ndarray:
    """Average accuracy after each task: ``a_i = mean(R[i, 0..i])``; shape ``(T,)``."""
    R = _matrix(R)
    return np.array([R[i, : i + 1].mean() for i in range(len(R))])


def acc(R: ArrayLike) -> float:
    """ACC: mean accuracy over all tasks after the last one, ``mean(R[T-1, :])``."""
    return float(_matrix(R)[-1].mean())


def bwt(R: ArrayLike) -> float:
    """Backward transfer (Lopez-Paz & Ranzato 2017); negative values mean forgetting.

    ``BWT = 1/(T-1) * sum_{j < T-1} (R[T-1, j] - R[j, j])``. (The GEM code divides by T.)
    """
    R = _matrix(R)
    T = len(R)
    if T < 2:
        return math.nan
    return float(np.mean([R[T - 1, j] - R[j, j] for j in range(T - 1)]))


def fwt(R: ArrayLike, baseline: Sequence[float]) -> float:
    """Forward transfer (Lopez-Paz & Ranzato 2017).

    ``FWT = 1/(T-1) * sum_{j > 0} (R[j-1, j] - b_j)`` with ``b_j`` the accuracy of the
    untrained model on task ``j``. Only meaningful when task ``j``'s outputs exist and are
    shared before task ``j`` is trained (domain-incremental); the caller decides that.
    """
    R = _matrix(R)
    T = len(R)
    if T < 2:
        return math.nan
    return float(np.mean([R[j - 1, j] - baseline[j] for j in range(1, T)]))


def forgetting(R: ArrayLike) -> float:
    """Average forgetting (Chaudhry et al. 2018).

    ``f_j = max_{l < T-1} R[l, j] - R[T-1, j]`` for ``j < T-1``, averaged over ``j``
    (the maximum runs over ``l >= j``: task ``j`` is unseen before ``l = j``).
    """
    R = _matrix(R)
    T = len(R)
    if T < 2:
        return math.nan
    return float(np.mean([R[j : T - 1, j].max() - R[T - 1, j] for j in range(T - 1)]))


def intransigence(R: ArrayLike, joint_R: ArrayLike) -> float:
    """Average intransigence (Chaudhry et al. 2018): ``I_j = a*_j - R[j, j]``, mean over j.

    ``a*_j = joint_R[j, j]``: the joint model trained on tasks ``0 .. j``, tested on task ``j``
    (row ``j`` of a ``method=joint`` run of the same task sequence and scenario).
    """
    R, joint_R = _matrix(R), _matrix(joint_R)
    if R.shape != joint_R.shape:
        raise ValueError(f"matrices differ in shape: {R.shape} vs {joint_R.shape}")
    return float(np.mean(np.diag(joint_R) - np.diag(R)))
