"""The quadratic regularisers (EWC, online EWC, SI, MAS, L2) against fine-tuning on real data."""

from __future__ import annotations

import pytest

from tests.methods.runs import after_two_mnist_tasks


@pytest.fixture(scope="module")
def finetune_after_two_tasks(tmp_path_factory, data_root):
    """Fine-tuning's accuracies after the two tasks, run once for every regulariser."""
    return after_two_mnist_tasks(tmp_path_factory.mktemp("finetune"), "finetune")


@pytest.mark.parametrize(
    "method, strength",
    [
        ("ewc", "method.penalty_weight=1e5"),
        ("online_ewc", "method.penalty_weight=1e5"),
        ("si", "method.penalty_weight=100"),
        ("mas", "method.penalty_weight=100"),
        ("l2", "method.penalty_weight=10"),
    ],
)
def test_forgets_less_than_finetune_on_two_split_mnist_tasks(
    tmp_path, cached_data, finetune_after_two_tasks, method, strength
):
    # Class-incremental: fine-tuning forgets the first two digits completely.
    finetune = finetune_after_two_tasks
    regularised = after_two_mnist_tasks(tmp_path, method, strength)
    assert finetune[0] < 0.05
    assert regularised[0] > finetune[0] + 0.3
    assert regularised[1] > 0.5  # and still learns the new task
