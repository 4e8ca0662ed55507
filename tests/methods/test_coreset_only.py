import math

import numpy as np
import pytest
import torch

from cl_bayes.data import LabelledData
from cl_bayes.errors import ConfigError
from cl_bayes.methods.coreset_only import CoresetOnly
from cl_bayes.models.bayes_mlp import BayesMLP
from cl_bayes.run import run


def _method(**kwargs):
    options = dict(
        epochs=30,
        batch_size=None,
        optimizer=lambda p: torch.optim.Adam(p, lr=1e-2),
        progress=False,
        predict_samples=20,
        coreset_size=20,
    )
    options.update(kwargs)
    return CoresetOnly(**options)


def _tasks(n_tasks=2, n=200):
    generator = torch.Generator().manual_seed(0)
    sets = []
    for t in range(n_tasks):
        x = torch.rand(n, 6, generator=generator)
        y = (x[:, t] > 0.5).long()  # each task has its own rule
        sets.append(LabelledData(x, y, t, 2))
    return sets


def test_the_network_never_trains_and_its_prior_stays_the_first_one():
    torch.manual_seed(0)
    model = BayesMLP(6, [8], [2, 2], prior_var=1.0)
    method = _method()
    tasks = _tasks()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    for t in range(2):
        data = method.training_data(t, tasks)
        assert len(data) == 0  # nothing but the coreset is ever seen
        assert len(method.coreset(t)) == 20
        method.before_task(model, t, data)
        method.after_task(model, t, data)
    # Head 1 was re-initialised when its task arrived; the body never changed.
    for key, value in model.state_dict().items():
        if key.startswith("body."):
            assert torch.equal(value, initial[key]), key
    for layer in model.layers([0, 1]):
        assert torch.all(layer.weight_prior_mean == 0)
        assert torch.allclose(
            layer.weight_prior_log_var, torch.full_like(layer.weight_prior_log_var, math.log(1.0))
        )


def test_the_coreset_trained_copies_predict_well_above_chance():
    torch.manual_seed(0)
    model = BayesMLP(6, [16], [2, 2])
    method = _method(coreset_size=60)
    tasks = _tasks(n=400)
    for t in range(2):
        data = method.training_data(t, tasks)
        method.before_task(model, t, data)
        method.after_task(model, t, data)
    assert set(method._predictors) == {0, 1}
    for t, task in enumerate(tasks):
        accuracy = (method.predict(model, task).argmax(1) == task.y).float().mean().item()
        assert accuracy > 0.75, (t, accuracy)


def test_a_coreset_is_required():
    with pytest.raises(ConfigError, match="coreset_size >= 1"):
        _method(coreset_size=0)


def test_coreset_only_runs_end_to_end_from_the_command_line_config(tiny_cfg, tmp_path, cached_data):
    record = run(
        tiny_cfg(
            "method=coreset_only",
            "task.n_tasks=2",
            "method.coreset_size=40",
            "train.epochs=20",
            "train.batch_size=null",
            "method.predict_samples=10",
        ),
        tmp_path / "run",
    )
    R = np.array(record["accuracy_matrix"], dtype=float)
    assert record["status"] == "completed" and record["method"] == "coreset_only"
    # 40 examples of 0-vs-1 are plenty: both tasks far above the 50 % of guessing.
    assert R[1, 0] > 0.8 and R[1, 1] > 0.8
