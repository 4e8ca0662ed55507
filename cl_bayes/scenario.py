"""The three continual-learning scenarios of van de Ven & Tolias (2019).

- ``task``: task-incremental. One output head per task; the task identity picks the head
  at training and at test time. Targets are within-task labels.
- ``domain``: domain-incremental. One shared head over the within-task labels; no task
  identity at test time (Split MNIST: "first or second digit of the pair").
- ``class``: class-incremental. One head over all classes of all tasks; task ``t``'s
  labels are offset by the number of classes in tasks ``0 .. t-1``. At any point only the
  classes seen so far are active: training on, or evaluating after, task ``t`` scores the
  outputs of tasks ``0 .. t`` only.

The scenario is separate from the task sequence: ``task=split_mnist scenario=class``.
"""

from __future__ import annotations

from enum import Enum

import torch
from torch import Tensor

from cl_bayes.data import LabelledData, TaskSequence
from cl_bayes.errors import ConfigError


class Scenario(str, Enum):
    """How tasks map onto output heads and labels."""

    TASK = "task"
    DOMAIN = "domain"
    CLASS = "class"

    @classmethod
    def parse(cls, name: str) -> Scenario:
        """The scenario called ``name``, or a clear error listing the valid ones."""
        try:
            return cls(name)
        except ValueError:
            valid = ", ".join(s.value for s in cls)
            raise ConfigError(f"Unknown scenario {name!r}. Valid scenarios: {valid}.") from None

    def check(self, sequence: TaskSequence) -> None:
        """Raise a clear error when this scenario makes no sense for ``sequence``."""
        sizes = {task.n_classes for task in sequence.tasks}
        if self is Scenario.CLASS:
            return
        if len(sizes) > 1:
            raise ConfigError(
                f"scenario={self.value} needs every task to have the same number of classes; "
                f"{sequence.name} has tasks of {sorted(sizes)} classes. Use scenario=class."
            )
        if min(sizes) < 2:
            raise ConfigError(
                f"scenario={self.value} with one class per task is trivially solved: every "
                f"head would have a single output. Use scenario=class for {sequence.name} "
                f"with one class per task."
            )

    def head_sizes(self, sequence: TaskSequence) -> list[int]:
        """Number of outputs of each head, one entry per head."""
        if self is Scenario.TASK:
            return [task.n_classes for task in sequence.tasks]
        if self is Scenario.DOMAIN:
            return [sequence.tasks[0].n_classes]
        return [sum(task.n_classes for task in sequence.tasks)]

    def head(self, task_id: int) -> int:
        """Index of the head that answers for task ``task_id``."""
        return task_id if self is Scenario.TASK else 0

    def class_offset(self, sequence: TaskSequence, task_id: int) -> int:
        """Output index of task ``task_id``'s first class."""
        if self is Scenario.CLASS:
            return sum(task.n_classes for task in sequence.tasks[:task_id])
        return 0

    def targets(self, sequence: TaskSequence, task_id: int, labels: Tensor) -> Tensor:
        """Map within-task ``labels`` of task ``task_id`` to this scenario's targets."""
        return labels + self.class_offset(sequence, task_id)

    def n_outputs(self, sequence: TaskSequence, trained_through: int) -> int:
        """Active outputs of a head once tasks ``0 .. trained_through`` have been seen."""
        if self is Scenario.CLASS:
            return self.class_offset(sequence, trained_through + 1)
        return sequence.tasks[0].n_classes

    @property
    def has_untrained_heads(self) -> bool:
        """Whether a task's outputs are untrained before the task (FWT then does not apply)."""
        return self is not Scenario.DOMAIN

    def labelled(self, sequence: TaskSequence, task_id: int, split: str) -> LabelledData:
        """Task ``task_id``'s ``split`` (train / val / test) with this scenario's targets and head.

        The view every method trains and is evaluated on: within-task labels mapped by
        :meth:`targets`, the answering head from :meth:`head`, and the outputs active once
        the task is trained (:meth:`n_outputs`), and each example's position in the split.
        """
        task = sequence.tasks[task_id]
        x, y = getattr(task, f"x_{split}"), getattr(task, f"y_{split}")
        return LabelledData(
            x,
            self.targets(sequence, task_id, y),
            self.head(task_id),
            self.n_outputs(sequence, task_id),
            torch.arange(len(y), device=y.device),
        )
