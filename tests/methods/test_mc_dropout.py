"""MC dropout: the vectorised passes are full dropout forward passes; prediction averages them."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from cl_bayes.config import instantiate
from cl_bayes.data import LabelledData
from cl_bayes.errors import ConfigError
from cl_bayes.methods.mc_dropout import PASSES_PER_CHUNK, MCDropout
from cl_bayes.models.mlp import MLP
from tests.conftest import compose_config
from tests.methods.runs import run_method

# More passes than one chunk holds, the last chunk cut short.
T = 2 * PASSES_PER_CHUNK + 5


def _model(dropout=0.5, seed=0):
    torch.manual_seed(seed)
    return MLP(input_shape=[1, 3, 4], hidden_sizes=[9, 7], head_sizes=[5, 5], dropout=dropout)


def _data(head=1, n=6, n_outputs=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return LabelledData(
        torch.randn(n, 1, 3, 4, generator=g), torch.zeros(n).long(), head, n_outputs
    )


@pytest.mark.parametrize("head", [1, torch.tensor([0, 1, 1, 0, 1, 0])])
def test_the_vectorised_passes_are_full_forward_passes_with_the_same_masks(monkeypatch, head):
    model, data = _model().eval(), _data(head)
    masks = []  # every mask predict draws, in the order it draws them

    def recording_dropout(input, p=0.5, training=True, inplace=False):
        assert training, "dropout must stay on at prediction"
        mask = torch.empty_like(input).bernoulli_(1 - p)
        masks.append(mask)
        return input * mask / (1 - p)

    monkeypatch.setattr(F, "dropout", recording_dropout)
    torch.manual_seed(1)
    sampled = MCDropout(T).predict(model, data, samples=True)
    # One mask per hidden layer and chunk, (passes, batch, hidden): the passes' own masks.
    chunk = PASSES_PER_CHUNK
    assert [tuple(m.shape) for m in masks] == [(chunk, 6, 9), (chunk, 6, 7)] * 2 + [
        (5, 6, 9),
        (5, 6, 7),
    ]
    by_layer = [torch.cat(masks[layer::2]) for layer in (0, 1)]

    model.train()
    for t in range(T):
        replay = iter(layer_masks[t] for layer_masks in by_layer)

        def replaying_dropout(input, p=0.5, training=True, inplace=False, replay=replay):
            return input * next(replay) / (1 - p)

        monkeypatch.setattr(F, "dropout", replaying_dropout)
        expected = model(data.x, data.head)[:, : data.n_outputs].log_softmax(dim=-1)
        torch.testing.assert_close(sampled[t], expected)


def test_with_dropout_0_every_pass_is_the_plain_softmax():
    model, data = _model(dropout=0.0).eval(), _data()
    plain = model(data.x, data.head)[:, : data.n_outputs].log_softmax(dim=-1)
    sampled = MCDropout(T).predict(model, data, samples=True)
    assert sampled.shape == (T, len(data), data.n_outputs)
    torch.testing.assert_close(sampled, plain.expand(T, -1, -1), rtol=0, atol=0)
    torch.testing.assert_close(MCDropout(T).predict(model, data), plain)


@pytest.mark.parametrize("training", [False, True])
def test_passes_differ_and_predict_leaves_the_model_mode_as_it_was(training):
    model, data = _model().train(training), _data()
    torch.manual_seed(0)
    sampled = MCDropout(T).predict(model, data, samples=True)
    assert model.training is training
    assert all(module.training is training for module in model.modules())
    # Each pass has its own masks, within a chunk as across chunks.
    for a, b in itertools.combinations(range(T), 2):
        assert not torch.allclose(sampled[a], sampled[b]), (a, b)
    predictive = MCDropout(T).predict(model, data)
    assert model.training is training
    assert predictive.shape == (len(data), data.n_outputs) and not predictive.requires_grad
    assert torch.all(predictive <= 0)
    torch.testing.assert_close(predictive.logsumexp(dim=1), torch.zeros(len(data)))
    # Dropout on at prediction: different draws give a different predictive.
    torch.manual_seed(1)
    assert not torch.allclose(MCDropout(T).predict(model, data), predictive)


def test_predict_is_the_mean_over_passes_of_the_probabilities():
    model, data = _model().eval(), _data()
    torch.manual_seed(3)
    sampled = MCDropout(T).predict(model, data, samples=True)
    torch.manual_seed(3)  # the same masks
    predictive = MCDropout(T).predict(model, data)
    torch.testing.assert_close(predictive, sampled.exp().mean(dim=0).log())
    # Averaged in probability space, not in log space or over logits.
    assert not torch.allclose(predictive, sampled.mean(dim=0).log_softmax(dim=-1))


def test_the_loss_is_cross_entropy_with_dropout_on_in_training_mode():
    model, data = _model(), _data(n_outputs=5)
    method = MCDropout()
    model.eval()
    reference = F.cross_entropy(model(data.x, data.head), data.y)
    torch.testing.assert_close(method.loss(model, data), reference)
    model.train()  # as the training loop leaves it: each evaluation draws new masks
    assert not torch.allclose(method.loss(model, data), method.loss(model, data))


def test_the_method_selects_the_mlp_with_dropout_and_refuses_a_network_without():
    cfg = compose_config("method=mc_dropout", "task=synthetic")
    assert cfg.model._target_ == "cl_bayes.models.mlp.MLP"
    assert cfg.model.dropout == 0.5 and list(cfg.model.hidden_sizes) == [256, 256]
    assert cfg.method.predict_samples == 10

    bayesian = compose_config("method=mc_dropout", "model=bayes_mlp", "model.hidden_sizes=[8]")
    model = instantiate(bayesian.model, input_shape=[1, 3, 4], head_sizes=[5])
    method, data = instantiate(bayesian.method), _data(head=0)
    for call in (lambda: method.before_task(model, 0, data), lambda: method.predict(model, data)):
        with pytest.raises(ConfigError, match=r"mc_dropout needs .*dropout.*model=dropout_mlp"):
            call()


@pytest.mark.parametrize("samples", [0, -3, 2.5, True, "10"])
def test_predict_samples_must_be_a_positive_whole_number(samples):
    with pytest.raises(ConfigError, match=r"method\.predict_samples must be a whole number"):
        MCDropout(samples)


def test_training_task_after_task_learns_each_task(tmp_path):
    record = run_method(
        tmp_path,
        "mc_dropout",
        "task.train_size=500",
        "task.test_size=200",
        "train.epochs=5",
        "model.hidden_sizes=[64]",
        "seed=0",
    )
    matrix = record["accuracy_matrix"]
    # Two Gaussian clusters per task, best possible 97.7 % (chance 50 %): each task is
    # learned through dropout training and predicted by the MC mean.
    assert matrix[0][0] > 0.9 and matrix[1][1] > 0.9
