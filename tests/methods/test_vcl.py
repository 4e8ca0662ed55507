import numpy as np
import pytest
import torch
from hydra.utils import instantiate

import cl_bayes.methods.vcl
import cl_bayes.run
from cl_bayes.data import LabelledData
from cl_bayes.errors import ConfigError
from cl_bayes.methods.vcl import VCL
from cl_bayes.models.bayes_mlp import BayesMLP
from cl_bayes.models.mlp import MLP
from cl_bayes.run import run


def _method(**kwargs):
    options = dict(
        epochs=2,
        batch_size=None,
        optimizer=lambda p: torch.optim.Adam(p, lr=1e-2),
        progress=False,
        predict_samples=20,
    )
    options.update(kwargs)
    return VCL(**options)


def _tasks(n_tasks=2, n=60, heads=True):
    generator = torch.Generator().manual_seed(0)
    sets = []
    for t in range(n_tasks):
        x = torch.rand(n, 1, 2, 3, generator=generator)
        y = (x.flatten(1).sum(1) > 3).long()
        sets.append(LabelledData(x, y, t if heads else 0, 2))
    return sets


def test_neg_elbo_is_nll_plus_beta_kl_over_n():
    torch.manual_seed(0)
    model = BayesMLP(6, [5], [2, 2])
    data = _tasks()[0]
    method = _method(beta=0.3, train_samples=3)
    method.training_data(0, [data])
    method.seen_heads = [0]
    torch.manual_seed(1)
    value = method.neg_elbo(model, data, n_train=60)
    torch.manual_seed(1)
    sampled = model(data.x, 0, 3)
    nll = torch.nn.functional.cross_entropy(sampled.flatten(0, 1), data.y.repeat(3))
    assert torch.allclose(value, nll + 0.3 * model.kl([0]) / 60)


def test_after_a_task_the_prior_is_the_old_posterior_and_new_heads_get_n01():
    torch.manual_seed(0)
    model = BayesMLP(6, [5], [2, 2], prior_var=1.0)
    method = _method(ml_init=False)
    tasks = _tasks()
    optimizer_params = {id(p) for p in model.parameters()}
    for t in range(2):
        data = method.training_data(t, tasks)
        method.before_task(model, t, data)
        if t == 1:
            # The new head starts fresh: prior N(0, 1), posterior log-variance -6.
            assert torch.all(model.heads[1].weight_prior_mean == 0)
            assert torch.all(model.heads[1].weight_prior_log_var == 0)
            assert torch.all(model.heads[1].weight_posterior_log_var == -6)
            # ... while the body's prior is task 0's posterior.
            assert not torch.all(model.body[0].weight_prior_log_var == 0)
        cl_bayes.run.fit(
            model,
            data,
            method.train_step,
            torch.optim.Adam(model.parameters(), 1e-2),
            3,
            None,
            "t",
            False,
        )
        method.after_task(model, t, data)
        for layer in model.layers(method.seen_heads):
            assert torch.equal(layer.weight_prior_mean, layer.weight_posterior_mean.detach())
            assert torch.equal(layer.bias_prior_log_var, layer.bias_posterior_log_var.detach())
            assert not layer.weight_prior_mean.requires_grad
            assert id(layer.weight_prior_mean) not in optimizer_params
    assert method.seen_heads == [0, 1]


def test_ml_init_starts_the_first_task_from_a_trained_network():
    torch.manual_seed(0)
    model = BayesMLP(6, [16], [2])
    tasks = _tasks(1, n=200, heads=False)
    before = (model(tasks[0].x, 0).argmax(1) == tasks[0].y).float().mean()
    method = _method(epochs=100, ml_init=True)
    method.before_task(model, 0, method.training_data(0, tasks))
    after = (model(tasks[0].x, 0).argmax(1) == tasks[0].y).float().mean()
    assert after > max(before, 0.85)
    assert torch.all(model.body[0].weight_posterior_log_var == -6)  # variances untouched


@pytest.mark.parametrize("coreset_method", ["random", "k_center"])
def test_coreset_points_are_removed_from_the_training_data(coreset_method):
    torch.manual_seed(0)
    tasks = _tasks(2, n=50)
    method = _method(coreset_size=7, coreset_method=coreset_method)
    data = method.training_data(1, tasks)
    index = method.coreset_index[1]
    assert len(index) == 7 and len(data) == 43
    kept = {tuple(row.tolist()) for row in data.x.flatten(1)}
    coreset = method.coreset(1)
    assert all(tuple(row.tolist()) not in kept for row in coreset.x.flatten(1))
    assert torch.equal(coreset.y, tasks[1].y[index])


def test_coreset_tuned_copies_predict_and_the_model_is_not_changed():
    torch.manual_seed(0)
    model = BayesMLP(6, [8], [2, 2])
    tasks = _tasks(2, n=60)
    method = _method(coreset_size=10, ml_init=False)
    for t in range(2):
        data = method.training_data(t, tasks)
        method.before_task(model, t, data)
        method.after_task(model, t, data)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert set(method._predictors) == {0, 1}
    assert all(p is not model for p in method._predictors.values())
    method.predict(model, tasks[1])
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    tuned = method._predictors[1].heads[1]
    assert not torch.equal(tuned.weight_posterior_mean, model.heads[1].weight_posterior_mean)


def test_predict_is_the_log_of_the_mean_softmax_over_samples():
    model = BayesMLP(6, [8], [3])
    data = LabelledData(torch.rand(4, 6), torch.zeros(4, dtype=torch.long), 0, 3)
    torch.manual_seed(0)
    log_probabilities = _method(predict_samples=25).predict(model, data)
    torch.manual_seed(0)  # the same draws, in the same chunks of 10, 10 and 5 samples
    scores = torch.cat([model(data.x, 0, k) for k in (10, 10, 5)])
    expected = scores.softmax(dim=-1).mean(dim=0).log()
    assert log_probabilities.shape == (4, 3)
    torch.testing.assert_close(log_probabilities, expected)
    torch.testing.assert_close(log_probabilities.logsumexp(dim=1), torch.zeros(4))


def test_vcl_refuses_a_deterministic_model():
    with pytest.raises(ConfigError, match="bayes_mlp"):
        _method().before_task(MLP(6, [4], [2]), 0, _tasks()[0])


def test_vcl_config_selects_the_bayesian_model(tiny_cfg):
    cfg = tiny_cfg("method=vcl")
    assert cfg.model._target_.endswith("BayesMLP")
    method = instantiate(cfg.method)
    assert isinstance(method, VCL) and method.epochs == cfg.train.epochs


def test_vcl_forgets_less_than_finetune_on_two_real_mnist_tasks(tiny_cfg, tmp_path, cached_data):
    common = [
        "task.n_tasks=2",
        "task.train_size=1000",
        "train.epochs=20",
        "train.batch_size=null",
        "model.hidden_sizes=[64]",
        "seed=0",
        "scenario=domain",
    ]
    finetune = run(tiny_cfg(*common, "method=finetune", "model=mlp"), tmp_path / "finetune")
    vcl = run(tiny_cfg(*common, "method=vcl", "method.predict_samples=20"), tmp_path / "vcl")
    f_forgetting, v_forgetting = finetune["summary"]["forgetting"], vcl["summary"]["forgetting"]
    assert v_forgetting < f_forgetting - 0.05, (v_forgetting, f_forgetting)


def test_vcl_resume_is_bit_identical(tiny_cfg, tmp_path, monkeypatch, cached_data):
    overrides = [
        "method=vcl",
        "task.n_tasks=3",
        "task.train_size=100",
        "train.epochs=2",
        "method.coreset_size=10",
        "method.coreset_method=k_center",
        "method.predict_samples=10",
    ]
    full = run(tiny_cfg(*overrides), tmp_path / "full")

    real_train = cl_bayes.run.train_task
    calls = []

    def interrupt_third_task(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_train(*args, **kwargs)

    monkeypatch.setattr(cl_bayes.run, "train_task", interrupt_third_task)
    with pytest.raises(KeyboardInterrupt):
        run(tiny_cfg(*overrides), tmp_path / "cut")
    monkeypatch.setattr(cl_bayes.run, "train_task", real_train)
    resumed = run(tiny_cfg(*overrides, f"resume={tmp_path / 'cut'}"), tmp_path / "other")
    assert resumed["status"] == "completed" and resumed["run_id"] != full["run_id"]
    np.testing.assert_array_equal(
        np.array(resumed["accuracy_matrix"], dtype=float),
        np.array(full["accuracy_matrix"], dtype=float),
    )


def test_weight_sampling_runs_through_the_command_line_config(tiny_cfg, tmp_path, cached_data):
    cfg = tiny_cfg("method=vcl", "model.sampling=weights", "task.n_tasks=2", "train.epochs=3")
    model = instantiate(cfg.model, input_shape=[1, 28, 28], head_sizes=[2, 2])
    assert {layer.sampling for layer in model.layers([0, 1])} == {"weights"}
    record = run(cfg, tmp_path / "weights")
    assert record["status"] == "completed" and record["config"]["model"]["sampling"] == "weights"
    assert record["accuracy_matrix"][0][0] > 0.9  # 0 vs 1, learned (chance: 0.5)


def test_vcl_trains_a_bayesian_cnn_on_split_cifar10_files(tiny_cfg, tiny_cifar10, tmp_path):
    root, _ = tiny_cifar10
    cfg = tiny_cfg(
        "task=split_cifar10",
        "task.n_tasks=2",
        "method=vcl",
        "model=bayes_cnn",
        "model.conv_channels=[4,4]",
        "model.hidden_sizes=[8]",
        "train.epochs=2",
        "method.train_samples=2",
        "method.predict_samples=4",
        "method.coreset_size=2",
        f"data.root={root}",
        "data.download=false",
    )
    assert cfg.model._target_.endswith("BayesCNN")
    record = run(cfg, tmp_path / "cnn")
    assert record["status"] == "completed"
    matrix = np.array(record["accuracy_matrix"], dtype=float)
    assert np.isfinite(np.diag(matrix)).all() and np.isfinite(matrix[1]).all()


def test_the_maximum_likelihood_start_follows_train_steps(compose_cfg, monkeypatch):
    # A protocol counted in steps (train.steps) starts VCL's first task from a network
    # trained for that many steps too, not for train.epochs.
    cfg = compose_cfg("method=vcl", "train.steps=7", "train.epochs=50", "train.batch_size=16")
    method = instantiate(cfg.method)
    assert method.steps == 7
    tasks = _tasks(n_tasks=1)
    model = BayesMLP(6, [8], [2])
    taken = []
    step = cl_bayes.methods.vcl.plain_step

    def counting_step(*args):
        taken.append(1)
        return step(*args)

    monkeypatch.setattr(cl_bayes.methods.vcl, "plain_step", counting_step)
    method.training_data(0, tasks)
    method.before_task(model, 0, tasks[0])
    assert len(taken) == 7
