"""Task sequences as tensors in memory, built once from a torchvision data set or a seed.

Every task keeps its inputs as float tensors of shape ``(n, channels, height, width)``
(images with pixels in [0, 1]), on the training device, and its labels as within-task
labels ``0 .. n_classes - 1``. The scenario (``cl_bayes.scenario``) maps those labels to
the outputs a model is trained on. torchvision appears only in :func:`load_torchvision`;
:func:`synthetic_sequence` needs no files at all.
"""

from __future__ import annotations

import math
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torchvision
from torch import Tensor
from torchvision.transforms.v2 import functional as tv_functional

from cl_bayes.errors import ConfigError, DataNotFoundError

DATASETS = ("MNIST", "FashionMNIST", "KMNIST", "CIFAR10", "CIFAR100")
DATA_ENV_VAR = "CL_BAYES_DATA"


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


def expected_files(dataset: str, root: Path) -> list[Path]:
    """Files torchvision looks for when loading ``dataset`` from ``root``."""
    cls = getattr(torchvision.datasets, dataset)
    if hasattr(cls, "resources"):  # MNIST family: <root>/<Class>/raw/<file without .gz>
        raw = root / cls.__name__ / "raw"
        return [raw / os.path.splitext(os.path.basename(url))[0] for url, _ in cls.resources]
    folder = root / cls.base_folder  # CIFAR family
    names = [name for name, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    return [folder / name for name in names]


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
    cls = getattr(torchvision.datasets, dataset)
    _check_files(dataset, root, thorough=False)
    splits = {}
    for split in ("train", "test"):
        try:
            data = cls(str(root), train=split == "train", download=False)
        except Exception as error:
            # torchvision says "not found or corrupted" alike, and a damaged file can fail
            # anywhere in its reading: name the damaged file first, if there is one.
            _check_files(dataset, root, thorough=True)
            if not isinstance(error, RuntimeError):
                raise
            data = _download(cls, dataset, root, split == "train", download)
        splits[split] = _as_tensors(data, device)
        del data  # CIFAR: torchvision's channels-last pixels, freed before the next split
    return splits


def _as_tensors(data, device: torch.device) -> tuple[Tensor, Tensor]:
    """A torchvision data set's pixels, uint8 ``(n, channels, height, width)``, and labels."""
    x = torch.as_tensor(np.asarray(data.data))  # MNIST family: the same memory, no copy
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
    y = torch.as_tensor(np.asarray(data.targets), dtype=torch.long)
    return x.to(device).contiguous(), y.to(device)


# The idx files of the MNIST family (MNIST, FashionMNIST, KMNIST): a big-endian magic number
# 0x000008<n> (unsigned bytes, n dimensions), n big-endian 32-bit sizes, then the bytes.
IDX_MAGIC = {"images": 0x00000803, "labels": 0x00000801}
IDX_EXAMPLES = {"train": 60000, "t10k": 10000}
IDX_IMAGE_SIZE = (28, 28)
_REFETCH = (
    "Delete it so that it is downloaded again (data.download=true), or restore it from a good copy."
)


def _check_files(dataset: str, root: Path, thorough: bool) -> None:
    """Raise a one-line :class:`DataNotFoundError` for an expected file that is there but unusable.

    Every file must be readable, and an idx file (MNIST family) must have the header and the
    size of its kind; ``thorough`` also checks each CIFAR file against the release's md5
    and that it unpickles (read in full: only once torchvision has refused the files).
    """
    cls = getattr(torchvision.datasets, dataset)
    for path in expected_files(dataset, root):
        if not path.exists():
            continue
        try:
            with open(path, "rb") as handle:
                header = handle.read(16)
        except PermissionError:
            raise DataNotFoundError(
                f"{dataset} file {path} cannot be read: permission denied. Make it readable "
                f"(chmod a+r {path}) or restore it from a good copy."
            ) from None
        except OSError as error:
            raise DataNotFoundError(
                f"{dataset} file {path} cannot be read ({error.strerror or error}). {_REFETCH}"
            ) from None
        if hasattr(cls, "resources"):
            problem = _idx_problem(path, header, dataset)
        elif thorough:
            problem = _cifar_problem(cls, path, dataset)
        else:
            problem = None
        if problem:
            raise DataNotFoundError(f"{dataset} file {path} {problem}. {_REFETCH}")


def _idx_problem(path: Path, header: bytes, dataset: str) -> str | None:
    """What is wrong with the idx file at ``path`` (whose first bytes are ``header``), or None."""
    kind = "images" if "-images-" in path.name else "labels"
    split = path.name.split("-")[0]
    size = path.stat().st_size
    n_dims = IDX_MAGIC[kind] & 0xFF
    header_size = 4 * (n_dims + 1)
    if header[:2] == b"\x1f\x8b":
        return (
            f"is gzip-compressed, not an idx file: decompress it "
            f"(mv {path} {path}.gz && gunzip {path}.gz)"
        )
    if size < 4:
        return f"is {size} bytes long: too short for an idx file (truncated)"
    magic = int.from_bytes(header[:4], "big")
    other = "labels" if kind == "images" else "images"
    if magic == IDX_MAGIC[other]:
        return f"is an idx file of {other}, not of {kind} (files swapped or misnamed)"
    if magic != IDX_MAGIC[kind]:
        return (
            f"is not an idx file of {kind}: its magic number is 0x{magic:08x} where "
            f"0x{IDX_MAGIC[kind]:08x} is expected"
        )
    if size < header_size:
        return f"is {size} bytes long: shorter than its {header_size}-byte header (truncated)"
    dims = [int.from_bytes(header[4 * i : 4 * i + 4], "big") for i in range(1, n_dims + 1)]
    expected = header_size + math.prod(dims)
    if size != expected:
        shape = " x ".join(str(d) for d in dims)
        what = "truncated" if size < expected else "extra bytes at the end"
        return (
            f"is {size:,} bytes long where its header ({shape} {kind}) needs {expected:,} ({what})"
        )
    name = "training" if split == "train" else "test"
    if dims[0] != IDX_EXAMPLES[split]:
        return (
            f"holds {dims[0]} {kind} where the {name} set of {dataset} has "
            f"{IDX_EXAMPLES[split]} (a cut-down or different file)"
        )
    if kind == "images" and tuple(dims[1:]) != IDX_IMAGE_SIZE:
        height, width = IDX_IMAGE_SIZE
        return f"holds {dims[1]} x {dims[2]} images where {dataset} has {height} x {width}"
    return None


def _cifar_problem(cls, path: Path, dataset: str) -> str | None:
    """What is wrong with the CIFAR file at ``path``, or None."""
    md5 = dict(cls.train_list + cls.test_list + [(cls.meta["filename"], cls.meta["md5"])])
    # The module's own function, as torchvision calls it (the tests accept any file there).
    if not torchvision.datasets.cifar.check_integrity(str(path), md5[path.name]):
        return (
            f"does not match the md5 checksum of the {dataset} release "
            f"({path.stat().st_size:,} bytes: damaged, truncated or another version)"
        )
    try:
        with open(path, "rb") as handle:
            entry = pickle.load(handle, encoding="latin1")
    except Exception as error:  # noqa: BLE001 - any unpickling failure means a damaged file
        return f"is not a pickled {dataset} file ({type(error).__name__}: {error})"
    if not isinstance(entry, dict):
        return f"is not a pickled {dataset} file (it holds a {type(entry).__name__}, not a dict)"
    return None


def _download(cls, dataset: str, root: Path, train: bool, download: bool):
    files = "\n  ".join(
        f"{p}" if p.exists() else f"{p} (missing)" for p in expected_files(dataset, root)
    )
    fix = (
        f"Fix: point the data root at a folder holding these files, with `data.root=/path` "
        f"or the environment variable {DATA_ENV_VAR}=/path, or run where the download can "
        f"reach the internet with data.download=true."
    )
    if not download:
        raise DataNotFoundError(
            f"{dataset} not found under {root} and downloading is off (data.download=false).\n"
            f"Expected files:\n  {files}\n{fix}"
        )
    try:
        return cls(str(root), train=train, download=True)
    except Exception as error:  # noqa: BLE001 - any download failure gets the same clear message
        raise DataNotFoundError(
            f"{dataset} not found under {root} and the download failed "
            f"({type(error).__name__}: {error}).\nExpected files:\n  {files}\n{fix}"
        ) from None


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
