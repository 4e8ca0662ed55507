"""Heads, targets and active outputs of the three scenarios, on synthetic task sequences."""

import pytest
import torch

from cl_bayes.data import Task, TaskSequence
from cl_bayes.errors import ConfigError
from cl_bayes.scenario import Scenario


def make_sequence(class_counts, n=4, name="synthetic"):
    """A task sequence of random 1x2x2 images; task t has ``class_counts[t]`` classes."""
    tasks = []
    for t, k in enumerate(class_counts):
        y = torch.arange(n) % k
        x = torch.rand(n, 1, 2, 2)
        tasks.append(Task(f"t{t}", x, y, x[:0], y[:0], x, y, k))
    return TaskSequence(name, tasks, "task")


def test_task_incremental_has_one_head_per_task_and_within_task_targets():
    seq = make_sequence([2, 2, 2])
    s = Scenario.TASK
    assert s.head_sizes(seq) == [2, 2, 2]
    assert [s.head(t) for t in range(3)] == [0, 1, 2]
    labels = torch.tensor([0, 1, 1])
    assert torch.equal(s.targets(seq, 2, labels), labels)
    assert [s.n_outputs(seq, t) for t in range(3)] == [2, 2, 2]
    assert s.has_untrained_heads


def test_domain_incremental_shares_one_head_over_within_task_labels():
    seq = make_sequence([2, 2, 2])
    s = Scenario.DOMAIN
    assert s.head_sizes(seq) == [2]
    assert [s.head(t) for t in range(3)] == [0, 0, 0]
    labels = torch.tensor([1, 0])
    assert torch.equal(s.targets(seq, 2, labels), labels)
    assert [s.n_outputs(seq, t) for t in range(3)] == [2, 2, 2]
    assert not s.has_untrained_heads  # FWT applies only here


def test_class_incremental_offsets_labels_by_the_classes_of_earlier_tasks():
    seq = make_sequence([2, 3, 1])
    s = Scenario.CLASS
    assert s.head_sizes(seq) == [6]
    assert [s.head(t) for t in range(3)] == [0, 0, 0]
    assert [s.class_offset(seq, t) for t in range(3)] == [0, 2, 5]
    assert s.targets(seq, 1, torch.tensor([0, 1, 2])).tolist() == [2, 3, 4]
    assert s.targets(seq, 2, torch.tensor([0])).tolist() == [5]
    # Only the classes seen so far are active.
    assert [s.n_outputs(seq, t) for t in range(3)] == [2, 5, 6]
    assert s.has_untrained_heads
    s.check(seq)  # unequal and single-class tasks are fine here


@pytest.mark.parametrize("name", ["task", "domain"])
def test_one_class_per_task_only_works_class_incrementally(name):
    seq = make_sequence([1, 1, 1], name="split_one")
    with pytest.raises(ConfigError, match="one class per task.*scenario=class"):
        Scenario(name).check(seq)
    Scenario.CLASS.check(seq)


@pytest.mark.parametrize("name", ["task", "domain"])
def test_tasks_of_different_sizes_need_class_incremental(name):
    with pytest.raises(ConfigError, match=r"\[2, 3\] classes. Use scenario=class"):
        Scenario(name).check(make_sequence([2, 3]))


def test_unknown_scenario_lists_the_valid_ones():
    with pytest.raises(
        ConfigError, match="Unknown scenario 'tasks'. Valid scenarios: task, domain, class"
    ):
        Scenario.parse("tasks")
    assert Scenario.parse("class") is Scenario.CLASS
    assert Scenario.CLASS == "class"  # a str Enum: records and configs hold the plain name


@pytest.mark.parametrize("scenario", list(Scenario))
def test_the_labelled_view_has_the_scenario_s_targets_head_and_positions(scenario):
    seq = make_sequence([2, 2, 2], n=6)
    data = scenario.labelled(seq, 1, "train")
    assert torch.equal(data.x, seq.tasks[1].x_train)
    assert torch.equal(data.y, scenario.targets(seq, 1, seq.tasks[1].y_train))
    assert data.head == scenario.head(1) and data.n_outputs == scenario.n_outputs(seq, 1)
    assert data.index.tolist() == list(range(6))
