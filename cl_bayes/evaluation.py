"""What a method's predictions on one task's evaluation data say: accuracy and uncertainty.

One pass of ``method.predict(..., samples=True)`` per chunk gives everything: the accuracy
that fills ``R``; the negative log-likelihood, Brier score and calibration (reliability bins,
ECE) of the predictive; and per example its predictive entropy and, for a method with more
than one Monte Carlo sample (VCL, MC dropout), its mutual information. The per-example scores
are what unseen-task detection ranks (:func:`cl_bayes.metrics.auroc`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from cl_bayes import metrics
from cl_bayes.data import LabelledData
from cl_bayes.methods.base import Method

# Examples per call of ``predict``: bounds the (samples, chunk, outputs) tensors it returns.
EVALUATION_CHUNK = 10000

# The per-task uncertainty measures kept as (T, T) matrices beside R, in the record's
# ``uncertainty`` entry (``mutual_information`` only for sampling methods).
MATRICES = ("nll", "brier", "ece", "entropy", "mutual_information")


@dataclass
class Scores:
    """Per-example uncertainty scores, ``(n,)`` each.

    ``mutual_information`` is ``None`` for a method with one sample (a deterministic
    predictive has no epistemic part to measure).
    """

    entropy: Tensor
    mutual_information: Tensor | None

    def subset(self, index: Tensor) -> Scores:
        """The scores of the examples at ``index``."""
        mi = self.mutual_information
        return Scores(self.entropy[index], None if mi is None else mi[index])


def detection_positions(n: int, limit: int | None, device: torch.device | None = None) -> Tensor:
    """Evenly spaced positions of at most ``limit`` of ``n`` examples (all where ``None``).

    The unseen task's examples that detection scores: deterministic (no random draw, so the
    run's random stream is untouched) and spread over the whole evaluation split.
    """
    if limit is None or limit >= n:
        return torch.arange(n, device=device)
    return torch.linspace(0, n - 1, limit, device=device).round().long()


@dataclass
class TaskEvaluation:
    """A method's predictions on one task's evaluation data, summarised.

    ``accuracy``, ``nll``, ``brier``, ``ece`` (fractions or nats; see
    :mod:`cl_bayes.metrics`), the mean ``entropy`` and ``mutual_information`` (``nan`` for a
    method with one sample), the reliability ``bins`` and the per-example ``scores``.
    """

    accuracy: float
    nll: float
    brier: float
    ece: float
    entropy: float
    mutual_information: float
    bins: dict[str, list[float]]
    scores: Scores

    def matrix_entries(self) -> dict[str, float]:
        """The values that go into the ``(T, T)`` matrices named in :data:`MATRICES`."""
        return {name: getattr(self, name) for name in MATRICES}


@torch.no_grad()
def predictions(
    method: Method, model: nn.Module, data: LabelledData, chunk: int = EVALUATION_CHUNK
) -> Tensor:
    """``method.predict(..., samples=True)`` over ``data`` in chunks: ``(samples, n, outputs)``."""
    model.eval()
    if len(data) <= chunk:  # one call, on the data's own tensors (no copy)
        return method.predict(model, data, samples=True)
    parts = []
    for start in range(0, len(data), chunk):
        rows = torch.arange(start, min(start + chunk, len(data)), device=data.y.device)
        parts.append(method.predict(model, data.subset(rows), samples=True))
    return torch.cat(parts, dim=1)


def uncertainty_scores(sample_log_probabilities: Tensor) -> tuple[Tensor, Scores]:
    """The predictive ``(n, outputs)`` of per-sample log-probabilities, and its scores."""
    n_samples = sample_log_probabilities.shape[0]
    if n_samples == 1:
        probabilities = sample_log_probabilities[0].exp()
        return probabilities, Scores(metrics.predictive_entropy(probabilities), None)
    probabilities = sample_log_probabilities.exp().mean(dim=0)
    return probabilities, Scores(
        metrics.predictive_entropy(probabilities),
        metrics.mutual_information(sample_log_probabilities),
    )


def evaluate(
    method: Method, model: nn.Module, data: LabelledData, n_outputs: int
) -> TaskEvaluation:
    """Accuracy, calibration and uncertainty of ``method`` on ``data`` over ``n_outputs``.

    The prediction is the argmax of the predictive (the mean of the samples' probabilities).
    """
    data = LabelledData(data.x, data.y, data.head, n_outputs)
    probabilities, scores = uncertainty_scores(predictions(method, model, data))
    labels = data.y
    bins = metrics.reliability_bins(probabilities, labels)
    # The log of the mean probability; a floor keeps an impossible label's NLL finite.
    log_probabilities = probabilities.clamp(min=torch.finfo(probabilities.dtype).tiny).log()
    return TaskEvaluation(
        accuracy=(probabilities.argmax(dim=1) == labels).float().mean().item()
        if len(data)
        else 0.0,
        nll=metrics.negative_log_likelihood(log_probabilities, labels),
        brier=metrics.brier_score(probabilities, labels),
        ece=metrics.expected_calibration_error(bins),
        entropy=scores.entropy.mean().item(),
        mutual_information=(
            math.nan
            if scores.mutual_information is None
            else scores.mutual_information.mean().item()
        ),
        bins=bins,
        scores=scores,
    )


def unseen_scores(
    method: Method, model: nn.Module, unseen: LabelledData, answered_like: LabelledData
) -> Scores:
    """Uncertainty scores of a task not trained yet, answered as ``answered_like`` is.

    ``answered_like`` is the evaluation data of the last trained task: its head and active
    outputs answer the unseen inputs (task-incremental: the newest trained head, since the
    unseen task's own head is untrained; class-incremental: the classes seen so far;
    domain-incremental: the shared head, as for every task). The labels are not used.
    """
    data = LabelledData(unseen.x, unseen.y, answered_like.head, answered_like.n_outputs)
    return uncertainty_scores(predictions(method, model, data))[1]


def detection_auroc(seen: list[Scores], unseen: Scores) -> dict[str, float]:
    """AUROC of each score separating the seen tasks' data (negatives) from an unseen task's.

    ``entropy`` always; ``mutual_information`` where the method samples, else ``nan``.
    """
    result = {"entropy": metrics.auroc(torch.cat([s.entropy for s in seen]), unseen.entropy)}
    if unseen.mutual_information is None:
        result["mutual_information"] = math.nan
    else:
        result["mutual_information"] = metrics.auroc(
            torch.cat([s.mutual_information for s in seen]), unseen.mutual_information
        )
    return result
