"""Task sequences as tensors in memory, built once from a torchvision data set or a seed.

Every task keeps its inputs as float tensors of shape ``(n, channels, height, width)``
(images with pixels in [0, 1]), on the training device, and its labels as within-task
labels ``0 .. n_classes - 1``. The scenario (``cl_bayes.scenario``) maps those labels to
the outputs a model is trained on. torchvision appears only in :func:`load_torchvision`, in
the rotations of :func:`rotated_sequence` and in ``cl_bayes.data_files``, which checks the
files it reads, and is imported there, when a data set is read (``cl_bayes.data_files`` says
why); :func:`synthetic_sequence` needs no files at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from cl_bayes.data_files import DATASETS, check_files, dataset_class, download_or_explain
from cl_bayes.errors import ConfigError


@dataclass
class Task:
    """One task: training, validation and test tensors with within-task labels.

    ``x_*`` have shape ``(n, channels, height, width)``, ``y_*`` shape ``(n,)`` (long).
    """

    name: str
    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor
    x_test: Tensor
    y_test: Tensor
    n_classes: int


@dataclass
class TaskSequence:
    """An ordered list of tasks and the scenario it is usually evaluated in."""

    name: str
    tasks: list[Task]
    default_scenario: str

    @property
    def n_tasks(self) -> int:
        """Number of tasks in the sequence."""
        return len(self.tasks)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input, ``(channels, height, width)``."""
        return tuple(self.tasks[0].x_train.shape[1:])


@dataclass(frozen=True)
class LabelledData:
    """Inputs with scenario targets and the head that answers each example.

    ``x``: ``(n, ...)``; ``y``: ``(n,)`` long targets in the scenario's label space;
    ``head``: one head index for all examples, or an ``(n,)`` long tensor.
    ``n_outputs``: active outputs (class-incremental: the classes seen so far).
    ``index``: each example's position in its task's split, ``(n,)`` long, carried through
    :meth:`subset`, so that a minibatch says which examples it holds (replay memories store
    these positions, never copies of the inputs); ``None`` where unknown.
    """

    x: Tensor
    y: Tensor
    head: int | Tensor
    n_outputs: int
    index: Tensor | None = None

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, index: Tensor) -> LabelledData:
        """The examples at ``index`` (a ``(k,)`` long or ``(n,)`` bool tensor)."""
        head = self.head if isinstance(self.head, int) else self.head[index]
        positions = None if self.index is None else self.index[index]
        return LabelledData(self.x[index], self.y[index], head, self.n_outputs, positions)

    @staticmethod
    def concat(parts: Sequence[LabelledData]) -> LabelledData:
        """All examples of ``parts``, in order, each keeping its own head.

        The result has no ``index``: its examples come from several tasks' splits.
        """
        heads = [p.head for p in parts]
        if all(isinstance(h, int) for h in heads) and len(set(heads)) == 1:
            head: int | Tensor = heads[0]
        else:
            head = torch.cat(
                [
                    torch.full((len(p),), p.head, dtype=torch.long, device=p.y.device)
                    if isinstance(p.head, int)
                    else p.head
                    for p in parts
                ]
            )
        return LabelledData(
            torch.cat([p.x for p in parts]),
            torch.cat([p.y for p in parts]),
            head,
            max(p.n_outputs for p in parts),
        )


def load_torchvision(
    dataset: str, root: str | Path, download: bool, device: torch.device
) -> dict[str, tuple[Tensor, Tensor]]:
    """Load a torchvision data set's train and test splits into memory, on ``device``.

    Returns ``{"train": (x, y), "test": (x, y)}`` with ``x`` the uint8 pixels, contiguous, of
    shape ``(n, channels, height, width)``, and ``y`` long of shape ``(n,)``. The task
    builders index and transform the pixels as bytes and turn each task's own into floats in
    [0, 1] (:func:`pixels_to_float`): a quarter of the memory of a float copy of the whole
    data set beside the tasks' (MNIST: 55 MB against 220 MB).
    """
    if dataset not in DATASETS:
        raise ConfigError(
            f"Unknown dataset {dataset!r}. Supported torchvision data sets: {', '.join(DATASETS)}."
        )
    root = Path(root).expanduser().resolve()
    cls = dataset_class(dataset)
    check_files(dataset, root, thorough=False)
    splits = {}
    for split in ("train", "test"):
        try:
            data = cls(str(root), train=split == "train", download=False)
        except Exception as error:
            # torchvision says "not found or corrupted" alike, and a damaged file can fail
            # anywhere in its reading: name the damaged file first, if there is one.
            check_files(dataset, root, thorough=True)
            if not isinstance(error, RuntimeError):
                raise
            data = download_or_explain(cls, dataset, root, split == "train", download)
        splits[split] = _as_tensors(data, device)
        del data  # CIFAR: torchvision's channels-last pixels, freed before the next split
    return splits


def _as_tensors(data, device: torch.device) -> tuple[Tensor, Tensor]:
    """A torchvision data set's pixels, uint8 ``(n, channels, height, width)``, and labels."""
    x = torch.as_tensor(np.asarray(data.data))  # MNIST family: the same memory, no copy
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
    y = torch.as_tensor(np.asarray(data.targets), dtype=torch.long)
    return x.to(device).contiguous(), y.to(device)


def _carve(
    n: int, train_size: int | None, val_fraction: float, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Split ``range(n)`` into (train, validation) indices, each kept in data-set order.

    ``train_size`` caps the training indices (a random subset); ``val_fraction`` of the
    ``n`` examples are held out for validation first.
    """
    if train_size is None and val_fraction == 0:
        return torch.arange(n), torch.arange(0)
    order = torch.randperm(n, generator=generator)
    n_val = int(round(val_fraction * n))
    val, train = order[:n_val], order[n_val:]
    if train_size is not None:
        train = train[:train_size]
    return train.sort().values, val.sort().values


def pixels_to_float(x: Tensor) -> Tensor:
    """uint8 pixels as a new contiguous float32 tensor in [0, 1]; float inputs unchanged."""
    if x.is_floating_point():
        return x
    return x.to(torch.float32, memory_format=torch.contiguous_format).div_(255.0)


def _make_task(
    name: str,
    train: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor],
    n_classes: int,
    train_size: int | None,
    val_fraction: float,
    generator: torch.Generator,
) -> Task:
    """A task from its training and test examples (uint8 pixels or float inputs).

    The training examples are carved into train and validation first; pixels become floats
    after that, so only what the task keeps is ever converted.
    """
    (x, y), (x_test, y_test) = train, test
    train_idx, val_idx = _carve(len(y), train_size, val_fraction, generator)
    train_idx, val_idx = train_idx.to(x.device), val_idx.to(x.device)
    # All of it, in order: the images need no copy before their conversion.
    x_train = x if len(train_idx) == len(y) else x[train_idx]
    return Task(
        name=name,
        x_train=pixels_to_float(x_train).contiguous(),
        y_train=y[train_idx],
        x_val=pixels_to_float(x[val_idx]),
        y_val=y[val_idx],
        x_test=pixels_to_float(x_test).contiguous(),
        y_test=y_test,
        n_classes=n_classes,
    )


def _check_common(n_tasks: int | None, train_size: int | None, val_fraction: float) -> None:
    if n_tasks is not None and n_tasks < 1:
        raise ConfigError(f"task.n_tasks must be at least 1, got {n_tasks}.")
    if train_size is not None and train_size < 1:
        raise ConfigError(f"task.train_size must be positive or null (all), got {train_size}.")
    if not 0 <= val_fraction < 1:
        raise ConfigError(f"task.val_fraction must be in [0, 1), got {val_fraction}.")


def split_sequence(
    name: str,
    dataset: str,
    classes_per_task: int = 2,
    n_tasks: int | None = None,
    class_order: Sequence[int] | None = None,
    train_size: int | None = None,
    val_fraction: float = 0.0,
    default_scenario: str = "task",
    *,
    root: str | Path,
    download: bool,
    device: torch.device,
    seed: int,
) -> TaskSequence:
    """Split a data set's classes into tasks of ``classes_per_task`` classes each.

    Task ``t`` holds classes ``class_order[t * k : (t + 1) * k]`` (``k = classes_per_task``;
    default order 0, 1, 2, ...); the first of them gets within-task label 0, and so on.
    ``n_tasks`` defaults to as many tasks as the classes fill; ``train_size`` caps each
    task's training set (a random subset, drawn with ``seed``).
    """
    _check_common(n_tasks, train_size, val_fraction)
    if classes_per_task < 1:
        raise ConfigError(f"task.classes_per_task must be at least 1, got {classes_per_task}.")
    splits = load_torchvision(dataset, root, download, device)
    (x, y), (x_test, y_test) = splits["train"], splits["test"]
    n_total = int(y.max()) + 1
    order = list(class_order) if class_order is not None else list(range(n_total))
    if sorted(set(order)) != sorted(order) or not set(order) <= set(range(n_total)):
        raise ConfigError(
            f"task.class_order must list distinct classes of {dataset} (0..{n_total - 1})."
        )
    n_tasks = n_tasks if n_tasks is not None else len(order) // classes_per_task
    if n_tasks * classes_per_task > len(order) or n_tasks < 1:
        raise ConfigError(
            f"{dataset} has {len(order)} classes: not enough for {n_tasks} tasks of "
            f"{classes_per_task} classes. Lower task.n_tasks or task.classes_per_task."
        )
    generator = torch.Generator().manual_seed(seed)
    tasks = []
    for t in range(n_tasks):
        classes = torch.tensor(order[t * classes_per_task : (t + 1) * classes_per_task])
        relabel = torch.full((n_total,), -1, dtype=torch.long)
        relabel[classes] = torch.arange(len(classes))
        relabel = relabel.to(y.device)
        keep, keep_test = relabel[y] >= 0, relabel[y_test] >= 0
        tasks.append(
            _make_task(
                "/".join(str(c) for c in classes.tolist()),
                (x[keep], relabel[y[keep]]),
                (x_test[keep_test], relabel[y_test[keep_test]]),
                classes_per_task,
                train_size,
                val_fraction,
                generator,
            )
        )
    return TaskSequence(name, tasks, default_scenario)


def task_permutation(task_index: int, n_pixels: int) -> Tensor:
    """The fixed pixel permutation of permuted task ``task_index``.

    Derived from the task index alone (``np.random.seed(task_index)``, as the official VCL
    code does), so every run and every seed sees the same tasks.
    """
    return torch.as_tensor(np.random.RandomState(task_index).permutation(n_pixels))


def permuted_sequence(
    name: str,
    dataset: str = "MNIST",
    n_tasks: int = 10,
    first_unpermuted: bool = False,
    train_size: int | None = None,
    val_fraction: float = 0.0,
    default_scenario: str = "domain",
    *,
    root: str | Path,
    download: bool,
    device: torch.device,
    seed: int,
) -> TaskSequence:
    """Tasks that share all classes, each seeing the pixels in its own fixed permutation.

    With ``first_unpermuted`` the first task keeps the original images (as in the
    "improved VCL" protocol); otherwise every task is permuted, the first too.
    """
    _check_common(n_tasks, train_size, val_fraction)
    splits = load_torchvision(dataset, root, download, device)
    (x, y), (x_test, y_test) = splits["train"], splits["test"]
    n_classes = int(y.max()) + 1
    n_pixels = x.shape[2] * x.shape[3]
    generator = torch.Generator().manual_seed(seed)
    tasks = []
    for t in range(n_tasks):
        if first_unpermuted and t == 0:
            perm = torch.arange(n_pixels)
        else:
            perm = task_permutation(t, n_pixels)
        perm = perm.to(x.device)
        tasks.append(
            _make_task(
                f"permutation {t}" if not (first_unpermuted and t == 0) else "original",
                (_permute_pixels(x, perm), y),
                (_permute_pixels(x_test, perm), y_test),
                n_classes,
                train_size,
                val_fraction,
                generator,
            )
        )
    return TaskSequence(name, tasks, default_scenario)


def _permute_pixels(x: Tensor, perm: Tensor) -> Tensor:
    """Permute the ``height * width`` pixel positions of ``x`` (the same for every channel)."""
    return x.flatten(2)[:, :, perm].reshape(x.shape)


def rotated_sequence(
    name: str,
    dataset: str = "MNIST",
    angles: Sequence[float] = (0, 45, 90, 135, 180),
    n_tasks: int | None = None,
    train_size: int | None = None,
    val_fraction: float = 0.0,
    default_scenario: str = "domain",
    *,
    root: str | Path,
    download: bool,
    device: torch.device,
    seed: int,
) -> TaskSequence:
    """Tasks that share all classes, each seeing the images rotated by a fixed angle (degrees).

    ``n_tasks`` keeps the first ``n_tasks`` angles (default: all of them).
    """
    _check_common(n_tasks, train_size, val_fraction)
    angles = list(angles)
    n_tasks = len(angles) if n_tasks is None else n_tasks
    if not angles or n_tasks > len(angles):
        raise ConfigError(
            f"task.n_tasks={n_tasks} needs at least that many task.angles, got {angles}."
        )
    from torchvision.transforms.v2 import functional as tv_functional  # see data_files

    splits = load_torchvision(dataset, root, download, device)
    (x, y), (x_test, y_test) = splits["train"], splits["test"]
    n_classes = int(y.max()) + 1
    generator = torch.Generator().manual_seed(seed)
    tasks = []
    for angle in angles[:n_tasks]:
        tasks.append(
            _make_task(
                f"rotation {angle:g}",
                (tv_functional.rotate(x, float(angle)), y),
                (tv_functional.rotate(x_test, float(angle)), y_test),
                n_classes,
                train_size,
                val_fraction,
                generator,
            )
        )
    return TaskSequence(name, tasks, default_scenario)


def synthetic_sequence(
    name: str,
    n_tasks: int = 5,
    classes_per_task: int = 2,
    input_shape: Sequence[int] = (1, 4, 4),
    train_size: int | None = 500,
    test_size: int = 200,
    separation: float = 4.0,
    val_fraction: float = 0.0,
    default_scenario: str = "task",
    *,
    root: str | Path,
    download: bool,
    device: torch.device,
    seed: int,
) -> TaskSequence:
    """Tasks of Gaussian clusters drawn from ``seed``: no files, built in milliseconds.

    Each task has a centre drawn from ``N(0, 3^2 I)`` over the ``d = prod(input_shape)``
    inputs, and each of its ``classes_per_task`` classes a mean at distance
    ``separation / sqrt(2)`` from that centre along its own direction, the directions
    orthonormal: any two class means of a task lie ``separation`` apart. An example is its
    class mean plus ``N(0, I)`` noise, so with two classes the best possible within-task
    accuracy is ``Phi(separation / 2)`` (97.7 % for 4). Tasks differ in their centres and
    directions, so a network trained on one task after another forgets: little with a head
    per task, much with a shared head (plain fine-tuning on the defaults keeps about 95 %
    of task 1 in the task scenario, about 60 % in the domain scenario and none in the class
    scenario).

    ``train_size`` is each task's number of training examples (a validation split of
    ``val_fraction`` is drawn on top of it), ``test_size`` its number of test examples;
    labels are balanced. ``root`` and ``download`` are accepted, as by every task builder,
    and ignored.
    """
    _check_common(n_tasks, train_size, val_fraction)
    if train_size is None:
        raise ConfigError("task.train_size must be a positive number for synthetic data.")
    if test_size < 1:
        raise ConfigError(f"task.test_size must be positive, got {test_size}.")
    shape = tuple(int(n) for n in input_shape)
    n_inputs = int(np.prod(shape))
    if len(shape) != 3 or min(shape) < 1:
        raise ConfigError(
            f"task.input_shape must be [channels, height, width], got {list(input_shape)}."
        )
    if not 2 <= classes_per_task <= n_inputs:
        raise ConfigError(
            f"task.classes_per_task must be between 2 and the {n_inputs} inputs of "
            f"{list(shape)}, got {classes_per_task}."
        )
    if separation <= 0:
        raise ConfigError(f"task.separation must be positive, got {separation}.")
    generator = torch.Generator().manual_seed(seed)
    # Enough examples that carving off val_fraction leaves train_size to train on.
    n_pool = math.ceil(train_size / (1 - val_fraction))

    def draw(means: Tensor, n: int) -> tuple[Tensor, Tensor]:
        y = torch.randperm(n, generator=generator) % classes_per_task
        x = means[y] + torch.randn(n, n_inputs, generator=generator)
        return x.reshape(n, *shape).to(device), y.to(device)

    tasks = []
    for t in range(n_tasks):
        # Centres spread wider than the noise: each task's inputs lie in their own region,
        # whose large activations pull the shared layers away from earlier tasks.
        centre = 3.0 * torch.randn(n_inputs, generator=generator)
        directions = torch.linalg.qr(
            torch.randn(n_inputs, classes_per_task, generator=generator)
        ).Q.T  # (classes_per_task, n_inputs), orthonormal rows
        means = centre + separation / math.sqrt(2) * directions
        train, test = draw(means, n_pool), draw(means, test_size)
        tasks.append(
            _make_task(
                f"clusters {t}",
                train,
                test,
                classes_per_task,
                train_size,
                val_fraction,
                generator,
            )
        )
    return TaskSequence(name, tasks, default_scenario)
