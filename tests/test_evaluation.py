"""Evaluation of one task: accuracy, calibration and uncertainty from one pass of ``predict``,
and the uncertainty measures every run records beside R."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from cl_bayes import metrics
from cl_bayes.data import LabelledData
from cl_bayes.evaluation import (
    MATRICES,
    Scores,
    detection_auroc,
    detection_positions,
    evaluate,
    uncertainty_scores,
    unseen_scores,
)
from cl_bayes.methods.base import Method
from tests.methods.runs import THREE_SYNTHETIC_TASKS, run_method


class FixedSamples(Method):
    """Predicts given per-sample log-probabilities (rows picked by the examples' ``x``)."""

    def __init__(self, sample_log_probabilities):
        self.samples = sample_log_probabilities

    def predict(self, model, data, samples=False):
        chosen = self.samples[:, data.x.long(), : data.n_outputs]
        return chosen if samples else chosen.exp().mean(0).log()


class TwoHeads(nn.Module):
    """Head 0 is certain of class 0, head 1 is uniform, whatever the input."""

    def forward(self, x, head=0):
        scores = torch.tensor([[10.0, -10.0]]) if head == 0 else torch.zeros(1, 2)
        return scores.expand(len(x), 2)


def _data(n, head=0, n_outputs=3, labels=None):
    y = torch.zeros(n, dtype=torch.long) if labels is None else labels
    return LabelledData(torch.arange(n).float(), y, head, n_outputs)


def test_deterministic_evaluation_by_hand():
    # One sample: example 0 right with p = 0.5, example 1 wrong (p_y = 0.2).
    probabilities = torch.tensor([[[0.5, 0.3, 0.2], [0.6, 0.2, 0.2]]])
    data = _data(2, labels=torch.tensor([0, 2]))
    result = evaluate(FixedSamples(probabilities.log()), nn.Identity(), data, 3)
    assert result.accuracy == 0.5
    assert result.nll == pytest.approx(-(math.log(0.5) + math.log(0.2)) / 2)
    assert result.brier == pytest.approx(((0.25 + 0.09 + 0.04) + (0.36 + 0.04 + 0.64)) / 2)
    # Two bins: confidence 0.5 right (gap 0.5), confidence 0.6 wrong (gap 0.6).
    assert result.ece == pytest.approx((0.5 + 0.6) / 2)
    assert result.entropy == pytest.approx(
        metrics.predictive_entropy(probabilities[0]).mean().item()
    )
    assert math.isnan(result.mutual_information)
    assert result.scores.mutual_information is None
    assert sum(result.bins["count"]) == 2


def test_sampling_evaluation_uses_the_mean_of_the_samples():
    # Two samples that disagree: the predictive is their mean, MI is positive.
    samples = torch.tensor([[[0.9, 0.1], [0.2, 0.8]], [[0.3, 0.7], [0.4, 0.6]]]).log()
    data = _data(2, n_outputs=2, labels=torch.tensor([0, 1]))
    result = evaluate(FixedSamples(samples), nn.Identity(), data, 2)
    mean = samples.exp().mean(0)  # [[0.6, 0.4], [0.3, 0.7]]: both right
    assert result.accuracy == 1.0
    assert result.nll == pytest.approx(-(math.log(0.6) + math.log(0.7)) / 2)
    expected_mi = metrics.mutual_information(samples)
    assert result.mutual_information == pytest.approx(expected_mi.mean().item())
    assert result.mutual_information > 0
    torch.testing.assert_close(result.scores.entropy, metrics.predictive_entropy(mean))


def test_evaluation_in_chunks_equals_one_pass(monkeypatch):
    generator = torch.Generator().manual_seed(0)
    samples = torch.randn(4, 25, 3, generator=generator).log_softmax(-1)
    data = _data(25, labels=torch.randint(3, (25,), generator=generator))
    whole = evaluate(FixedSamples(samples), nn.Identity(), data, 3)
    monkeypatch.setattr("cl_bayes.evaluation.EVALUATION_CHUNK", 7)
    from cl_bayes import evaluation

    chunked = evaluation.evaluate(FixedSamples(samples), nn.Identity(), data, 3)
    parts = evaluation.predictions(FixedSamples(samples), nn.Identity(), data, chunk=7)
    torch.testing.assert_close(parts, samples)
    assert chunked.nll == pytest.approx(whole.nll) and chunked.ece == pytest.approx(whole.ece)


def test_an_unseen_task_is_answered_by_the_last_trained_head():
    method = Method()
    seen_task = _data(5, head=0, n_outputs=2)
    unseen_task = _data(4, head=1, n_outputs=2)  # its own head (uniform) is untrained
    scores = unseen_scores(method, TwoHeads(), unseen_task, answered_like=seen_task)
    # Through head 0: near-certain, entropy ~0 (through head 1 it would be log 2).
    assert scores.entropy.max().item() < 1e-6
    own_head = uncertainty_scores(method.predict(TwoHeads(), unseen_task, samples=True))[1]
    assert own_head.entropy[0].item() == pytest.approx(math.log(2))


def test_detection_auroc_of_entropy_and_mutual_information():
    seen = [
        Scores(torch.tensor([0.1, 0.2]), torch.tensor([0.0, 0.1])),
        Scores(torch.tensor([0.3]), torch.tensor([0.5])),
    ]
    unseen = Scores(torch.tensor([0.25, 0.9]), torch.tensor([0.2, 0.6]))
    result = detection_auroc(seen, unseen)
    # entropy: 0.25 beats 2 of 3 seen, 0.9 beats 3 -> 5/6; MI: 0.2 beats 2, 0.6 beats 3.
    assert result["entropy"] == pytest.approx(5 / 6)
    assert result["mutual_information"] == pytest.approx(5 / 6)
    deterministic = detection_auroc(
        [Scores(torch.tensor([0.1]), None)], Scores(torch.tensor([1.0]), None)
    )
    assert deterministic["entropy"] == 1.0 and math.isnan(deterministic["mutual_information"])


@pytest.mark.parametrize("scenario", ["task", "domain", "class"])
def test_every_run_records_the_uncertainty_measures_beside_r(tmp_path, scenario):
    record = run_method(tmp_path, "finetune", *THREE_SYNTHETIC_TASKS, f"scenario={scenario}")
    R = np.array(record["accuracy_matrix"], dtype=float)
    T = len(R)
    for name in MATRICES:
        matrix = np.array(record["uncertainty"][name], dtype=float)
        assert matrix.shape == (T, T)
        if name == "mutual_information":  # one sample: no epistemic part
            assert np.isnan(matrix).all()
        else:  # measured exactly where R is
            assert (np.isnan(matrix) == np.isnan(R)).all()
    ece = np.array(record["uncertainty"]["ece"], dtype=float)
    assert np.nanmin(ece) >= 0 and np.nanmax(ece) <= 1
    # Each row's bins pool the test examples of the tasks trained so far (200 per task).
    counts = [sum(row["count"]) for row in record["reliability_bins"]]
    assert counts == [200 * (i + 1) for i in range(T)]
    assert len(record["unseen_auroc"]["entropy"]) == T - 1
    assert all(0 <= a <= 1 for a in record["unseen_auroc"]["entropy"])
    assert all(math.isnan(a) for a in record["unseen_auroc"]["mutual_information"])


def test_a_sampling_method_records_mutual_information(tmp_path):
    record = run_method(tmp_path, "vcl", "model.hidden_sizes=[16]", "method.predict_samples=8")
    mi = np.array(record["uncertainty"]["mutual_information"], dtype=float)
    assert (mi[np.tril_indices(2)] > 0).all()
    assert 0 <= record["unseen_auroc"]["mutual_information"][0] <= 1


def test_detection_positions_are_evenly_spread_and_bounded():
    positions = detection_positions(2000, 500)
    assert len(positions) == 500 and len(positions.unique()) == 500
    assert positions[0] == 0 and positions[-1] == 1999
    assert set(torch.diff(positions).tolist()) <= {4, 5}
    assert torch.equal(detection_positions(30, 500), torch.arange(30))
    assert torch.equal(detection_positions(30, None), torch.arange(30))


@pytest.mark.parametrize("scenario", ["task", "domain"])
def test_detection_scores_part_of_the_next_task_and_leaves_r_alone(tmp_path, scenario):
    common = [*THREE_SYNTHETIC_TASKS, f"scenario={scenario}"]
    every = run_method(tmp_path / "all", "finetune", *common, "unseen_examples=null")
    part = run_method(tmp_path / "part", "finetune", *common, "unseen_examples=20")
    np.testing.assert_array_equal(part["accuracy_matrix"], every["accuracy_matrix"])
    np.testing.assert_array_equal(part["uncertainty"]["ece"], every["uncertainty"]["ece"])
    assert part["unseen_auroc"]["entropy"] != every["unseen_auroc"]["entropy"]
