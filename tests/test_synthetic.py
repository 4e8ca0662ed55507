"""The synthetic task sequence: Gaussian clusters drawn from the seed, no files."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from cl_bayes import data
from cl_bayes.errors import ConfigError
from cl_bayes.run import run
from cl_bayes.scenario import Scenario
from tests.conftest import compose_config, run_cli

CPU = torch.device("cpu")


def build(seed=0, **options):
    return data.synthetic_sequence(
        "synthetic", root="/nonexistent", download=True, device=CPU, seed=seed, **options
    )


def class_means(x: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """``(k, d)``: the mean input of each label."""
    return torch.stack([x[y == c].flatten(1).mean(0) for c in range(k)])


def test_shapes_labels_and_sizes():
    seq = build()
    assert seq.name == "synthetic" and seq.n_tasks == 5 and seq.default_scenario == "task"
    assert seq.input_shape == (1, 4, 4)
    for task in seq.tasks:
        assert task.n_classes == 2
        assert task.x_train.shape == (500, 1, 4, 4) and task.x_train.dtype == torch.float32
        assert task.x_test.shape == (200, 1, 4, 4) and task.x_test.dtype == torch.float32
        assert task.y_train.dtype == torch.long and task.y_test.dtype == torch.long
        # Within-task labels, balanced.
        assert task.y_train.bincount().tolist() == [250, 250]
        assert task.y_test.bincount().tolist() == [100, 100]
        assert len(task.y_val) == 0 and task.x_val.shape == (0, 1, 4, 4)
        assert task.x_train.is_contiguous() and task.x_test.is_contiguous()
    assert len({task.name for task in seq.tasks}) == 5


def test_the_seed_alone_decides_the_data(tmp_path):
    a, b, c = build(0), build(0), build(1)
    for task_a, task_b, task_c in zip(a.tasks, b.tasks, c.tasks, strict=True):
        for split in ("x_train", "y_train", "x_test", "y_test"):
            torch.testing.assert_close(
                getattr(task_a, split), getattr(task_b, split), rtol=0, atol=0
            )
        assert not torch.equal(task_a.x_train, task_c.x_train)
        assert not torch.equal(task_a.x_test, task_c.x_test)
    # root and download are ignored: nothing is read or written there.
    data.synthetic_sequence("s", root=tmp_path, download=True, device=CPU, seed=0)
    assert list(tmp_path.iterdir()) == []


def test_classes_are_separated_as_asked_and_tasks_differ():
    separation = 4.0
    seq = build(train_size=4000, separation=separation)
    means = [class_means(t.x_train, t.y_train, 2) for t in seq.tasks]  # each (2, 16)
    for m in means:
        # Two class means lie `separation` apart; 2000 examples each leave an error of
        # about sqrt(2 * 16 / 2000) = 0.13 in the estimate.
        assert float((m[0] - m[1]).norm()) == pytest.approx(separation, abs=0.5)
    # Every class of every task has its own cluster: the closest two clusters of different
    # tasks are further apart than the two classes of one task.
    centres = torch.cat(means)  # (10, 16), task t's classes at rows 2t and 2t + 1
    distance = torch.cdist(centres, centres)
    other_task = torch.arange(10)[:, None] // 2 != torch.arange(10)[None, :] // 2
    assert float(distance[other_task].min()) > separation
    # Tasks pull apart along different directions: no two tasks share their class axis.
    axes = torch.nn.functional.normalize(torch.stack([m[1] - m[0] for m in means]), dim=1)
    cosines = (axes @ axes.T).abs()[~torch.eye(5, dtype=torch.bool)]
    assert float(cosines.max()) < 0.9


def test_within_task_accuracy_is_high_but_not_perfect():
    """The Bayes classifier of two unit-variance clusters `s` apart is right with probability
    Phi(s / 2); the nearest class mean of the training data comes close to it."""
    separation = 3.0
    seq = build(train_size=2000, test_size=4000, separation=separation)
    bayes = 0.5 * (1 + math.erf(separation / 2 / math.sqrt(2)))  # 0.933
    for task in seq.tasks:
        means = class_means(task.x_train, task.y_train, 2)
        guess = torch.cdist(task.x_test.flatten(1), means).argmin(1)
        accuracy = float((guess == task.y_test).float().mean())
        assert accuracy == pytest.approx(bayes, abs=0.02)
    # Applying task 0's classifier to another task is no better than guessing.
    means = class_means(seq.tasks[0].x_train, seq.tasks[0].y_train, 2)
    other = seq.tasks[1]
    guess = torch.cdist(other.x_test.flatten(1), means).argmin(1)
    assert abs(float((guess == other.y_test).float().mean()) - 0.5) < 0.1


def test_options_shape_the_sequence():
    seq = build(n_tasks=3, classes_per_task=4, input_shape=(3, 2, 2), train_size=60, test_size=40)
    assert seq.n_tasks == 3 and seq.input_shape == (3, 2, 2)
    for task in seq.tasks:
        assert task.n_classes == 4 and task.x_train.shape == (60, 3, 2, 2)
        assert task.y_test.bincount().tolist() == [10, 10, 10, 10]


def test_val_fraction_is_drawn_on_top_of_train_size():
    seq = build(train_size=300, val_fraction=0.25)
    plain = build(train_size=300)
    for task, task_plain in zip(seq.tasks, plain.tasks, strict=True):
        assert len(task.y_train) == 300 and len(task.y_val) == 100
        rows_train = {row.numpy().tobytes() for row in task.x_train.flatten(1)}
        rows_val = {row.numpy().tobytes() for row in task.x_val.flatten(1)}
        assert len(rows_train) == 300 and not rows_train & rows_val
        assert task.x_test.shape == task_plain.x_test.shape
    # An awkward fraction still leaves exactly train_size to train on.
    for fraction in (0.1, 1 / 3, 0.9):
        task = build(n_tasks=1, train_size=7, val_fraction=fraction).tasks[0]
        assert len(task.y_train) == 7 and len(task.y_val) > 0


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"train_size": None}, "task.train_size"),
        ({"train_size": 0}, "task.train_size"),
        ({"test_size": 0}, "task.test_size"),
        ({"n_tasks": 0}, "task.n_tasks"),
        ({"classes_per_task": 1}, "task.classes_per_task"),
        ({"classes_per_task": 17}, "task.classes_per_task"),
        ({"input_shape": (4, 4)}, "task.input_shape"),
        ({"input_shape": (1, 0, 4)}, "task.input_shape"),
        ({"separation": 0.0}, "task.separation"),
        ({"val_fraction": 1.0}, "task.val_fraction"),
    ],
)
def test_bad_options_are_config_errors(bad, match):
    with pytest.raises(ConfigError, match=match):
        build(**bad)


def _matrix(record) -> np.ndarray:
    return np.array(
        [[np.nan if v is None else v for v in row] for row in record["accuracy_matrix"]]
    )


@pytest.mark.parametrize("scenario", [s.value for s in Scenario])
def test_fine_tuning_learns_each_task_and_forgets_in_every_scenario(scenario, tmp_path):
    cfg = compose_config(
        "task=synthetic",
        "method=finetune",
        f"scenario={scenario}",
        "progress=false",
        "device=cpu",
        f"results_dir={tmp_path / 'results'}",
    )
    record = run(cfg, tmp_path / "run")
    R = _matrix(record)
    assert record["status"] == "completed" and record["task"] == "synthetic"
    assert record["scenario"] == scenario and R.shape == (5, 5)
    # Each task is learnt well above a two-way guess right after training on it (a shared
    # head first unlearns the previous task's axis in its 20 steps) ...
    assert np.all(np.diag(R) > 0.75) and np.diag(R).mean() > 0.85
    # ... and fine-tuning on the next tasks loses some of it: most with a shared head.
    final_loss = np.diag(R)[:-1] - R[-1, :-1]
    expected = {"task": 0.0, "domain": 0.15, "class": 0.8}[scenario]
    assert final_loss.mean() > expected


def test_the_cli_runs_the_synthetic_sequence(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli(
        "task=synthetic",
        "method=finetune",
        "progress=false",
        "device=cpu",
        "data.download=false",
        "data.root=/nonexistent",
        f"results_dir={tmp_path / 'results'}",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "Traceback" not in out and "Accuracy matrix (%)" in out
    record = json.loads((run_dir / "record.json").read_text())
    assert record["status"] == "completed" and record["tasks_completed"] == 5
    assert record["task"] == "synthetic" and record["method"] == "finetune"
    assert record["config"]["task"]["train_size"] == 500
    assert np.all(np.diag(_matrix(record)) > 0.85)
