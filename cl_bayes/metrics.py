"""Continual-learning metrics: pure functions over the accuracy matrix, and calibration.

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
import torch
from torch import Tensor

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


def seen_task_means(M: ArrayLike) -> np.ndarray:
    """Mean of each row's seen tasks, ``mean(M[i, 0..i])``, for any matrix laid out as R.

    Shape ``(T,)``; ``nan`` for a row whose seen entries were not measured.
    """
    M = _matrix(M)
    rows = [M[i, : i + 1] for i in range(len(M))]
    return np.array([np.nan if np.isnan(r).any() else r.mean() for r in rows])


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


# Calibration and predictive uncertainty: pure functions of a method's predictions.
# ``probabilities`` is ``(batch, classes)`` (rows sum to 1), ``labels`` is ``(batch,)``;
# ``sample_log_probabilities`` is ``(samples, batch, classes)``, one row per Monte Carlo
# sample (a deterministic method has one). Natural logarithms throughout (entropies in nats).

ECE_BINS = 15  # Guo et al. (2017); torchmetrics' MulticlassCalibrationError default


def negative_log_likelihood(log_probabilities: Tensor, labels: Tensor) -> float:
    """NLL: mean over examples of ``-log p_y`` (``log_probabilities`` ``(batch, classes)``)."""
    return -log_probabilities.gather(1, labels[:, None]).mean().item()


def brier_score(probabilities: Tensor, labels: Tensor) -> float:
    """Multiclass Brier score: mean over examples of ``sum_k (p_k - y_k)^2`` (0 to 2)."""
    one_hot = torch.nn.functional.one_hot(labels, probabilities.shape[1]).to(probabilities.dtype)
    return ((probabilities - one_hot) ** 2).sum(dim=1).mean().item()


def reliability_bins(
    probabilities: Tensor, labels: Tensor, n_bins: int = ECE_BINS
) -> dict[str, list[float]]:
    """Top-label confidence histogram over ``n_bins`` equal-width bins of [0, 1].

    Per bin: the examples' ``count``, their ``confidence`` sum and their ``correct`` sum
    (the number of right predictions).

    Bin edges follow torchmetrics' ``MulticlassCalibrationError``: left-closed bins
    ``[k / n, (k + 1) / n)``, with a confidence of exactly 1 in the last bin (Guo et al.'s
    code closes bins on the right instead; the two differ only for confidences on an edge).
    Sums, not means, so that bins of several tasks, rows or seeds pool by addition.
    """
    confidence, predicted = probabilities.max(dim=1)
    correct = (predicted == labels).to(probabilities.dtype)
    bin_index = (confidence * n_bins).long().clamp(max=n_bins - 1)
    count = torch.bincount(bin_index, minlength=n_bins).to(probabilities.dtype)
    confidence_sum = torch.bincount(bin_index, weights=confidence, minlength=n_bins)
    correct_sum = torch.bincount(bin_index, weights=correct, minlength=n_bins)
    return {
        "count": count.tolist(),
        "confidence": confidence_sum.tolist(),
        "correct": correct_sum.tolist(),
    }


def expected_calibration_error(bins: dict[str, Sequence[float]]) -> float:
    """ECE (Guo et al. 2017), L1, top label: ``sum_b (n_b / n) |acc_b - conf_b|``.

    From :func:`reliability_bins` (of one task, or pooled by adding bins); ``nan`` when the
    bins hold no example.
    """
    count = np.asarray(bins["count"], dtype=float)
    if count.sum() == 0:
        return math.nan
    gap = np.abs(np.asarray(bins["correct"], dtype=float) - np.asarray(bins["confidence"]))
    return float(gap.sum() / count.sum())


def pool_bins(bins: Sequence[dict[str, Sequence[float]]]) -> dict[str, list[float]]:
    """Bins of several evaluations added together (tasks of a row, seeds of a group)."""
    return {
        key: np.sum([np.asarray(b[key], dtype=float) for b in bins], axis=0).tolist()
        for key in ("count", "confidence", "correct")
    }


def predictive_entropy(probabilities: Tensor) -> Tensor:
    """Entropy of each example's predictive, ``-sum_k p_k log p_k``, shape ``(batch,)``."""
    return -torch.special.xlogy(probabilities, probabilities).sum(dim=-1)


def mutual_information(sample_log_probabilities: Tensor) -> Tensor:
    """Epistemic uncertainty of a sampling predictive, shape ``(batch,)``.

    ``MI = H[mean_s p_s] - mean_s H[p_s]`` (total entropy minus the expected entropy of the
    samples; Houlsby et al. 2011, Gal 2016): 0 when all samples agree.
    """
    probabilities = sample_log_probabilities.exp()
    total = predictive_entropy(probabilities.mean(dim=0))
    expected = predictive_entropy(probabilities).mean(dim=0)
    return (total - expected).clamp(min=0)


def auroc(negatives: Tensor, positives: Tensor) -> float:
    """Area under the ROC curve of a score that should be higher for ``positives``.

    The probability that a random positive scores above a random negative, ties counting
    one half (the Mann-Whitney statistic, from average ranks). ``nan`` if either is empty.
    """
    n_neg, n_pos = len(negatives), len(positives)
    if n_neg == 0 or n_pos == 0:
        return math.nan
    scores = torch.cat([negatives, positives]).double()
    sorted_scores, order = scores.sort()
    # Ranks from 1; tied scores share the mean of their ranks.
    _, inverse, counts = torch.unique_consecutive(
        sorted_scores, return_inverse=True, return_counts=True
    )
    counts = counts.double()
    mean_rank = counts.cumsum(0) - (counts - 1) / 2
    ranks = torch.empty_like(scores)
    ranks[order] = mean_rank[inverse]
    rank_sum = ranks[n_neg:].sum().item()
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
