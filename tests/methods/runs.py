"""Short runs of the whole loop, shared by the methods' tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cl_bayes import checkpoint
from cl_bayes.config import instantiate
from cl_bayes.run import run
from tests.conftest import compose_config

# Two small synthetic tasks (no data on disk): a run takes about a second.
SYNTHETIC = [
    "task=synthetic",
    "task.n_tasks=2",
    "task.train_size=120",
    "task.test_size=60",
    "train.epochs=2",
    "train.batch_size=32",
    "model.hidden_sizes=[16]",
    "progress=false",
    "device=cpu",
]
# Two real Split-MNIST tasks, class-incremental: fine-tuning forgets the first one entirely.
TWO_MNIST_TASKS = [
    "task=split_mnist",
    "task.n_tasks=2",
    "task.train_size=500",
    "train.epochs=3",
    "train.batch_size=64",
    "model.hidden_sizes=[100]",
    "scenario=class",
    "seed=0",
    "progress=false",
    "device=cpu",
]


def run_method(
    tmp_path: Path, method: str, *overrides: str, base: list[str] = SYNTHETIC
) -> dict[str, Any]:
    """The record of ``method=<method>`` run with ``base`` and then ``overrides``.

    The run's folder is ``tmp_path/<method>/run``; later overrides win over earlier ones.
    """
    cfg = compose_config(
        *base, f"method={method}", f"results_dir={tmp_path / 'results'}", *overrides
    )
    return run(cfg, tmp_path / method / "run")


def run_stopped_after_task_1(cfg, run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run ``cfg`` into ``run_dir``, interrupted (Ctrl-C) as task 2 starts.

    The method's ``before_task`` raises ``KeyboardInterrupt`` for task 2 and is restored
    afterwards, so the folder holds task 1's checkpoint and an ``interrupted`` record, ready
    for ``resume=<run_dir>``.
    """
    cls = type(instantiate(cfg.method))
    real = cls.before_task

    def stop_at_task_2(self, model, task_id, data):
        if task_id == 1:
            raise KeyboardInterrupt
        return real(self, model, task_id, data)

    monkeypatch.setattr(cls, "before_task", stop_at_task_2)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, run_dir)
    monkeypatch.setattr(cls, "before_task", real)


def saved_method_state(record: dict[str, Any]) -> dict[str, Any]:
    """What the method kept after the run's last task, as its checkpoint holds it."""
    run_dir = Path(record["record_path"]).parent
    return checkpoint.load(run_dir / checkpoint.CHECKPOINT_NAME)["method"]


def assert_importances_of_what_was_trained(state: dict[str, Any], heads: list[int]) -> None:
    """A regulariser's saved state covers the heads trained and a non-zero body importance."""
    assert state["seen_heads"] == heads
    assert {f"heads.{h}.weight" for h in heads} <= set(state["importance"])
    assert state["importance"]["body.1.weight"].sum() > 0


def after_two_mnist_tasks(tmp_path: Path, method: str, *overrides: str) -> list[float]:
    """Accuracy on each of two real Split-MNIST tasks after training both (``R[1]``)."""
    return run_method(tmp_path, method, *overrides, base=TWO_MNIST_TASKS)["accuracy_matrix"][1]


# Overrides of SYNTHETIC: three tasks, long enough for a replay memory to matter.
THREE_SYNTHETIC_TASKS = [
    "task.n_tasks=3",
    "task.train_size=300",
    "task.test_size=200",
    "train.epochs=5",
    "train.batch_size=32",
    "model.hidden_sizes=[32]",
]
# Overrides of TWO_MNIST_TASKS: more examples in smaller batches, as replay tests use.
MORE_MNIST = ["task.train_size=1000", "train.epochs=2", "train.batch_size=32"]
